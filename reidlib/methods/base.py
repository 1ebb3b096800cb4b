"""The method contract every paper's model implements (see docs/design.md, "Method contract")."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn

from reidlib.distance import chunked, pairwise


@dataclass
class Embedding:
    """What a method extracts from images for matching.

    global_feat: [N, D]       a holistic descriptor (may be None for pure part models)
    parts:       [N, K, Dp]   part descriptors (None for global models)
    weights:     [N, K]       per-part visibility / quality / confidence in [0, 1]
    extras:      anything else the method's `distance` needs, each with N as its first dimension
    """

    global_feat: Tensor | None = None
    parts: Tensor | None = None
    weights: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        for t in self._tensors():
            return t.shape[0]
        return 0

    def _tensors(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                yield v
        yield from self.extras.values()

    def map(self, fn) -> Embedding:
        """Apply `fn` to every tensor (slicing, `.to(device)`, `.cpu()`)."""
        return Embedding(
            global_feat=None if self.global_feat is None else fn(self.global_feat),
            parts=None if self.parts is None else fn(self.parts),
            weights=None if self.weights is None else fn(self.weights),
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def __getitem__(self, index) -> Embedding:
        return self.map(lambda t: t[index])

    def to(self, device) -> Embedding:
        return self.map(lambda t: t.to(device))

    @staticmethod
    def cat(items: list[Embedding]) -> Embedding:
        first = items[0]

        def join(get):
            return None if get(first) is None else torch.cat([get(e) for e in items], 0)

        return Embedding(
            global_feat=join(lambda e: e.global_feat),
            parts=join(lambda e: e.parts),
            weights=join(lambda e: e.weights),
            extras={k: torch.cat([e.extras[k] for e in items], 0) for k in first.extras},
        )


class ReIDMethod(nn.Module):
    """Base class. Subclasses set `config_class` and implement forward/loss/embed (and usually distance,
    explain). The default `distance` compares global features with `self.metric`."""

    config_class: type = object
    metric: str = "euclidean"
    distance_chunk: int = 512

    def forward(self, images: Tensor, camids: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Tensor], pids: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, images: Tensor, camids: Tensor | None = None) -> Embedding:
        raise NotImplementedError

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """[Q, G] distance with the paper's matching rule; default: global features, `self.metric`."""
        g = gallery.global_feat
        return chunked(lambda rows: pairwise(query.global_feat[rows], g, self.metric), len(query),
                       self.distance_chunk)

    @torch.no_grad()
    def explain(self, images: Tensor, camids: Tensor | None = None) -> dict[str, Tensor]:
        """Maps and scores for the paper's figures (attention [N, K, H, W], scores [N, K], ...)."""
        return {}

    def param_groups(self, base_lr: float) -> list[dict]:
        """Parameter groups for the optimiser; override for per-module learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": base_lr}]
