"""`train(cfg)`: one cached, resumable, optionally distributed training run, and the `Run` it returns.

Lifecycle of `runs_dir/cache/<method>/<key>/` (layout in reidlib.runs):
  finished (metrics.json with "finished": true)  -> reused as is, no training (unless retrain=True)
  interrupted (last.pt, no metrics)               -> resumed after the last finished epoch
  otherwise                                       -> trained from scratch
A run that fails before its first checkpoint (its method cannot be built, the pre-flight fails, epoch 1
stops) removes its folder again; one holding a checkpoint or results is always kept.
A checkpoint is written after every epoch, holding the model, optimiser, scheduler, grad scaler, every
rank's RNG states, the loader's generator state, the history and the elapsed times; the sampler order
depends on (seed, epoch) only. A resumed run therefore ends with the same weights and metrics as an
uninterrupted one (bit for bit on CPU with the same thread count). Mid-training evaluations run with
every random stream preserved, so `eval_every` cannot change the trajectory either.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidlib import methods, runs
from reidlib.config import ConfigError, RunConfig, from_dict, to_dict
from reidlib.engine import distributed
from reidlib.engine.distributed import DistContext
from reidlib.engine.inference import evaluate_model, extract
from reidlib.engine.optim import build_optimizer, build_scheduler
from reidlib.engine.progress import Progress, resolve_mode
from reidlib.engine.step import StepContext, amp_available, amp_dtype, loss_values
from reidlib.methods.base import Batch, DataInfo, ReIDMethod
from reidlib.seed import get_rng_state, preserved_rng, seed_everything, set_rng_state

Callback = Callable[[int, dict], None]  # (1-based epoch, that epoch's history record)

CONFIG_FILE, MANIFEST_FILE, CHECKPOINT_FILE = "config.yaml", "manifest.json", "last.pt"
HISTORY_FILE, MODEL_FILE, METRICS_FILE = "history.jsonl", "model.pt", "metrics.json"
# Cleared by retrain=True; metrics first, so an interrupted clean-up never leaves a "finished" run.
_RESULT_FILES = (METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE, HISTORY_FILE, MANIFEST_FILE)
# What a run writes before its first checkpoint: a folder holding nothing else has no run to resume.
_START_FILES = (CONFIG_FILE, MANIFEST_FILE, HISTORY_FILE)


# ------------------------------------------------------------------------------------------ Run
@dataclass
class Run:
    """A run folder and what it holds. `reused` is True when `train` found it finished."""

    path: Path
    key: str
    config: RunConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    reused: bool = False

    def __repr__(self) -> str:  # short: the history can hold thousands of records
        shown = ", ".join(f"{k}={self.metrics[k]:.4f}" for k in ("mAP", "rank1") if k in self.metrics)
        return (f"Run(method={self.config.method!r}, key={self.key!r}, status={self.status!r}"
                f"{', ' + shown if shown else ''}, reused={self.reused}, path='{self.path}')")

    @property
    def status(self) -> str:
        return runs.run_status(self.path)

    @property
    def finished(self) -> bool:
        return bool(self.metrics.get("finished"))

    @classmethod
    def load(cls, path: str | Path, reused: bool = True) -> Run:
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no {CONFIG_FILE}); runs live in "
                                    "<runs_dir>/cache/<method>/<key>/")
        fix = runs.rerun_fix(path)
        return cls(path=path, key=path.name, config=from_dict(RunConfig, runs.read_run_config(path)),
                   metrics=runs.read_json(path / METRICS_FILE, fix) or {},
                   history=runs.read_jsonl(path / HISTORY_FILE, fix), reused=reused)

    def history_frame(self, kind: str | None = None):
        """The history as a pandas DataFrame (loss terms flattened), optionally one kind only:
        "iter" (log windows), "epoch" or "eval"."""
        import pandas as pd

        rows = [{**{k: v for k, v in r.items() if k != "terms"}, **r.get("terms", {})}
                for r in self.history if kind is None or r.get("kind") == kind]
        return pd.DataFrame(rows)

    def load_model(self, device: str | torch.device = "cpu") -> ReIDMethod:
        """The trained method in eval mode on `device`: built with reidlib.methods.build from the run's
        config and data info, weights from model.pt (loaded with weights_only=True)."""
        file = self.path / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: the run is {self.status}; call "
                                    "reidlib.engine.train with the same config to finish it")
        blob = runs.load_torch_file(file, runs.rerun_fix(self.path))
        model = methods.build(self.config.method, self.config.model, saved_info(blob))
        model.load_state_dict(blob["state_dict"])
        dev = distributed.resolve_device(device, distributed.env_context())
        return memory_format(model, self.config.train).to(dev).eval()


# -------------------------------------------------------------------------------------- helpers
def memory_format(model: nn.Module, tcfg: Any) -> nn.Module:
    """The model with its 4-D weights in channels-last memory when `train.channels_last`: resnet_small's
    step is ~1.15x faster on a 2-core CPU (benchmarks/bench_backbones.py --channels-last). The trained and
    the reloaded model use the same layout, so their evaluations agree exactly."""
    return model.to(memory_format=torch.channels_last) if tcfg.channels_last else model


def resolved_model_config(cfg: RunConfig) -> dict:
    """The method config with its defaults filled in (what the run key hashes); validates it."""
    return to_dict(methods.build_config(cfg.method, cfg.model))


def saved_info(blob: dict) -> DataInfo:
    """The DataInfo a model.pt was built with (files written before it existed carry `build_kwargs`)."""
    if "info" in blob:
        return DataInfo.from_dict(blob["info"])
    legacy = blob["build_kwargs"]
    return DataInfo(num_classes=legacy["num_classes"], num_cameras=legacy.get("num_cameras") or 1,
                    image_size=tuple(legacy.get("image_size") or (256, 128)))


def check_data(method_cls: type[ReIDMethod], cfg: RunConfig) -> None:
    """What the method declares it needs from the data, checked before anything is built."""
    if (method_cls.needs_masks or method_cls.test_masks) and cfg.data.masks is None:
        raise ConfigError(f"method {cfg.method!r} learns from human-parsing labels: set data.masks to "
                          "'parsing' (label PNGs) or 'pifpaf' (BPBreID's .npy fields)")


def check_splits(dataset: Any) -> None:
    """What training and the final evaluation need from the splits, checked before anything is trained: a
    data set without training images, an empty query or gallery split, or queries none of which has a true
    match in the gallery (same pid, another camera) would otherwise fail only after the last epoch."""
    name = getattr(dataset, "name", "the data set")
    if not dataset.train:
        raise ValueError(f"{name} at {dataset.root} has no training images, so nothing can be trained "
                         "(Occluded-REID, Partial-REID and Partial-iLIDS are test-only: the community trains "
                         "on Market-1501 and tests there); point data.dataset / data.root at a data set with "
                         "a training split")
    empty = [split for split in ("query", "gallery") if not dataset.split(split)]
    if empty:
        splits = " and ".join(empty) + (" splits are" if len(empty) > 1 else " split is")
        raise ValueError(f"{name} at {dataset.root}: the {splits} empty, so the evaluation after training "
                         "would fail; restore its images (`reidlib datasets check ROOT` counts every split)")
    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for record in dataset.gallery:
        gallery_cams[record.pid].add(record.camid)
    if not any(gallery_cams[r.pid] - {r.camid} for r in dataset.query if r.pid in gallery_cams):
        raise ValueError(f"{name} at {dataset.root}: no query has a true match in the gallery (same pid, "
                         "another camera), so the evaluation after training would fail; check that query "
                         "and gallery pids overlap and that camera ids are set per image (`reidlib datasets "
                         "check ROOT` counts the identities and cameras of every split)")


def stage_model_file(runs_dir: Path, init_from: str) -> Path:
    """model.pt of the earlier stage `init_from` ("<method>/<key>", a run under runs_dir/cache)."""
    if init_from.count("/") != 1:
        raise ConfigError(f"init_from={init_from!r}: give '<method>/<run key>' of a finished run (a config "
                          "name such as 'qpm_ide' is resolved by Workbook.train, which trains that stage "
                          "first)")
    file = runs.run_dir(runs_dir, *init_from.split("/")) / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"init_from={init_from!r}: {file} is missing; train that stage first "
                                "(Workbook.train does it for a config name)")
    return file


def _set_epoch(loader: Any, epoch: int) -> None:
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
            return


def _mean(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in sums.items()}


@dataclass
class _State:
    """Everything besides module/optimiser states that a checkpoint carries."""

    epoch: int = 0               # finished epochs
    iteration: int = 0           # finished optimisation steps
    history: list[dict] = field(default_factory=list)
    train_time: float = 0.0      # seconds inside training epochs (all sessions)
    train_images: int = 0        # images seen by all ranks
    wall_time: float = 0.0       # seconds inside train() before this session


# ------------------------------------------------------------------------------------- training
def train(cfg: RunConfig, runs_dir: str | Path = "runs", retrain: bool = False, progress: str | bool = "auto",
          device: str | torch.device = "auto", *, dataset: Any = None,
          callbacks: Sequence[Callback] = ()) -> Run:
    """Train `cfg` (or reuse/resume its run folder) and return the `Run`.

    runs_dir:  the run lands in `runs_dir/cache/<method>/<key>/`
    retrain:   ignore a finished or interrupted run with the same key and train from scratch
    progress:  "auto" | "bars" | "lines" | "off" (see reidlib.engine.progress)
    device:    "auto" (this process's GPU, else CPU) or any torch device
    dataset:   an already loaded ReidDataset (default: `load_from_config(cfg.data)`)
    callbacks: called on every rank after each epoch's checkpoint as `callback(epoch, record)`;
               an exception raised there stops the run, which resumes on the next call.
    Under torchrun (WORLD_SIZE > 1) every process calls `train` with the same arguments.
    """
    ctx = distributed.env_context()
    dev = distributed.resolve_device(device, ctx)
    created_group = distributed.init_process_group(ctx, dev)
    try:
        return _train(cfg, Path(runs_dir), retrain, resolve_mode(progress), dev, ctx, dataset, callbacks)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _train(cfg: RunConfig, runs_dir: Path, retrain: bool, mode: str, dev: torch.device, ctx: DistContext,
           dataset: Any, callbacks: Sequence[Callback]) -> Run:
    method_cls = methods.get(cfg.method)
    model_config = resolved_model_config(cfg)  # a bad model config fails here, before data and folders
    check_data(method_cls, cfg)
    if cfg.init_from is not None:
        stage_model_file(runs_dir, cfg.init_from)
    if dataset is None:
        from reidlib.data.loader import load_from_config

        splits = ("train", "query", "gallery") if method_cls.test_masks else ("train",)
        dataset = load_from_config(cfg.data, mask_splits=splits)
    check_splits(dataset)
    key = runs.run_key(cfg, runs.data_identity(dataset), model_config)
    path = runs.run_dir(runs_dir, cfg.method, key)
    with runs.run_lock(path) if ctx.is_main else contextlib.nullcontext() as lock:
        try:
            finished = ctx.is_main and not retrain and runs.run_status(path) == "finished"
            if distributed.broadcast_object(finished, ctx):
                distributed.barrier(ctx)
                return Run.load(path, reused=True)
            if ctx.is_main and retrain:
                for name in _RESULT_FILES:
                    (path / name).unlink(missing_ok=True)
            distributed.barrier(ctx)
            return _Trainer(cfg, runs_dir, path, key, dataset, mode, dev, ctx).fit(callbacks)
        except BaseException:
            if lock is not None:  # rank 0: a start that failed (method build, pre-flight, epoch 1) leaves
                lock.discard(_START_FILES, root=runs_dir)  # no folder; a checkpoint or results keep it
            raise


class _Trainer:
    """One session of one run: builds everything, restores a checkpoint if any, runs the epochs."""

    def __init__(self, cfg: RunConfig, runs_dir: Path, path: Path, key: str, dataset: Any, mode: str,
                 dev: torch.device, ctx: DistContext):
        from reidlib.data.loader import build_train_loader

        self.session_start = time.perf_counter()
        self.cfg, self.path, self.key, self.dataset, self.dev, self.ctx = cfg, path, key, dataset, dev, ctx
        self.tcfg = cfg.train
        # Rank 0 keeps the plain seed: its model init (broadcast to every rank by DDP) and its random
        # stream are those of a single-process run with this seed.
        seed_everything(cfg.seed + ctx.rank)
        self.info = DataInfo.from_dataset(dataset, cfg.data)
        model = methods.build(cfg.method, cfg.model, self.info)
        self.model = memory_format(model, self.tcfg).to(dev)
        self.optimizer = build_optimizer(self.model, self.tcfg)
        self.scheduler = build_scheduler(self.optimizer, self.tcfg)
        self.amp = self.tcfg.amp and amp_available(dev)
        if self.tcfg.amp and not self.amp:
            warnings.warn(f"train.amp: {dev} has no native bfloat16 kernels, so this run trains in float32 "
                          "(set train.amp: false to silence this)", stacklevel=2)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp and amp_dtype(dev) == torch.float16)
        self.loader = build_train_loader(dataset, cfg.data, seed=cfg.seed, rank=ctx.rank,
                                         world_size=ctx.world_size)
        self.progress = Progress(mode if ctx.is_main else "off", self.tcfg.epochs, desc=cfg.method)
        self.state = _State()
        self.resumed = self._restore()
        if not self.resumed:
            if cfg.init_from is not None:
                self._load_stage(stage_model_file(runs_dir, cfg.init_from))
            self._start_pass()
        self._check_test_path()
        self.net = distributed.wrap(self.model, ctx, dev)
        # The default step checks its terms before the backward pass; a method's own step is checked after.
        self.custom_step = type(self.model).train_step is not ReIDMethod.train_step

    def _load_stage(self, file: Path) -> None:
        blob = runs.load_torch_file(file, runs.rerun_fix(file.parent), map_location=self.dev)
        taken = self.model.load_stage(blob["state_dict"])
        self.progress.message(f"initialised {len(taken)} tensors from the earlier stage {self.cfg.init_from}")

    def _start_pass(self) -> None:
        """`on_train_start` over the training split in order, without augmentation (random streams kept)."""
        from reidlib.data.loader import build_test_loader

        data = self.cfg.data

        def batches():  # a generator: the loader is built only if the method iterates it
            for item in build_test_loader(self.dataset.train, data, root=self.dataset.root,
                                          with_masks=data.masks is not None):
                yield Batch.from_loader(item, data).to(self.dev)

        self.model.eval()
        with preserved_rng(), torch.no_grad():
            self.model.on_train_start(batches())
        self.model.train()

    def _check_test_path(self) -> None:
        """Pre-flight of the final evaluation: embed one query and one gallery image per camera and rank them
        with the method's distance, so that a test path that fails (e.g. on a gallery camera the training
        split lacks) fails before the first epoch, not after the last. Random streams and the train mode
        are kept, so the run's trajectory is unchanged."""
        from reidlib.data.loader import build_test_loader

        data = self.cfg.data
        with_masks = bool(self.model.test_masks)
        picked = {}
        for split in ("query", "gallery"):
            per_camera: dict[int, Any] = {}
            for record in self.dataset.split(split):
                per_camera.setdefault(record.camid, record)
            picked[split] = list(per_camera.values())
        try:
            with preserved_rng():
                query, gallery = (
                    extract(self.model, build_test_loader(records, data, root=self.dataset.root,
                                                          with_masks=with_masks),
                            flip=self.tcfg.flip_test, device=self.dev, data_cfg=data)[0]
                    for records in picked.values())
                with torch.no_grad():
                    self.model.distance(query.to(self.dev), gallery.to(self.dev))
        except Exception as exc:
            cams = {split: sorted(r.camid for r in records) for split, records in picked.items()}
            raise RuntimeError(
                f"pre-flight, before training: the test path of {self.cfg.method!r} (embed + distance) fails "
                f"on one query and one gallery image per camera (query cameras {cams['query']}, gallery "
                f"cameras {cams['gallery']}; the training split has {self.info.num_cameras} cameras): "
                f"{type(exc).__name__}: {exc}. Fix the method's embed / distance for these inputs; the "
                "final evaluation would fail the same way after the last epoch") from exc

    # ------------------------------------------------------------------------------ checkpoints
    def _restore(self) -> bool:
        file = self.path / CHECKPOINT_FILE
        if not file.is_file():
            return False
        try:
            # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RuntimeError(f"cannot load checkpoint {file}: {exc}. Delete it to restart this run, or "
                               "call train(..., retrain=True)") from exc
        if ckpt.get("world_size", 1) != self.ctx.world_size:
            raise RuntimeError(f"{file} was written by a {ckpt.get('world_size')}-process run; resume it "
                               f"with that many processes or call train(..., retrain=True)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = _State(**ckpt["state"])
        set_rng_state(ckpt["rng"][self.ctx.rank])
        generator = getattr(self.loader, "generator", None)
        if generator is not None and ckpt["loader_rng"][self.ctx.rank] is not None:
            generator.set_state(ckpt["loader_rng"][self.ctx.rank])
        return True

    def _checkpoint(self) -> None:
        generator = getattr(self.loader, "generator", None)
        rng = distributed.all_gather_object(get_rng_state(), self.ctx)
        loader_rng = distributed.all_gather_object(None if generator is None else generator.get_state(),
                                                   self.ctx)
        if not self.ctx.is_main:
            return
        state = {**self.state.__dict__, "wall_time": self._wall_time()}
        runs.atomic_torch_save({
            "key": self.key, "world_size": self.ctx.world_size, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "loader_rng": loader_rng, "state": state,
        }, self.path / CHECKPOINT_FILE)
        runs.atomic_write_jsonl(self.path / HISTORY_FILE, self.state.history)

    def _wall_time(self) -> float:
        return self.state.wall_time + time.perf_counter() - self.session_start

    def _write_header(self) -> None:
        """config.yaml and manifest.json (a resumed run appends this session to `resumes`)."""
        if not self.ctx.is_main:
            return
        runs.atomic_write_yaml(self.path / CONFIG_FILE, self.cfg)
        session = runs.manifest(seed=self.cfg.seed, device=str(self.dev), world_size=self.ctx.world_size)
        old = runs.read_json(self.path / MANIFEST_FILE, runs.rerun_fix(self.path)) if self.resumed else None
        if old is None:
            info = {**session, "method": self.cfg.method, "key": self.key, "resumes": []}
        else:
            keep = ("git_sha", "git_dirty", "device", "threads", "world_size", "start_time")
            info = {**old, "resumes": [*old.get("resumes", []), {k: session[k] for k in keep}]}
        runs.atomic_write_json(self.path / MANIFEST_FILE, info)

    # ------------------------------------------------------------------------------------ epochs
    def fit(self, callbacks: Sequence[Callback]) -> Run:
        self._write_header()
        if self.resumed:
            self.progress.message(f"resuming {self.path} after epoch {self.state.epoch}/{self.tcfg.epochs}")
        try:
            for epoch in range(self.state.epoch, self.tcfg.epochs):
                record = self._train_epoch(epoch)
                self.state.history.append(record)
                self.progress.end_epoch(record)
                if self._evaluate_now(epoch + 1):
                    self._periodic_eval(epoch + 1)
                self.state.epoch = epoch + 1
                self._checkpoint()
                for callback in callbacks:
                    callback(epoch + 1, record)
        finally:
            self.progress.close()
        return self._finish()

    def _evaluate_now(self, epoch: int) -> bool:
        every = self.tcfg.eval_every
        return every > 0 and epoch % every == 0 and epoch < self.tcfg.epochs  # the last one is final

    def _steps(self) -> int:
        steps = len(self.loader)
        if self.tcfg.max_iters_per_epoch is not None:
            steps = min(steps, self.tcfg.max_iters_per_epoch)
        if steps == 0:
            raise ValueError(f"the training loader yields no full batch: {len(self.dataset.train)} images, "
                             f"{self.dataset.num_train_pids} identities, batch {self.cfg.data.batch_p} x "
                             f"{self.cfg.data.batch_k}; lower data.batch_p or data.batch_k")
        return steps

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch (0-based `epoch`); returns its history record (1-based epoch)."""
        _set_epoch(self.loader, epoch)
        steps = self._steps()
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        self.progress.start_epoch(epoch + 1, steps)
        sums: dict[str, float] = defaultdict(float)
        window: dict[str, float] = defaultdict(float)
        images = window_images = window_steps = 0
        start = window_start = time.perf_counter()
        for step, item in enumerate(self.loader):
            if step >= steps:
                break
            ctx = StepContext(method=self.model, forward=self.net, device=self.dev, amp=self.amp,
                              grad_clip=self.tcfg.grad_clip, epoch=epoch + 1, epochs=self.tcfg.epochs,
                              step=step + 1, steps=steps,
                              all_ranks=lambda flag: distributed.all_true(flag, self.ctx, self.dev))
            terms = self.model.train_step(Batch.from_loader(item, self.cfg.data).to(self.dev), self.optimizer,
                                          self.scaler, ctx)
            values = loss_values(terms)
            if self.custom_step:  # the default step checked before its backward pass
                ctx.check_values(values)
            n = int(item["image"].shape[0])
            images, window_images, window_steps = images + n, window_images + n, window_steps + 1
            self.state.iteration += 1
            for name, value in values.items():
                sums[name] += value
                window[name] += value
            self.progress.step(sum(values.values()), lr)
            if window_steps == self.tcfg.log_every:
                now = time.perf_counter()
                terms_mean = _mean(window, window_steps)
                self.state.history.append({  # rank 0's shard only: no collective inside the epoch
                    "kind": "iter", "epoch": epoch + 1, "step": step + 1, "iteration": self.state.iteration,
                    "loss": sum(terms_mean.values()), "terms": terms_mean, "lr": lr,
                    "images_per_s": window_images * self.ctx.world_size / max(now - window_start, 1e-9)})
                window, window_images, window_steps, window_start = defaultdict(float), 0, 0, now
        seconds = time.perf_counter() - start
        self.scheduler.step()
        terms_mean = distributed.mean_over_ranks(_mean(sums, steps), self.ctx, self.dev)
        images = int(distributed.sum_over_ranks(images, self.ctx, self.dev))
        self.state.train_time += seconds
        self.state.train_images += images
        return {"kind": "epoch", "epoch": epoch + 1, "steps": steps, "iteration": self.state.iteration,
                "loss": sum(terms_mean.values()), "terms": terms_mean, "lr": lr,
                "images_per_s": images / max(seconds, 1e-9), "time_s": seconds}

    def _evaluate(self) -> dict[str, float]:
        """Rank 0 evaluates (the model is the same on every rank); random streams are left untouched."""
        with preserved_rng():
            return evaluate_model(self.model, self.dataset, self.cfg.data, flip=self.tcfg.flip_test,
                                  device=self.dev)

    def _periodic_eval(self, epoch: int) -> None:
        if self.ctx.is_main:
            metrics = self._evaluate()
            self.state.history.append({"kind": "eval", "epoch": epoch, **metrics})
            self.progress.evaluation(epoch, metrics)
        distributed.barrier(self.ctx)

    def _finish(self) -> Run:
        distributed.sync_buffers(self.model, self.ctx)
        metrics: dict[str, Any] = {}
        if self.ctx.is_main:
            start = time.perf_counter()
            final = self._evaluate()
            eval_seconds = time.perf_counter() - start
            epochs = self.tcfg.epochs
            self.state.history.append({"kind": "eval", "epoch": epochs, "final": True, **final})
            self.progress.evaluation(epochs, final)
            runs.atomic_torch_save({"method": self.cfg.method, "key": self.key,
                                    "info": self.info.as_dict(), "state_dict": self.model.state_dict()},
                                   self.path / MODEL_FILE)
            runs.atomic_write_jsonl(self.path / HISTORY_FILE, self.state.history)
            last_epoch = next((r for r in reversed(self.state.history) if r["kind"] == "epoch"), {})
            metrics = {
                **final,
                "final_loss": last_epoch.get("loss"),
                "epochs": epochs,
                "iterations": self.state.iteration,
                "num_params": sum(p.numel() for p in self.model.parameters()),
                "wall_time_s": self._wall_time(),
                "train_time_s": self.state.train_time,
                "train_images_per_s": self.state.train_images / max(self.state.train_time, 1e-9),
                "train_seconds_per_iter": self.state.train_time / max(self.state.iteration, 1),
                "eval_time_s": eval_seconds,
                "finished": True,
            }
            runs.atomic_write_json(self.path / METRICS_FILE, metrics)  # last: marks the run finished
        metrics, history = distributed.broadcast_object((metrics, self.state.history), self.ctx)
        return Run(path=self.path, key=self.key, config=self.cfg, metrics=metrics, history=history,
                   reused=False)


__all__ = ["Run", "train", "resolved_model_config", "saved_info", "Callback"]
