"""Pairwise distances, computed in chunks so a [Q, G] matrix of Occluded-Duke size stays bounded."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def euclidean(a: Tensor, b: Tensor, squared: bool = False) -> Tensor:
    """[N, D] x [M, D] -> [N, M] Euclidean distance (clamped before sqrt for stable gradients)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2.0 * a @ b.t()
    d = d.clamp_min(0.0)
    return d if squared else d.clamp_min(1e-12).sqrt()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """[N, D] x [M, D] -> [N, M] cosine distance 1 - cos(a, b)."""
    return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"euclidean": euclidean, "cosine": cosine}


def pairwise(a: Tensor, b: Tensor, metric: str = "euclidean") -> Tensor:
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(METRICS)}") from None
    return fn(a, b)


def chunked(fn: Callable[[slice], Tensor], n_rows: int, chunk: int = 512) -> Tensor:
    """Stack `fn(rows)` over row slices of size `chunk`: the [Q, G] result is built one block at a time
    so intermediate tensors (e.g. [chunk, G, K] part distances) never exist for all queries at once."""
    blocks = [fn(slice(i, min(i + chunk, n_rows))) for i in range(0, n_rows, chunk)]
    return torch.cat(blocks, 0) if blocks else torch.empty(0)
