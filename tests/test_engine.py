"""Training engine: schedule, caching, exact resume, NaN stop, train_step hook, seeding, progress output,
feature extraction. Runs use the tiny method and data set of tests/tiny_method.py (~1 s each)."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import numpy as np
import pytest
import torch
from tiny_method import (
    ContractMethod,
    TinyMethod,
    TwoStepMethod,
    kill_mid_write,
    state_dicts_equal,
    tiny_config,
    write_tiny_dataset,
)

from reidlib import runs
from reidlib.config import ConfigError, TrainConfig, replace
from reidlib.engine import LRFactor, NonFiniteLossError, build_optimizer, evaluate_model, extract, train
from reidlib.engine.loop import resolved_model_config
from reidlib.engine.progress import resolve_mode
from reidlib.engine.step import StepContext, amp_available, amp_dtype
from reidlib.methods.base import Batch, DataInfo
from reidlib.seed import get_rng_state, preserved_rng, seed_everything, set_rng_state

METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~10x faster than two on a busy 2-core machine. Every run of
    this module uses the same count, as bit-exact comparisons require."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="module")
def baseline(dataset, tmp_path_factory):
    """An uninterrupted 3-epoch run (mid-training evaluation after every epoch)."""
    return train(tiny_config(eval_every=1), tmp_path_factory.mktemp("runs"), dataset=dataset, progress="off")


def weights(run) -> dict:
    return torch.load(run.path / "model.pt", weights_only=True)["state_dict"]


# ----------------------------------------------------------------------------------- schedule
def test_linear_warmup_then_multistep():
    cfg = TrainConfig(epochs=120, warmup_epochs=10, warmup_factor=0.01, milestones=[40, 70])
    f = LRFactor.from_config(cfg)
    assert f(0) == pytest.approx(0.01) and f(5) == pytest.approx(0.505) and f(10) == 1.0  # BoT's warm-up
    assert f(39) == 1.0 and f(40) == pytest.approx(0.1) and f(70) == pytest.approx(0.01)


def test_cosine_decays_to_min_lr_after_warmup_and_constant_warmup():
    cfg = TrainConfig(lr=1e-2, epochs=12, warmup_epochs=2, warmup_method="constant", warmup_factor=0.1,
                      scheduler="cosine", min_lr=1e-4)
    f = LRFactor.from_config(cfg)
    assert f(0) == f(1) == pytest.approx(0.1)
    assert f(2) == 1.0 and f(7) == pytest.approx(0.01 + 0.99 * 0.5) and f(12) == pytest.approx(0.01)


def test_optimizers_follow_method_param_groups():
    method = TinyMethod(TinyMethod.config_class(), DataInfo(num_classes=3))
    method.param_groups = lambda lr: [{"params": list(method.features.parameters()), "lr": lr},
                                      {"params": list(method.classifier.parameters()), "lr": 10 * lr}]
    sgd = build_optimizer(method, TrainConfig(optimizer="sgd", lr=0.1, nesterov=True, weight_decay=0.0))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert [g["lr"] for g in sgd.param_groups] == [0.1, pytest.approx(1.0)]
    adamw = build_optimizer(method, TrainConfig(optimizer="adamw", betas=(0.8, 0.9)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.9)


# ------------------------------------------------------------------------------- run contents
def test_run_folder_holds_everything(baseline):
    files = {p.name for p in baseline.path.iterdir()}
    assert {"config.yaml", "manifest.json", "last.pt", "history.jsonl", "model.pt", "metrics.json"} <= files
    assert not [name for name in files if name.endswith(".tmp")]
    m = baseline.metrics
    assert m["finished"] is True and m["epochs"] == 3
    assert all(0.0 <= m[k] <= 1.0 for k in METRICS)
    assert m["train_images_per_s"] > 0 and m["inference_images_per_s"] > 0 and m["wall_time_s"] > 0
    kinds = [r["kind"] for r in baseline.history]
    assert kinds.count("epoch") == 3 and kinds.count("eval") == 3 and "iter" in kinds  # 2 periodic + final
    epoch1 = next(r for r in baseline.history if r["kind"] == "epoch")
    assert set(epoch1["terms"]) == {"ce", "l2"}
    assert epoch1["loss"] == pytest.approx(sum(epoch1["terms"].values()))
    assert runs.read_json(baseline.path / "manifest.json")["seed"] == 3
    assert baseline.path.parent.name == "tiny" and baseline.path.name == baseline.key
    assert repr(baseline).startswith(f"Run(method='tiny', key='{baseline.key}', status='finished', mAP=")


def test_lr_follows_the_schedule_in_history(baseline):
    lrs = [r["lr"] for r in baseline.history if r["kind"] == "epoch"]
    assert lrs == pytest.approx([0.05 * 0.01, 0.05, 0.05 * 0.1])  # warm-up: epoch 0; milestone: epoch 2


def test_load_model_returns_trained_weights(baseline, dataset):
    model = baseline.load_model()
    assert isinstance(model, TinyMethod) and not model.training
    assert state_dicts_equal(model.state_dict(), weights(baseline))
    again = evaluate_model(model, dataset, baseline.config.data, flip=False)
    assert {k: again[k] for k in METRICS} == {k: baseline.metrics[k] for k in METRICS}


# ------------------------------------------------------------------------------- cache, resume
def test_finished_run_is_reused_and_retrain_trains_again(baseline, dataset):
    calls, mtime = TinyMethod.forward_calls, (baseline.path / "model.pt").stat().st_mtime_ns
    trained = weights(baseline)
    runs_dir = baseline.path.parents[2]
    again = train(baseline.config, runs_dir, dataset=dataset, progress="off")
    assert again.reused and again.key == baseline.key and again.metrics == baseline.metrics
    assert TinyMethod.forward_calls == calls and (baseline.path / "model.pt").stat().st_mtime_ns == mtime

    fresh = train(baseline.config, runs_dir, dataset=dataset, progress="off", retrain=True)
    assert not fresh.reused and TinyMethod.forward_calls > calls
    assert (baseline.path / "model.pt").stat().st_mtime_ns != mtime
    assert len(runs.read_json(baseline.path / "manifest.json")["resumes"]) == 0  # started afresh
    assert state_dicts_equal(weights(fresh), trained) and fresh.metrics["mAP"] == baseline.metrics["mAP"]


def test_interrupted_run_resumes_to_the_same_numbers(baseline, dataset, tmp_path):
    def stop_after_first_epoch(epoch, record):
        if epoch == 1:
            raise Interrupt

    cfg = tiny_config(eval_every=1)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path, dataset=dataset, progress="off", callbacks=[stop_after_first_epoch])
    path = runs.run_dir(tmp_path, "tiny", baseline.key)
    assert runs.run_status(path) == "interrupted"
    assert [r["epoch"] for r in runs.read_jsonl(path / "history.jsonl") if r["kind"] == "epoch"] == [1]

    resumed = train(cfg, tmp_path, dataset=dataset, progress="off")
    assert resumed.key == baseline.key and not resumed.reused
    assert state_dicts_equal(weights(resumed), weights(baseline))  # bit-exact
    assert {k: resumed.metrics[k] for k in METRICS} == {k: baseline.metrics[k] for k in METRICS}
    timings = ("images_per_s", "time_s", "inference_images_per_s")

    def untimed(history):
        return [{k: v for k, v in r.items() if k not in timings} for r in history]

    assert untimed(resumed.history) == untimed(baseline.history)
    assert len(runs.read_json(path / "manifest.json")["resumes"]) == 1


def interrupted_after_first_epoch(cfg, tmp_path, dataset):
    """Train `cfg` until its first epoch's checkpoint is written, then stop: the interrupted run's folder."""
    def stop(epoch, record):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path, dataset=dataset, progress="off", callbacks=[stop])
    (path,) = (tmp_path / "cache" / "tiny").iterdir()
    return path


def test_a_resumed_run_removes_the_temporary_file_a_kill_mid_checkpoint_left(dataset, tmp_path):
    cfg = tiny_config(epochs=2)
    path = interrupted_after_first_epoch(cfg, tmp_path, dataset)
    kill_mid_write(path / "last.pt")
    assert list(path.glob(".last.pt.*.tmp"))
    assert train(cfg, tmp_path, dataset=dataset, progress="off").finished
    assert not list(path.glob("*.tmp")) and runs.run_status(path) == "finished"


def test_seed_determinism_and_evaluation_leaves_training_untouched(baseline, dataset, tmp_path):
    """Same seed: same weights, although this run never evaluates mid-training; another seed differs."""
    same = train(tiny_config(eval_every=0), tmp_path, dataset=dataset, progress="off")
    assert same.key != baseline.key  # eval_every is part of the key (it changes the history)
    assert state_dicts_equal(weights(same), weights(baseline))
    other = tiny_config(eval_every=0)
    other.seed = 4
    assert not state_dicts_equal(weights(train(other, tmp_path, dataset=dataset, progress="off")),
                                 weights(baseline))


def test_a_fresh_run_trains_exactly_as_a_plain_loop_from_the_same_seed(dataset, tmp_path):
    """Nothing the engine does before or around its steps draws random numbers (the start pass and the
    pre-flight keep every stream): its weights equal those of seed -> build -> forward, loss, backward,
    step, bit for bit. benchmarks/bench_engine.py relies on this to show that it times the same work."""
    from reidlib import methods
    from reidlib.data.loader import build_train_loader
    from reidlib.engine import build_scheduler
    from reidlib.engine.loop import memory_format

    cfg = tiny_config(epochs=2)
    run = train(cfg, tmp_path, dataset=dataset, progress="off")
    seed_everything(cfg.seed)
    model = memory_format(methods.build(cfg.method, cfg.model, DataInfo.from_dataset(dataset, cfg.data)),
                          cfg.train)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    loader = build_train_loader(dataset, cfg.data, seed=cfg.seed)
    model.train()
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        for item in loader:
            batch = Batch.from_loader(item, cfg.data)
            loss = sum(model.loss(model(batch), batch).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    assert state_dicts_equal(model.state_dict(), weights(run))


# ------------------------------------------------------------------------------- step variants
def test_non_finite_loss_stops_naming_epoch_step_and_term(dataset, tmp_path):
    cfg = tiny_config(model={"poison_step": 4, "poison_term": "l2"})  # epoch 1 has 3 steps
    with pytest.raises(NonFiniteLossError, match=r"loss term 'l2' is nan at epoch 2/3, step 1/\d+\. Lower"):
        train(cfg, tmp_path, dataset=dataset, progress="off")
    path = next((tmp_path / "cache" / "tiny").iterdir())
    assert runs.run_status(path) == "interrupted"  # epoch 1's checkpoint is kept, nothing looks finished


@pytest.mark.parametrize(("method", "model", "error"), [
    ("tiny_refusing", {}, ConfigError),                      # rejected when the method is built
    ("tiny", {"poison_step": 1}, NonFiniteLossError),        # fails in epoch 1, before any checkpoint
])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(dataset, tmp_path, method, model,
                                                                        error):
    with pytest.raises(error):
        train(tiny_config(method, epochs=1, model=model), tmp_path, dataset=dataset, progress="off")
    assert list(tmp_path.iterdir()) == []  # no half-started run folder, no folder holding only a .lock


def test_a_resume_that_fails_keeps_the_interrupted_run(dataset, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2)
    path = interrupted_after_first_epoch(cfg, tmp_path, dataset)
    with monkeypatch.context() as patch:
        patch.setattr(TinyMethod, "distance", lambda self, q, g: 1 / 0)  # the pre-flight fails on resume
        with pytest.raises(RuntimeError, match="pre-flight"):
            train(cfg, tmp_path, dataset=dataset, progress="off")
    assert runs.run_status(path) == "interrupted"
    assert train(cfg, tmp_path, dataset=dataset, progress="off").finished


def test_method_train_step_replaces_the_default_step(dataset, tmp_path):
    before = TwoStepMethod.step_calls
    run = train(tiny_config("tiny_two_step", epochs=2, max_iters_per_epoch=2, amp=True, grad_clip=1.0),
                tmp_path, dataset=dataset, progress="off")
    assert TwoStepMethod.step_calls - before == 4  # 2 epochs x 2 capped iterations
    assert run.metrics["iterations"] == 4 and set(run.history[0]["terms"]) == {"ce", "l2"}


def test_a_method_using_every_hook_trains_through_the_engine(tmp_path):
    """Parsing labels in the loss, labels in the forward pass, a pass over the training data before the
    first epoch and a two-step update, on SynthOcc ci with its parsing labels."""
    from reidlib.config import DataConfig, RunConfig

    data = DataConfig(synth_size="ci", height=64, width=32, batch_p=3, batch_k=2, test_batch_size=32,
                      masks="parsing", mask_grouping="five")
    cfg = RunConfig(method="tiny_contract", data=data, seed=1,
                    train=TrainConfig(optimizer="sgd", lr=0.05, epochs=1, warmup_epochs=0, milestones=[],
                                      max_iters_per_epoch=2))
    ContractMethod.seen.clear()
    run = train(cfg, tmp_path, progress="off")
    seen = ContractMethod.seen
    from reidlib.data.loader import load_from_config

    assert seen["start_images"] == len(load_from_config(data).train)    # the whole split, in order,
    assert seen["start_grad"] is False                                  # without autograd
    assert seen["masks_shape"] == (6, 6, 64, 32)                        # five parts + background
    assert set(run.history[0]["terms"]) == {"ce", "l2", "pixel"} and run.metrics["iterations"] == 2
    model = run.load_model()
    assert bool(model.bank_filled.all()) and float(model.bank.abs().sum()) > 0  # the start pass's buffer
    assert model.info.part_names == ("head", "arms", "torso", "legs", "feet")  # saved with the model
    # a method that needs parsing labels is refused up front when the data config has none
    with pytest.raises(ConfigError, match="data.masks"):
        train(replace(cfg, data={"masks": None}), tmp_path / "other", progress="off")


def test_a_stage_initialises_the_next_run_by_run_key(dataset, tmp_path):
    first = train(tiny_config(epochs=1), tmp_path, dataset=dataset, progress="off")
    cfg = replace(tiny_config(epochs=1), init_from=f"tiny/{first.key}", seed=5)
    second = train(cfg, tmp_path, dataset=dataset, progress="off")
    assert second.key != train(replace(cfg, init_from=None), tmp_path / "x", dataset=dataset,
                               progress="off").key
    with pytest.raises(ConfigError, match="Workbook.train"):
        train(replace(cfg, init_from="qpm_ide"), tmp_path, dataset=dataset, progress="off")
    with pytest.raises(FileNotFoundError, match="train that stage first"):
        train(replace(cfg, init_from="tiny/000000000000"), tmp_path, dataset=dataset, progress="off")


def _moved(records, **change):
    return [dataclasses.replace(r, **{k: f(r) for k, f in change.items()}) for r in records]


@pytest.mark.parametrize(("change", "message"), [
    (lambda ds: {"train": []}, "has no training images"),
    (lambda ds: {"query": []}, "the query split is empty"),
    (lambda ds: {"query": [], "gallery": []}, "the query and gallery splits are empty"),
    (lambda ds: {"query": _moved(ds.query, pid=lambda r: r.pid + 100)}, "no query has a true match"),
    (lambda ds: {"query": _moved(ds.query, camid=lambda r: 1)}, "no query has a true match"),  # same camera
])
def test_splits_the_evaluation_cannot_use_are_refused_before_training(dataset, tmp_path, change, message):
    """Problems that evaluation would hit after the last epoch are found before the first step."""
    bad = dataclasses.replace(dataset, **change(dataset))
    before = TinyMethod.forward_calls
    with pytest.raises(ValueError, match=message):
        train(tiny_config(epochs=1), tmp_path, dataset=bad, progress="off")
    assert TinyMethod.forward_calls == before and not (tmp_path / "cache").exists()


def test_a_test_path_that_fails_is_found_before_training(dataset, tmp_path):
    """A descriptor that cannot embed a gallery camera the training split lacks (the failure TransReID's
    SIE lookup has) stops the run before its first step, naming the cameras, instead of after the last."""
    unseen = dataclasses.replace(dataset, gallery=_moved(dataset.gallery, camid=lambda r: 1 + r.pid % 2))
    assert {r.camid for r in unseen.gallery} - {r.camid for r in unseen.train} == {2}
    before = TinyMethod.forward_calls
    with pytest.raises(RuntimeError, match=r"pre-flight, before training: .* gallery cameras \[1, 2\]"):
        train(tiny_config("tiny_camera_table", epochs=1), tmp_path, dataset=unseen, progress="off")
    assert TinyMethod.forward_calls == before  # not a single training step
    run = train(tiny_config("tiny_camera_table", epochs=1), tmp_path, dataset=dataset, progress="off")
    assert run.finished  # every test camera seen in training: the same method passes


def test_the_engine_reads_no_signatures():
    from pathlib import Path

    import reidlib.engine

    for path in Path(reidlib.engine.__file__).parent.glob("*.py"):
        assert "signature" not in path.read_text(), path


def test_amp_is_bfloat16_autocast_on_cpu_and_float16_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (amp_dtype(cpu), amp_dtype(cuda)) == (torch.bfloat16, torch.float16)
    ctx = StepContext(method=torch.nn.Identity(), forward=torch.nn.Identity(), device=cpu,
                      amp=True, grad_clip=None, epoch=1, epochs=1, step=1, steps=1)
    with ctx.autocast():
        out = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert amp_available(cuda) and not amp_available(torch.device("meta"))


# ------------------------------------------------------------------------------------ seeding
def test_seed_everything_and_rng_state_round_trip():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(11)
    first = draws()
    seed_everything(11)
    state = get_rng_state()
    assert draws() == first
    set_rng_state(state)
    with preserved_rng():
        draws()
    assert draws() == first


# ----------------------------------------------------------------------------------- progress
def test_line_progress_prints_one_line_per_epoch(dataset, tmp_path, capsys):
    train(tiny_config(epochs=2, max_iters_per_epoch=1), tmp_path, dataset=dataset, progress="lines")
    lines = capsys.readouterr().out.strip().splitlines()
    number = r"[-+.\deE]+"
    for epoch, line in zip((1, 2), lines[:2], strict=True):
        pattern = rf"epoch {epoch}/2 loss {number} \(ce {number}, l2 {number}\) lr {number} \d+ img/s"
        assert re.fullmatch(pattern, line), line
    assert re.fullmatch(r"eval after epoch 2: mAP [\d.]+%, rank1 [\d.]+%, mINP [\d.]+%", lines[2])
    assert len(lines) == 3


def test_progress_mode_resolution(monkeypatch):
    for name in ("REIDLIB_PROGRESS", "REIDLIB_BATCH", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert resolve_mode("auto") == "lines"  # no terminal, no notebook
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert resolve_mode("auto") == "bars"
    for name in ("CI", "REIDLIB_BATCH"):  # batch jobs print lines even on a terminal
        monkeypatch.setenv(name, "1")
        assert resolve_mode("auto") == "lines"
        monkeypatch.delenv(name)
    assert resolve_mode(False) == "off" and resolve_mode("bars") == "bars"
    monkeypatch.setenv("REIDLIB_PROGRESS", "off")
    assert resolve_mode("auto") == "off"
    with pytest.raises(ValueError, match="progress="):
        resolve_mode("loud")


# --------------------------------------------------------------------------------- extraction
def test_flip_extraction_averages_original_and_mirrored(baseline, dataset):
    from reidlib.data.loader import build_test_loader

    model = baseline.load_model()
    loader = build_test_loader(dataset.query, baseline.config.data)
    plain, pids, camids = extract(model, loader)
    flipped, _, _ = extract(model, loader, flip=True)
    images = torch.cat([b["image"] for b in loader])
    batch = Batch(images=images, camids=torch.zeros(len(images), dtype=torch.long))
    expected = (model.embed(batch).global_feat + model.embed(batch.flip()).global_feat) / 2
    assert torch.allclose(flipped.global_feat, expected, atol=1e-6)
    assert torch.allclose(plain.global_feat, model.embed(batch).global_feat, atol=1e-6)
    assert pids.tolist() == [r.pid for r in dataset.query] and set(camids.tolist()) == {0}
    assert not math.isclose(float(plain.global_feat.sum()), float(flipped.global_feat.sum()))


# ------------------------------------------------------------------------------ default data path
def test_synthocc_is_generated_and_identified_by_its_parameters(tmp_path):
    """SynthOcc's ci set from the shared cache (generated once per machine, as the notebooks do)."""
    from reidlib.data.loader import load_from_config

    cfg = tiny_config(epochs=1, max_iters_per_epoch=2)
    cfg = replace(cfg, data={"dataset": "synthocc", "root": None, "synth_size": "ci"})
    run = train(cfg, tmp_path / "runs", progress="off")  # no dataset given: load_from_config(cfg.data)
    assert run.finished and run.metrics["iterations"] == 2
    identity = runs.data_identity(load_from_config(cfg.data))
    assert identity["synthocc"]["size"] == "ci" and identity["synthocc"]["protocol"] == cfg.data.protocol
    assert run.key == runs.run_key(cfg, identity, resolved_model_config(cfg))


def test_data_info_has_a_camera_row_for_every_training_camera_id(tmp_path):
    """A training split without camera 1 still has cameras 0 and 2: camera 2 needs its own SIE row."""
    from reidlib.config import DataConfig
    from reidlib.data.records import Record, ReidDataset

    train = [Record(str(tmp_path / f"{i}.png"), pid=i % 2, camid=cam) for i, cam in enumerate((0, 2, 0, 2))]
    ds = ReidDataset("gap", str(tmp_path), train, [], [])
    info = DataInfo.from_dataset(ds, DataConfig(height=64, width=32))
    assert (info.num_classes, info.num_cameras, info.image_size) == (2, 3, (64, 32))
