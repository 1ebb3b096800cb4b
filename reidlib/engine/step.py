"""One optimisation step: the default forward -> loss -> sum -> backward -> step, and the context a
method's own `train_step` receives.

A method that optimises in an unusual way (DPM's two-step update) overrides

    def train_step(self, batch: Batch, optimizer, scaler, ctx: StepContext) -> dict[str, Tensor]

(`ReIDMethod.train_step` calls `default_train_step`). It must call `ctx.forward(batch)` rather than
`self(batch)` (under DistributedDataParallel only the wrapper synchronises gradients), run forward passes
inside `with ctx.autocast():`, step through the scaler (`scaler.scale(loss).backward()`,
`ctx.clip_grad(optimizer, scaler)`, `scaler.step(optimizer)`, `scaler.update()`) and return its named
loss terms (the engine logs them and checks them for NaN/inf on every rank; `ctx.check_finite(terms)`
checks earlier, e.g. before a backward pass). `ctx.epoch` / `ctx.step` tell where training is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reidlib.methods.base import Batch


def amp_dtype(device: torch.device) -> torch.dtype:
    """Autocast precision: float16 with a gradient scaler on CUDA; bfloat16 on CPU, which keeps float32's
    exponent range, so gradients cannot underflow and no scaler is needed."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def amp_available(device: torch.device) -> bool:
    """Whether `train.amp` pays off here: CUDA, or a CPU whose oneDNN has native bfloat16 kernels
    (AVX512-BF16 / AMX); elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the epoch, step and term."""


@dataclass
class StepContext:
    """What a training step needs besides the batch, optimiser and scaler."""

    method: nn.Module                    # the method itself (loss, param_groups, ...)
    forward: Callable[..., dict]         # the possibly DDP-wrapped module: call this for forward passes
    device: torch.device
    amp: bool                            # autocast active (train.amp where `amp_available`)
    grad_clip: float | None
    epoch: int                           # 1-based
    epochs: int
    step: int                            # 1-based within the epoch
    steps: int
    # Under DDP: True only when every rank's flag is True (one tiny all-reduce), so a NaN on one rank
    # stops all of them instead of leaving the others waiting in the gradient all-reduce.
    all_ranks: Callable[[bool], bool] = bool

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=amp_dtype(self.device), enabled=self.amp)

    def clip_grad(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        """Unscale and clip the global gradient norm to `grad_clip` (no-op when clipping is off)."""
        if self.grad_clip is None:
            return
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    def check_finite(self, terms: dict[str, Tensor], total: Tensor | None = None) -> None:
        """Raise NonFiniteLossError naming the first NaN/inf term (or the total), on every rank."""
        values = loss_values(terms)
        if total is not None:
            values["total"] = float(total.detach())
        self.check_values(values)

    def check_values(self, values: dict[str, float]) -> None:
        bad = next(((k, v) for k, v in values.items() if not math.isfinite(v)), None)
        if self.all_ranks(bad is None):
            return
        self._fail("a loss term on another rank is not finite" if bad is None
                   else f"loss term {bad[0]!r} is {bad[1]}")

    def _fail(self, what: str) -> None:
        raise NonFiniteLossError(
            f"{what} at epoch {self.epoch}/{self.epochs}, step {self.step}/{self.steps}. Lower train.lr, "
            "set train.grad_clip (e.g. 5.0), or check the term's inputs; the run folder keeps the checkpoint "
            "of the last finished epoch, and a changed config starts a new run."
        )


def loss_values(terms: dict[str, Tensor]) -> dict[str, float]:
    """Loss terms as Python floats, with a single device synchronisation."""
    if not terms:
        return {}
    stacked = torch.stack([t.detach().float().reshape(()) for t in terms.values()]).tolist()
    return dict(zip(terms, stacked, strict=True))


def default_train_step(batch: Batch, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                       ctx: StepContext) -> dict[str, Tensor]:
    """forward -> loss terms -> their sum -> backward -> (clip) -> step."""
    with ctx.autocast():
        outputs = ctx.forward(batch)
        terms = ctx.method.loss(outputs, batch)
    if not terms:
        raise ValueError(f"{type(ctx.method).__name__}.loss() returned no loss terms")
    total = sum(terms.values())
    ctx.check_finite(terms, total)  # before backward: a NaN must not reach the weights
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    ctx.clip_grad(optimizer, scaler)
    scaler.step(optimizer)
    scaler.update()
    return terms


__all__ = ["NonFiniteLossError", "StepContext", "amp_available", "amp_dtype", "default_train_step",
           "loss_values"]
