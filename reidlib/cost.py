"""Model cost as the papers' cost tables report it: parameters, FLOPs, train time per iteration, inference
throughput, all measured on this machine (never copied from a paper)."""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def inference_flops(model, images: torch.Tensor, camids: torch.Tensor | None = None) -> int:
    """FLOPs of one `embed` call per image (multiply-add = 2 FLOPs, torch's FlopCounterMode convention)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model.embed(images, camids)
    model.train(was_training)
    return counter.get_total_flops() // images.shape[0]


def _timed(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def train_seconds_per_iter(model, images, pids, camids=None, repeats: int = 3, warmup: int = 1) -> float:
    """Forward + loss + backward of one batch, timed on a copy (BN statistics of `model` stay untouched)."""
    model = copy.deepcopy(model).train()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(images, camids)
        sum(model.loss(out, pids).values()).backward()

    return _timed(step, repeats, warmup)


@torch.no_grad()
def inference_images_per_second(model, images, camids=None, repeats: int = 3, warmup: int = 1) -> float:
    model.eval()
    return images.shape[0] / _timed(lambda: model.embed(images, camids), repeats, warmup)


def cost_row(model, images, pids, camids=None, repeats: int = 3) -> dict:
    """One row of a cost table (Table VIII of QPM, the DPM/RGANet cost comparisons)."""
    return {
        "params (M)": count_parameters(model) / 1e6,
        "GFLOPs / image": inference_flops(model, images, camids) / 1e9,
        "train s / iter": train_seconds_per_iter(model, images, pids, camids, repeats),
        "inference ms / image": 1e3 / inference_images_per_second(model, images, camids, repeats),
    }
