"""Training throughput of reidlib's engine against a bare PyTorch loop over the same model, data and batch.

    python benchmarks/bench_engine.py [--config bot] [--profile demo] [--iters 60] [--epochs 2]
                                      [--repeats 3] [--threads 2] [--json PATH]

Both sides get the same work: the config's method built by `methods.build` after `seed_everything(seed)`
(weights in the engine's memory format, `train.channels_last`), the same SynthOcc data set (generated on
first use, ~30 s), the same P x K loader (`build_train_loader`, same seed, `set_epoch` every epoch), the
same optimiser (`build_optimizer`) and `--iters` steps as `--epochs` epochs of `--iters / --epochs` steps.

  bare loop  per batch: Batch.from_loader, forward, sum of the method's loss terms, zero_grad, backward,
             step; nothing else (no logging, no NaN check). The learning-rate schedule is stepped once per
             epoch as the engine does, so both should compute the same numbers: the script compares the
             bare model's final weights with the engine's model.pt (bit-identical on CPU once the engine's
             start pass leaves torch's global RNG untouched; see benchmarks/README.md).
  engine     reidlib.engine.train(cfg, <fresh temp dir>, dataset=..., progress="off", retrain=True) with
             train.epochs and train.max_iters_per_epoch set to the same steps. Its training throughput is
             `train_images_per_s` from the run's metrics (the epochs' loops only: the main ratio); its
             wall-clock also holds the run folder, the per-epoch checkpoints and the final evaluation
             (reported separately, against the bare loop's setup + loop).
  torchreid  torchreid's ImageTripletEngine.train over the same model (images in, (logits, features)
             out), loader and optimiser, with its own losses (label-smoothed cross-entropy + batch-hard
             triplet, BoT's terms) and per-step bookkeeping; only where torchreid imports (never installed
             by this script; `pip install --no-deps torchreid==0.2.5`).

The loops alternate for `--repeats` rounds (the order flips every round) after one short untimed warm-up;
the medians and the ratios to the bare loop's median are printed (the machine is shared, so interleaving
keeps them comparable), with the per-round ratios beside them. Last, the engine's per-step bookkeeping
(StepContext, NaN checks, loss values for the log, ...) is timed in isolation: microseconds that do not
depend on what else runs on the machine, against the bare step's milliseconds.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import torch
from torch import nn

from reidlib import methods
from reidlib.config import RunConfig
from reidlib.data.loader import build_train_loader, load_from_config
from reidlib.engine import build_optimizer, build_scheduler, distributed, train
from reidlib.engine.loop import memory_format
from reidlib.engine.progress import Progress
from reidlib.engine.step import StepContext, amp_available, amp_dtype, loss_values
from reidlib.methods.base import Batch, DataInfo, ReIDMethod
from reidlib.seed import seed_everything

DEVICE = torch.device("cpu")


def bench_config(name: str, profile: str, iters: int, epochs: int) -> RunConfig:
    """The profile's config with `epochs` epochs of iters / epochs steps, evaluating only at the end."""
    if iters % epochs:
        raise SystemExit(f"--iters {iters} is not a multiple of --epochs {epochs}")
    base = RunConfig.from_profile(name, profile)
    overrides = {"train": {"epochs": epochs, "max_iters_per_epoch": iters // epochs, "eval_every": 0,
                           "warmup_epochs": min(base.train.warmup_epochs, epochs)}}
    return RunConfig.from_profile(name, profile, overrides)


def build(cfg: RunConfig, dataset) -> tuple[ReIDMethod, torch.optim.Optimizer, object, object]:
    """Model, optimiser, schedule and loader as the engine builds them (same order, same seed)."""
    seed_everything(cfg.seed)
    model = methods.build(cfg.method, cfg.model, DataInfo.from_dataset(dataset, cfg.data))
    model = memory_format(model, cfg.train).to(DEVICE)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    loader = build_train_loader(dataset, cfg.data, seed=cfg.seed)
    return model, optimizer, scheduler, loader


