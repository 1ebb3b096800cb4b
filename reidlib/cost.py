"""Model cost as the papers' cost tables report it: parameters, FLOPs, train time per iteration, inference
throughput, all measured on this machine (never copied from a paper).

Training is timed through the method's own `train_step` (what the engine calls: DPM's two-step update
counts twice), with the run's optimiser, on a copy of the model so that its weights and BN statistics
stay untouched.
"""

from __future__ import annotations

import copy
import time

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


def train_seconds_per_iter(model, batch: Batch, train_cfg: TrainConfig | None = None, repeats: int = 3,
                           warmup: int = 1) -> float:
    """Seconds of one training iteration, `model.train_step` with `train_cfg`'s optimiser (default
    TrainConfig()) and autocast setting, timed on a copy of the model."""
    from reidlib.engine.inference import device_of
    from reidlib.engine.optim import build_optimizer
    from reidlib.engine.step import StepContext, amp_available, amp_dtype

    train_cfg = train_cfg or TrainConfig()
    model = copy.deepcopy(model).train()
    device = device_of(model)
    optimizer = build_optimizer(model, train_cfg)
    amp = train_cfg.amp and amp_available(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype(device) == torch.float16)
    ctx = StepContext(method=model, forward=model, device=device, amp=amp, grad_clip=train_cfg.grad_clip,
                      epoch=1, epochs=1, step=1, steps=1)
    batch = batch.to(device)
    return _timed(lambda: model.train_step(batch, optimizer, scaler, ctx), repeats, warmup)


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
