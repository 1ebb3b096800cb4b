"""Multi-process training with `torchrun` (one process per GPU, NCCL) or on CPU with gloo.

`train()` works unchanged under torchrun: it reads RANK / WORLD_SIZE / LOCAL_RANK from the
environment, joins (or creates) the process group, wraps the method in DistributedDataParallel and
shards the identity sampler with `build_train_loader(..., rank, world_size)`. Rank 0 alone writes the
run folder and evaluates (the model is identical on every rank, so evaluating on one rank gives the
same numbers as gathering features from all; the others wait at a barrier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """The process's place in a torchrun / spawn job (single process when WORLD_SIZE is unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return DistContext(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def resolve_device(device: str | torch.device, ctx: DistContext) -> torch.device:
    """"auto": this process's CUDA device when CUDA is present, else the CPU."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_process_group(ctx: DistContext, device: torch.device) -> bool:
    """Join the job's process group (NCCL on CUDA, gloo on CPU) unless one exists; returns True when
    this call created it (so the caller also destroys it)."""
    if not ctx.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={ctx.world_size} but {missing} unset: launch with torchrun, or set "
                           "MASTER_ADDR=127.0.0.1 and a free MASTER_PORT for every process")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            rank=ctx.rank, world_size=ctx.world_size)
    return True


def wrap(method: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `method` in a multi-process job (rank 0's weights are broadcast
    on construction), `method` itself otherwise."""
    if not ctx.enabled:
        return method
    ids = [device.index] if device.type == "cuda" else None
    # Ablations switch heads off and some methods skip branches in some steps: DDP then needs
    # find_unused_parameters (one extra autograd-graph traversal per step). A method whose every
    # parameter always gets a gradient may set `ddp_find_unused_parameters = False` to save it.
    find_unused = getattr(method, "ddp_find_unused_parameters", True)
    return nn.parallel.DistributedDataParallel(method, device_ids=ids, find_unused_parameters=find_unused)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Average of a dict of floats over ranks (same keys everywhere), for logging."""
    if not ctx.enabled or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / ctx.world_size).tolist(), strict=True))


def sum_over_ranks(value: float, ctx: DistContext, device: torch.device) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def all_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True when `flag` is True on every rank."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sync_buffers(method: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: DDP broadcasts them at the
    start of each forward, so after the last step each rank still holds its own; afterwards every rank
    holds exactly the model rank 0 saves."""
    if not ctx.enabled:
        return
    for buf in method.buffers():
        dist.broadcast(buf, src=0)


__all__ = ["DistContext", "env_context", "resolve_device", "init_process_group", "wrap", "barrier",
           "broadcast_object", "all_gather_object", "mean_over_ranks", "sum_over_ranks", "all_true",
           "sync_buffers"]
