"""The part-model toolkit: what PCB, QPM and the body-part methods (BPBreID, PAB-ReID, BPSEMA-ReID, RGANet)
share, written once.

- pooling: `stripe_pool` (K horizontal stripes, PCB / QPM's Region Average Pooling), `stripe_maps` (the
  same stripes as [K, h, w] assignment maps, for figures and visibility truth) and `masked_average_pool`
  (soft part maps, BPBreID / RGANet Eq. 2);
- layers: `PartLinear` (one linear map per part, or one shared by all: PCB's reduction, QPM's f_k and
  quality convs, per-part classifiers), `conv1x1` (1x1 conv with optional BN and ReLU);
- matching: `weighted_part_distance` (the visibility-, quality- or confidence-weighted mean of part
  distances: QPM Eq. 2, BPBreID's visibility-aware distance) and `part_triplet_loss` (batch-hard triplet
  on that distance).
Shapes: N images, K parts, C channels, h x w feature map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.losses import batch_hard_triplet_loss


# ------------------------------------------------------------------------------------------ pooling
def _check_height(height: int, num_parts: int) -> None:
    if height < num_parts:
        raise ValueError(
            f"feature map height {height} is smaller than the number of stripes K={num_parts}; use taller "
            f"images (a stride-16 backbone needs height >= {16 * num_parts}) or fewer parts "
            "(model.num_parts)")


def stripe_pool(fmap: Tensor, num_parts: int) -> Tensor:
    """Average pooling over K horizontal stripes: [N, C, h, w] -> [N, K, C].

    Uniform stripes when K divides h (24 x 8 maps at 384 x 128, 6 x 3 at 96 x 48); otherwise adaptive
    pooling, whose bins overlap by one row (`stripe_maps` draws the same bins)."""
    _check_height(fmap.shape[2], num_parts)
    return F.adaptive_avg_pool2d(fmap, (num_parts, 1)).flatten(2).transpose(1, 2)


def stripe_bounds(height: int, num_parts: int) -> list[tuple[int, int]]:
    """[start, end) rows of each of the K stripes of `stripe_pool` (adaptive pooling's bins)."""
    _check_height(height, num_parts)
    return [(math.floor(k * height / num_parts), math.ceil((k + 1) * height / num_parts))
            for k in range(num_parts)]


def stripe_maps(num_parts: int, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """The stripes of `stripe_pool` as hard assignment maps [K, h, w] (1 inside stripe k)."""
    maps = torch.zeros(num_parts, height, width, device=device)
    for k, (start, end) in enumerate(stripe_bounds(height, num_parts)):
        maps[k, start:end] = 1.0
    return maps


def masked_average_pool(fmap: Tensor, maps: Tensor, eps: float = 1e-6) -> Tensor:
    """Weighted average of the feature map under each part map: [N, C, h, w], [N, K, h, w] -> [N, K, C].

    f_k = sum_xy m_k(x, y) F(x, y) / sum_xy m_k(x, y) (RGANet Eq. 2; BPBreID's part pooling)."""
    if maps.shape[-2:] != fmap.shape[-2:]:
        maps = F.interpolate(maps, size=fmap.shape[-2:], mode="bilinear", align_corners=False)
    weighted = torch.einsum("nkhw,nchw->nkc", maps, fmap)                 # [N, K, C]
    return weighted / maps.sum((2, 3)).unsqueeze(-1).clamp_min(eps)


# ------------------------------------------------------------------------------------------ layers
class PartLinear(nn.Module):
    """A linear map per part, [N, K, I] -> [N, K, O] (a 1x1 conv per part); with shared=True one map
    serves all K parts (a 1x1 conv over the K x 1 stripe map).

    init_std None: Kaiming normal with the fan-out of one part's map (std sqrt(2 / O)), as the released
    PCB code's conv; a number: N(0, init_std^2) (PCB's classifiers: 0.001). Biases start at zero."""

    def __init__(self, num_parts: int, in_features: int, out_features: int, shared: bool = False,
                 bias: bool = True, init_std: float | None = None):
        super().__init__()
        self.num_parts = num_parts
        copies = 1 if shared else num_parts
        self.weight = nn.Parameter(torch.empty(copies, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(copies, out_features)) if bias else None
        std = math.sqrt(2.0 / out_features) if init_std is None else init_std
        for w in self.weight:  # one part at a time: the random stream does not depend on `shared`
            nn.init.normal_(w, std=std)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.expand(self.num_parts, -1, -1)              # [K, O, I]
        out = torch.einsum("nki,koi->nko", x, weight)
        if self.bias is not None:
            out = out + self.bias.expand(self.num_parts, -1)
        return out


def conv1x1(cin: int, cout: int, bn: bool = True, relu: bool = True) -> nn.Sequential:
    """1x1 conv [-> BN] [-> ReLU] on a feature map; the conv has a bias only without BN."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------ matching
def weighted_unit_parts(parts: Tensor, weights: Tensor) -> Tensor:
    """w_k * f_k / ||f_k||, flattened: [N, K, D], [N, K] -> [N, K*D]."""
    return (F.normalize(parts, dim=-1) * weights.unsqueeze(-1)).flatten(1)


def weighted_part_distance(parts_a: Tensor, w_a: Tensor, parts_b: Tensor, w_b: Tensor,
                           metric: str = "cosine", eps: float = 1e-12,
                           unit_b: Tensor | None = None) -> Tensor:
    """D[a, b] = sum_k w_k^a w_k^b d_k(a, b) / sum_k w_k^a w_k^b; parts [A, K, D] and [B, K, D], weights
    [A, K] and [B, K] -> [A, B].

    The weights are per-part visibility (BPBreID, binary or soft), quality (QPM Eq. 2) or confidence; with
    all weights 1 it is the plain mean of the K part distances. d_k is the cosine distance of part k
    (`metric="cosine"`) or the Euclidean distance (`"euclidean"`). Pairs with no part weighted on both
    sides get distance 0 / eps = 0 for cosine; callers that can meet them should mask them.

    Cosine: sum_k w w (1 - cos_k) = sum_k w w - <w*f^, w*f^>, so the sum is one [A, K*D] x [K*D, B]
    product and no [A, B, K] tensor is built; `unit_b` may carry `weighted_unit_parts(parts_b, w_b)`
    precomputed (a gallery compared chunk by chunk). Euclidean: K batched distance matrices."""
    total = w_a @ w_b.t()                                              # sum_k w w   [A, B]
    if metric == "cosine":
        if unit_b is None:
            unit_b = weighted_unit_parts(parts_b, w_b)
        weighted = total - weighted_unit_parts(parts_a, w_a) @ unit_b.t()  # sum_k w w d_k
    elif metric == "euclidean":
        d = torch.cdist(parts_a.transpose(0, 1), parts_b.transpose(0, 1))  # [K, A, B]
        weighted = torch.einsum("ak,kab,bk->ab", w_a, d, w_b)
    else:
        raise ValueError(f"unknown part metric {metric!r}; use 'cosine' or 'euclidean'")
    return weighted / total.clamp_min(eps)


def part_triplet_loss(parts: Tensor, pids: Tensor, margin: float | None, weights: Tensor | None = None,
                      metric: str = "cosine", average: str = "anchors") -> Tensor:
    """Batch-hard triplet loss on `weighted_part_distance` within the batch: parts [N, K, D], pids [N],
    weights [N, K] (None: every part counts, the part-averaged distance of BPBreID / PAB-ReID).
    `average`: "anchors" (mean over anchors) or "violating" (QPM Eq. 3: sum over the number of triplets
    that violate the margin)."""
    if weights is None:
        weights = parts.new_ones(parts.shape[:2])
    dist = weighted_part_distance(parts, weights, parts, weights, metric)
    return batch_hard_triplet_loss(pids, margin, dist=dist, average=average)


__all__ = [
    "PartLinear", "conv1x1", "masked_average_pool", "part_triplet_loss", "stripe_bounds", "stripe_maps",
    "stripe_pool", "weighted_part_distance", "weighted_unit_parts",
]
