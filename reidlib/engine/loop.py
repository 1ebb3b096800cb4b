"""`train(cfg)`: one cached, resumable, optionally distributed training run, and the `Run` it returns.

Lifecycle of `runs_dir/cache/<method>/<key>/` (layout in reidlib.runs):
  finished (metrics.json with "finished": true)  -> reused as is, no training (unless retrain=True)
  interrupted (last.pt, no metrics)               -> resumed after the last finished epoch
  otherwise                                       -> trained from scratch
A checkpoint is written after every epoch, holding the model, optimiser, scheduler, grad scaler, every
rank's RNG states, the loader's generator state, the history and the elapsed times; the sampler order
depends on (seed, epoch) only. A resumed run therefore ends with the same weights and metrics as an
uninterrupted one (bit for bit on CPU with the same thread count). Mid-training evaluations run with
every random stream preserved, so `eval_every` cannot change the trajectory either.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reidlib import methods, runs
from reidlib.config import RunConfig, from_dict, to_dict
from reidlib.engine import distributed
from reidlib.engine.distributed import DistContext
from reidlib.engine.inference import evaluate_model, wants_masks
from reidlib.engine.optim import build_optimizer, build_scheduler
from reidlib.engine.progress import Progress, resolve_mode
from reidlib.engine.step import StepContext, amp_available, amp_dtype, default_train_step, loss_values
from reidlib.seed import get_rng_state, preserved_rng, seed_everything, set_rng_state

Callback = Callable[[int, dict], None]  # (1-based epoch, that epoch's history record)

CONFIG_FILE, MANIFEST_FILE, CHECKPOINT_FILE = "config.yaml", "manifest.json", "last.pt"
HISTORY_FILE, MODEL_FILE, METRICS_FILE = "history.jsonl", "model.pt", "metrics.json"
# Cleared by retrain=True; metrics first, so an interrupted clean-up never leaves a "finished" run.
_RESULT_FILES = (METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE, HISTORY_FILE, MANIFEST_FILE)


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
        return cls(path=path, key=path.name, config=RunConfig.from_yaml(path / CONFIG_FILE),
                   metrics=runs.read_json(path / METRICS_FILE) or {},
                   history=runs.read_jsonl(path / HISTORY_FILE), reused=reused)

    def history_frame(self, kind: str | None = None):
        """The history as a pandas DataFrame (loss terms flattened), optionally one kind only:
        "iter" (log windows), "epoch" or "eval"."""
        import pandas as pd

        rows = [{**{k: v for k, v in r.items() if k != "terms"}, **r.get("terms", {})}
                for r in self.history if kind is None or r.get("kind") == kind]
        return pd.DataFrame(rows)

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained method in eval mode: built with reidlib.methods.build, weights from model.pt
        (loaded with weights_only=True)."""
        file = self.path / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: the run is {self.status}; call "
                                    "reidlib.engine.train with the same config to finish it")
        blob = torch.load(file, map_location=device, weights_only=True)
        model = methods.build(self.config.method, self.config.model, **blob["build_kwargs"])
        model.load_state_dict(blob["state_dict"])
        return memory_format(model, self.config.train).to(device).eval()


# -------------------------------------------------------------------------------------- helpers
def memory_format(model: nn.Module, tcfg: Any) -> nn.Module:
    """The model with its 4-D weights in channels-last memory when `train.channels_last`: resnet_small's
    step is ~1.15x faster on a 2-core CPU (benchmarks/bench_backbones.py --channels-last). The trained and
    the reloaded model use the same layout, so their evaluations agree exactly."""
    return model.to(memory_format=torch.channels_last) if tcfg.channels_last else model


def method_class(name: str) -> type:
    methods.names()  # imports the method modules so they register
    return methods.METHODS.get(name)


def resolved_model_config(cfg: RunConfig) -> dict:
    """The method config with its defaults filled in (what the run key hashes)."""
    config_class = method_class(cfg.method).config_class
    if config_class is object:
        return dict(cfg.model)
    return to_dict(from_dict(config_class, cfg.model, where="model"))