def run_bare(cfg: RunConfig, dataset) -> dict:
    """The bare loop; `train_s` covers the loops over the loader only, `wall_s` the setup too."""
    wall_start = time.perf_counter()
    model, optimizer, scheduler, loader = build(cfg, dataset)
    amp = cfg.train.amp and amp_available(DEVICE)
    steps = cfg.train.max_iters_per_epoch
    model.train()
    train_s = 0.0
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        for step, item in enumerate(loader):
            if step >= steps:
                break
            batch = Batch.from_loader(item, cfg.data)
            with torch.autocast(DEVICE.type, dtype=amp_dtype(DEVICE), enabled=amp):
                out = model(batch)
                loss = sum(model.loss(out, batch).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        train_s += time.perf_counter() - start
        scheduler.step()
    wall_s = time.perf_counter() - wall_start
    return {"train_s": train_s, "wall_s": wall_s, "state_dict": model.state_dict()}


def run_engine(cfg: RunConfig, dataset) -> dict:
    """reidlib.engine.train in a fresh runs folder; training time and images/s from the run's metrics."""
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as runs_dir:
        start = time.perf_counter()
        run = train(cfg, runs_dir, retrain=True, progress="off", device=DEVICE, dataset=dataset)
        wall_s = time.perf_counter() - start
        state_dict = torch.load(run.path / "model.pt", weights_only=True)["state_dict"]
    m = run.metrics
    return {"train_s": m["train_time_s"], "train_images_per_s": m["train_images_per_s"], "wall_s": wall_s,
            "eval_s": m["eval_time_s"], "iterations": m["iterations"], "state_dict": state_dict}


def bookkeeping_us(cfg: RunConfig, dataset, number: int = 2000) -> dict[str, float]:
    """Microseconds per call of what the engine's step does beyond the bare loop's, each the engine's own
    function timed in isolation (best of 5 x `number` calls) on one real batch and its loss terms: a
    load-independent view of the overhead, which the end-to-end ratio can only bound within its noise."""
    model, _, _, loader = build(cfg, dataset)
    item = next(iter(loader))
    batch = Batch.from_loader(item, cfg.data)
    with torch.no_grad():
        terms = model.loss(model(batch), batch)
    total = sum(terms.values())
    dist_ctx = distributed.env_context()
    progress = Progress("off", cfg.train.epochs)

    def step_context() -> StepContext:  # as _Trainer._train_epoch builds it every step
        return StepContext(method=model, forward=model, device=DEVICE, amp=False, grad_clip=None, epoch=1,
                           epochs=cfg.train.epochs, step=1, steps=cfg.train.max_iters_per_epoch,
                           all_ranks=lambda flag: distributed.all_true(flag, dist_ctx, DEVICE))

    ctx = step_context()
    calls = {
        "StepContext(...)": step_context,
        "Batch.to(device)": lambda: batch.to(DEVICE),
        "ctx.check_finite(terms, total)": lambda: ctx.check_finite(terms, total),
        "loss_values(terms)": lambda: loss_values(terms),
        "progress.step (off)": lambda: progress.step(1.0, 1e-3),
    }
    return {name: 1e6 * min(timeit.repeat(fn, number=number, repeat=5)) / number
            for name, fn in calls.items()}


# ------------------------------------------------------------------------------------- torchreid
def load_torchreid_engine():
    """torchreid's ImageTripletEngine class, or (None, why not). The PyPI package (0.2.5) keeps it under
    torchreid.reid.engine, a source checkout under torchreid.engine."""
    if importlib.util.find_spec("torchreid") is None:
        return None, ("skipped: torchreid is not installed (this script installs nothing; "
                      "pip install --no-deps torchreid==0.2.5 to include it)")
    errors = []
    for name in ("torchreid.reid.engine", "torchreid.engine"):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # ImportError, or the package's import-time failures (e.g. missing gdown)
            errors.append(f"import {name}: {type(exc).__name__}: {exc}")
            continue
        version = getattr(importlib.import_module("torchreid"), "__version__", "?")
        return module.ImageTripletEngine, f"torchreid {version}, {name}.ImageTripletEngine"
    return None, "skipped: torchreid is installed but its engine does not import (" + "; ".join(errors) + ")"


class TorchreidModel(nn.Module):
    """The method under torchreid's convention: images in, (logits, features) out in training mode.
    torchreid passes no camera ids: every image is on camera 0 (BoT reads none)."""

    def __init__(self, method: ReIDMethod):
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor):
        out = self.method(Batch(images=images, camids=torch.zeros(len(images), dtype=torch.long)))
        return out["logits"], out["feat"]


class StepsLoader:
    """The first `steps` batches of the training loader as torchreid's dicts ('img', 'pid')."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for step, item in enumerate(self.loader):
            if step >= self.steps:
                return
            yield {"img": item["image"], "pid": item["pid"]}


class DataManager:
    """What torchreid's engines read from an ImageDataManager during training."""

    def __init__(self, train_loader, num_train_pids: int):
        self.train_loader, self.test_loader = train_loader, {}
        self.num_train_pids, self.sources, self.targets = num_train_pids, [], []


