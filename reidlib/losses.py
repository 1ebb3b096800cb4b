"""Identity and metric losses shared by the methods.

- cross-entropy with label smoothing (Szegedy et al. 2016, as in BoT): targets (1 - eps) * onehot + eps / C;
- batch-hard triplet loss (Hermans et al. 2017): for every anchor the farthest positive and the closest
  negative in the batch; hard margin max(0, d_ap - d_an + margin) or, with margin=None, the soft margin
  log(1 + exp(d_ap - d_an)). It takes either features or a precomputed [N, N] distance matrix, so
  part-based and visibility/quality-weighted distances reuse the same mining.
Every hyper-parameter is an argument; configs supply the papers' values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.distance import pairwise


def cross_entropy_label_smooth(logits: Tensor, targets: Tensor, epsilon: float) -> Tensor:
    """Mean over the batch of -sum_c q_c log p_c with q = (1 - eps) onehot(y) + eps / C.

    logits [N, C], targets [N] (class indices)."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
    return F.cross_entropy(logits, targets, label_smoothing=epsilon)


class CrossEntropyLabelSmooth(nn.Module):
    def __init__(self, epsilon: float):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return cross_entropy_label_smooth(logits, targets, self.epsilon)


@dataclass
class HardPairs:
    """Batch-hard mining result, one entry per anchor."""

    dist_ap: Tensor  # [N] distance to the farthest positive (the anchor itself when it has no other)
    dist_an: Tensor  # [N] distance to the closest negative (+inf when the batch has none)
    valid: Tensor  # [N] bool: the anchor has at least one negative


def hard_example_mining(dist: Tensor, labels: Tensor) -> HardPairs:
    """dist [N, N], labels [N] -> farthest positive and closest negative of every row."""
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or dist.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected a square [N, N] distance matrix and N labels, got {tuple(dist.shape)} and "
            f"{tuple(labels.shape)}"
        )
    same = labels[:, None] == labels[None, :]  # [N, N], diagonal included: d(a, a) = 0 never wins the max
    dist_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    dist_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return HardPairs(dist_ap, dist_an, (~same).any(dim=1))


def batch_hard_triplet_loss(
    labels: Tensor,
    margin: float | None,
    *,
    features: Tensor | None = None,
    dist: Tensor | None = None,
    metric: str = "euclidean",
    average: str = "anchors",
    return_pairs: bool = False,
):
    """Batch-hard triplet loss over the anchors that have a negative in the batch.

    labels [N]; exactly one of features [N, D] (distances by `metric`: 'euclidean' or 'cosine') or
    dist [N, N] (any precomputed distance). margin: float -> hard margin relu(d_ap - d_an + margin);
    None -> soft margin softplus(d_ap - d_an).
    average: "anchors" -> mean over those anchors (Hermans et al.); "violating" -> sum divided by the
    number of triplets that violate the margin, 1 when none does (QPM Eqs. 3 and 13).
    Returns the loss, or (loss, HardPairs) with return_pairs=True."""
    if (features is None) == (dist is None):
        raise ValueError("give exactly one of features=[N, D] or dist=[N, N]")
    if margin is not None and margin < 0:
        raise ValueError(f"triplet margin must be >= 0 or None (soft margin), got {margin}")
    if average not in ("anchors", "violating"):
        raise ValueError(f"average={average!r}; use 'anchors' or 'violating'")
    if dist is None:
        dist = pairwise(features, features, metric)  # [N, N]
    pairs = hard_example_mining(dist, labels)
    if pairs.valid.any():
        gap = pairs.dist_ap[pairs.valid] - pairs.dist_an[pairs.valid]  # [N_valid]
        per_anchor = F.softplus(gap) if margin is None else F.relu(gap + margin)
        if average == "anchors":
            loss = per_anchor.mean()
        else:
            loss = per_anchor.sum() / (per_anchor > 0).sum().clamp_min(1)
    else:  # one identity only: nothing to push apart; keep the graph so backward() still works
        loss = dist.sum() * 0.0
    return (loss, pairs) if return_pairs else loss


class TripletLoss(nn.Module):
    """Module form of `batch_hard_triplet_loss`: forward(features [N, D], labels) or
    forward(labels=..., dist=[N, N])."""

    def __init__(self, margin: float | None, metric: str = "euclidean"):
        super().__init__()
        self.margin, self.metric = margin, metric

    def forward(
        self, features: Tensor | None = None, labels: Tensor | None = None, dist: Tensor | None = None
    ) -> Tensor:
        if labels is None:
            raise ValueError("TripletLoss needs labels")
        return batch_hard_triplet_loss(labels, self.margin, features=features, dist=dist, metric=self.metric)


__all__ = [
    "CrossEntropyLabelSmooth",
    "HardPairs",
    "TripletLoss",
    "batch_hard_triplet_loss",
    "cross_entropy_label_smooth",
    "hard_example_mining",
]
