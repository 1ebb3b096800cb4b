"""Model cost as the papers' cost tables report it: parameters, FLOPs, train time per iteration, inference
throughput, all measured on this machine (never copied from a paper).

Training is timed through the method's own `train_step` (what the engine calls: DPM's two-step update
counts twice), with the run's optimiser, on a copy of the model so that its weights and BN statistics
stay untouched.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidlib.config import TrainConfig
from reidlib.methods.base import Batch


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def inference_flops(model, batch: Batch) -> int:
    """FLOPs of one `embed` call per image (multiply-add = 2 FLOPs, torch's FlopCounterMode convention)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model.embed(batch)
    model.train(was_training)
    return counter.get_total_flops() // len(batch)


def _timed(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _training_step(model, batch: Batch, train_cfg: TrainConfig):
    """A copy of `model` and a closure running one of its training steps (the engine's `train_step`)."""
    from reidlib.engine.inference import device_of
    from reidlib.engine.optim import build_optimizer
    from reidlib.engine.step import StepContext, amp_available, amp_dtype

    model = copy.deepcopy(model).train()
    device = device_of(model)
    optimizer = build_optimizer(model, train_cfg)
    amp = train_cfg.amp and amp_available(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype(device) == torch.float16)
    ctx = StepContext(method=model, forward=model, device=device, amp=amp, grad_clip=train_cfg.grad_clip,
                      epoch=1, epochs=1, step=1, steps=1)
    batch = batch.to(device)
    return lambda: model.train_step(batch, optimizer, scaler, ctx)


def train_seconds_per_iter(model, batch: Batch, train_cfg: TrainConfig | None = None, repeats: int = 3,
                           warmup: int = 1) -> float:
    """Seconds of one training iteration, `model.train_step` with `train_cfg`'s optimiser (default
    TrainConfig()) and autocast setting, timed on a copy of the model."""
    return _timed(_training_step(model, batch, train_cfg or TrainConfig()), repeats, warmup)


@contextmanager
def _quiet_stderr():
    """The profiler's C++ layer (kineto) logs every start and stop to file descriptor 2, which a notebook
    shows as red text: silence the descriptor itself for the duration (Python's sys.stderr is not it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_train_memory_mb(model, batch: Batch, train_cfg: TrainConfig | None = None) -> float:
    """Peak memory (MB) of the tensors alive during one training step on the model's device, after a
    warm-up step (the optimiser's state exists): parameters, gradients, optimiser state, activations.
    From torch.profiler's memory timeline (the one view of CPU tensor memory that torch keeps; on a GPU
    `torch.cuda.max_memory_allocated` says the same)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from reidlib.engine.inference import device_of

    step = _training_step(model, batch, train_cfg or TrainConfig())
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with _quiet_stderr(), profile(activities=activities, profile_memory=True, record_shapes=True,
                                  with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device_of(model))
    return max((sum(s) for s in sizes), default=0) / 1e6


@torch.no_grad()
def inference_images_per_second(model, batch: Batch, repeats: int = 3, warmup: int = 1) -> float:
    model.eval()
    return len(batch) / _timed(lambda: model.embed(batch), repeats, warmup)


def cost_row(model, batch: Batch, train_cfg: TrainConfig | None = None, repeats: int = 3) -> dict:
    """One row of a cost table (Table VIII of QPM, the DPM/RGANet cost comparisons)."""
    return {
        "params (M)": count_parameters(model) / 1e6,
        "GFLOPs / image": inference_flops(model, batch) / 1e9,
        "train s / iter": train_seconds_per_iter(model, batch, train_cfg, repeats),
        "inference ms / image": 1e3 / inference_images_per_second(model, batch, repeats),
    }