def run_torchreid(engine_class, cfg: RunConfig, dataset) -> dict:
    """torchreid's engine epoch (`Engine.train`, print_freq beyond the epoch: no printing)."""
    wall_start = time.perf_counter()
    model, optimizer, _, loader = build(cfg, dataset)
    model_cfg = methods.build_config(cfg.method, cfg.model)
    margin = getattr(model_cfg, "triplet_margin", None) or 0.3
    manager = DataManager(StepsLoader(loader, cfg.train.max_iters_per_epoch), dataset.num_train_pids)
    engine = engine_class(manager, TorchreidModel(model), optimizer, margin=margin, scheduler=None,
                          use_gpu=False, label_smooth=True)
    engine.max_epoch = cfg.train.epochs
    train_s = 0.0
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        engine.epoch = epoch
        start = time.perf_counter()
        engine.train(print_freq=10**9)
        train_s += time.perf_counter() - start
    return {"train_s": train_s, "wall_s": time.perf_counter() - wall_start}


# ----------------------------------------------------------------------------------------- main
def max_abs_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0) for k in a)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bot", help="a packaged method config (reidlib/configs)")
    parser.add_argument("--profile", default="demo", choices=["ci", "demo", "paper"])
    parser.add_argument("--iters", type=int, default=60, help="training steps per run (all epochs)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs the steps are split into")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-torchreid", action="store_true", help="do not time torchreid's engine")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = bench_config(args.config, args.profile, args.iters, args.epochs)
    if methods.get(cfg.method).train_step is not ReIDMethod.train_step:
        raise SystemExit(f"{cfg.method} has its own train_step; the bare loop here is the default step only")
    dataset = load_from_config(cfg.data)
    steps, batch = cfg.train.max_iters_per_epoch, cfg.data.batch_p * cfg.data.batch_k
    available = len(build_train_loader(dataset, cfg.data, seed=cfg.seed))
    if steps > available:
        raise SystemExit(f"{steps} steps per epoch, but an epoch of the loader has {available} batches: "
                         "raise --epochs")
    images = args.iters * batch
    torchreid_class, torchreid_msg = (None, "skipped (--no-torchreid)") if args.no_torchreid \
        else load_torchreid_engine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config} {args.profile}: "
          f"{cfg.model.get('backbone', '?')}, {cfg.data.height}x{cfg.data.width}, batch {cfg.data.batch_p} x "
          f"{cfg.data.batch_k}, {cfg.train.optimizer}, amp {cfg.train.amp}, channels_last "
          f"{cfg.train.channels_last}; {args.iters} steps = {args.epochs} epochs x {steps}; "
          f"{len(dataset.train)} training images")
    print(f"torchreid engine: {torchreid_msg}", flush=True)

    # Warm-up (untimed): first-use costs (kernel selection, allocator growth, lazy imports).
    run_bare(bench_config(args.config, args.profile, 4, 1), dataset)

    loops = {"bare": lambda: run_bare(cfg, dataset), "engine": lambda: run_engine(cfg, dataset)}
    if torchreid_class is not None:
        loops["torchreid"] = lambda: run_torchreid(torchreid_class, cfg, dataset)
    results: dict[str, list[dict]] = {name: [] for name in loops}
    weight_diffs = []
    for r in range(args.repeats):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for name in order:
            results[name].append(loops[name]())
        bare, engine = results["bare"][-1], results["engine"][-1]
        weight_diffs.append(max_abs_difference(bare.pop("state_dict"), engine.pop("state_dict")))
        line = ", ".join(f"{name} {images / results[name][-1]['train_s']:.1f} img/s" for name in loops)
        print(f"round {r + 1}/{args.repeats} ({' -> '.join(order)}): {line}", flush=True)

    def ips(name: str, key: str = "train_s") -> list[float]:
        """Images/s of each round; the engine's training rate is its own metric, train_images_per_s."""
        if name == "engine" and key == "train_s":
            return [res["train_images_per_s"] for res in results[name]]
        return [images / res[key] for res in results[name]]

    def row(label: str, name: str, key: str = "train_s", bold: bool = False) -> str:
        """Median and best (the least disturbed round, as in bench_backbones.py) images/s, each with its
        ratio to the bare loop's, and the ratios of the rounds (each against the bare loop of its round)."""
        rates, bare = ips(name, key), ips("bare", key)
        med, best = statistics.median(rates) / statistics.median(bare), max(rates) / max(bare)
        rounds = ", ".join(f"{r / b:.2f}" for r, b in zip(rates, bare, strict=True))
        med_text = f"**{med:.3f}**" if bold else f"{med:.3f}"
        return (f"| {label} | {statistics.median(rates):.1f} | {med_text} | {max(rates):.1f} | {best:.3f} | "
                f"{rounds} |")

    print()
    print(f"| loop ({args.iters} steps x {batch} images, {args.repeats} rounds) | median images/s | x bare | "
          "best images/s | x bare | per-round ratios |")
    print("|---|---|---|---|---|---|")
    print(row("bare PyTorch loop, training loop only", "bare"))
    print(row("reidlib engine, training epochs only (`train_images_per_s`)", "engine", bold=True))
    if "torchreid" in results:
        print(row("torchreid ImageTripletEngine.train", "torchreid"))
    else:
        print(f"| torchreid ImageTripletEngine.train | {torchreid_msg.split(':')[0]} | - | - | - | - |")
    print(row("bare loop wall-clock: build model, optimiser, loader (preload) + loop", "bare", "wall_s"))
    print(row("engine wall-clock: `train()` call (setup, run folder, checkpoint per epoch, final evaluation)",
              "engine", "wall_s"))

    eval_s = statistics.median(res["eval_s"] for res in results["engine"])
    other_s = statistics.median(res["wall_s"] - res["train_s"] - res["eval_s"] for res in results["engine"])
    bare_other = statistics.median(res["wall_s"] - res["train_s"] for res in results["bare"])
    print(f"\nengine outside its training epochs (medians): final evaluation {eval_s:.2f} s, everything else "
          f"(setup, checkpoints, files) {other_s:.2f} s; bare loop setup {bare_other:.2f} s")
    check = [images / res["train_s"] for res in results["engine"]]  # the metric is this figure
    print(f"engine: {results['engine'][0]['iterations']} iterations; {images} images over train_time_s gives "
          f"{', '.join(f'{v:.1f}' for v in check)} images/s (its train_images_per_s above)")
    same = all(d == 0.0 for d in weight_diffs)
    verdict = "identical: the same computation" if same else (
        "they differ: the loops did not make the same random draws or steps (see benchmarks/README.md, "
        "'Engine')")
    print(f"final weights, bare loop vs engine's model.pt: max |difference| per round "
          f"{', '.join(f'{d:.1e}' for d in weight_diffs)} -> {verdict}")
    book = bookkeeping_us(cfg, dataset)
    step_us = 1e6 * statistics.median(res["train_s"] for res in results["bare"]) / args.iters
    book_pct = 100 * sum(book.values()) / step_us
    print("engine's per-step bookkeeping, timed in isolation (us per call): "
          + ", ".join(f"{name} {us:.1f}" for name, us in book.items())
          + f"; together {sum(book.values()):.0f} us = {book_pct:.3f}% of a bare step "
          f"({step_us / 1e3:.0f} ms median)")

    ratio = statistics.median(ips("engine")) / statistics.median(ips("bare"))
    paired = [e / b for e, b in zip(ips("engine"), ips("bare"), strict=True)]
    if max(paired) / min(paired) > 1.25:
        print(f"engine/bare: median ratio {ratio:.3f}, but the rounds range from {min(paired):.2f} to "
              f"{max(paired):.2f}: other jobs disturbed them, so the end-to-end ratio is inconclusive (rerun "
              f"with more --repeats on a quieter machine); the engine's bookkeeping is {book_pct:.3f}% "
              "of a step")
    else:
        print(f"engine overhead in training: {100 * (1 - ratio):+.1f}% "
              f"({'within' if ratio >= 0.9 else 'ABOVE'} the 10% budget)")

    if args.json:
        payload = {
            "config": args.config, "profile": args.profile, "iters": args.iters, "epochs": args.epochs,
            "batch": batch, "threads": torch.get_num_threads(), "repeats": args.repeats,
            "torch": torch.__version__, "torchreid": torchreid_msg,
            "runs": {name: [{k: v for k, v in res.items() if k != "state_dict"} for res in rs]
                     for name, rs in results.items()},
            "median_images_per_s": {name: statistics.median(ips(name)) for name in results},
            "best_images_per_s": {name: max(ips(name)) for name in results},
            "median_wall_images_per_s": {name: statistics.median(ips(name, "wall_s")) for name in results},
            "engine_over_bare": ratio, "engine_over_bare_per_round": paired,
            "engine_over_bare_best": max(ips("engine")) / max(ips("bare")),
            "engine_over_bare_wall": statistics.median(ips("engine", "wall_s"))
            / statistics.median(ips("bare", "wall_s")),
            "weights_max_abs_difference": weight_diffs,
            "bookkeeping_us": book, "bare_step_us": step_us,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