def build_kwargs(method_cls: type, dataset: Any, data_cfg: Any) -> dict[str, Any]:
    """Data-dependent constructor arguments, those the method's __init__ accepts: num_classes,
    num_cameras (training split) and image_size (height, width) for layers sized to the feature map."""
    offered = {"num_classes": dataset.num_train_pids, "num_cameras": dataset.num_train_cams,
               "image_size": (data_cfg.height, data_cfg.width)}
    params = inspect.signature(method_cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}


def _set_epoch(loader: Any, epoch: int) -> None:
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
            return


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


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
    method_cls = method_class(cfg.method)
    if dataset is None:
        from reidlib.data.loader import load_from_config

        splits = ("train", "query", "gallery") if wants_masks(method_cls) else ("train",)
        dataset = load_from_config(cfg.data, mask_splits=splits)
    key = runs.run_key(cfg, runs.data_identity(dataset), resolved_model_config(cfg))
    path = runs.run_dir(runs_dir, cfg.method, key)
    with runs.run_lock(path) if ctx.is_main else contextlib.nullcontext():
        finished = ctx.is_main and not retrain and runs.run_status(path) == "finished"
        if distributed.broadcast_object(finished, ctx):
            distributed.barrier(ctx)
            return Run.load(path, reused=True)
        if ctx.is_main and retrain:
            for name in _RESULT_FILES:
                (path / name).unlink(missing_ok=True)
        distributed.barrier(ctx)
        return _Trainer(cfg, path, key, dataset, method_cls, mode, dev, ctx).fit(callbacks)


class _Trainer:
    """One session of one run: builds everything, restores a checkpoint if any, runs the epochs."""

    def __init__(self, cfg: RunConfig, path: Path, key: str, dataset: Any, method_cls: type, mode: str,
                 dev: torch.device, ctx: DistContext):
        from reidlib.data.loader import build_train_loader

        self.session_start = time.perf_counter()
        self.cfg, self.path, self.key, self.dataset, self.dev, self.ctx = cfg, path, key, dataset, dev, ctx
        self.tcfg = cfg.train
        # Rank 0 keeps the plain seed: its model init (broadcast to every rank by DDP) and its random
        # stream are those of a single-process run with this seed.
        seed_everything(cfg.seed + ctx.rank)
        self.build_kwargs = build_kwargs(method_cls, dataset, cfg.data)
        model = methods.build(cfg.method, cfg.model, **self.build_kwargs)
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
        self.state = _State()
        self.resumed = self._restore()
        self.net = distributed.wrap(self.model, ctx, dev)
        custom = getattr(self.model, "train_step", None)
        self.step_fn = custom if custom is not None else default_train_step
        self.custom_step = custom is not None
        self.progress = Progress(mode if ctx.is_main else "off", self.tcfg.epochs, desc=cfg.method)

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
        old = runs.read_json(self.path / MANIFEST_FILE) if self.resumed else None
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
        for step, batch in enumerate(self.loader):
            if step >= steps:
                break
            ctx = StepContext(method=self.model, forward=self.net, device=self.dev, amp=self.amp,
                              grad_clip=self.tcfg.grad_clip, epoch=epoch + 1, epochs=self.tcfg.epochs,
                              step=step + 1, steps=steps,
                              all_ranks=lambda flag: distributed.all_true(flag, self.ctx, self.dev))
            terms = self.step_fn(_to_device(batch, self.dev), self.optimizer, self.scaler, ctx)
            values = loss_values(terms)
            if self.custom_step:  # the default step checked before its backward pass
                ctx.check_values(values)
            n = int(batch["image"].shape[0])
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
                                    "build_kwargs": self.build_kwargs, "state_dict": self.model.state_dict()},
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


__all__ = ["Run", "train", "build_kwargs", "resolved_model_config", "Callback"]
