"""Embedding heads: BNNeck and identity classifiers (linear, ArcFace).

BNNeck and the linear classifier follow BoT (Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-identification", CVPRW 2019): the triplet loss sees the feature before the BatchNorm, the
classifier the feature after it; the BN bias is frozen at zero so the normalised features stay centred.
ArcFace (Deng et al., CVPR 2019) is DPM's classifier for its masked branch, Eq. (7) of the DPM paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLASSIFIER_INIT_STD = 0.001  # BoT: identity classifier weights ~ N(0, 0.001^2)


def weights_init_kaiming(m: nn.Module) -> None:
    """BoT's init: Kaiming for linear (fan-out) and conv (fan-in) weights, zero biases, BN weight 1."""
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def weights_init_classifier(m: nn.Module, std: float = CLASSIFIER_INIT_STD) -> None:
    """BoT's classifier init: weights ~ N(0, std^2), zero bias."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class BNNeck(nn.Module):
    """BatchNorm1d with its bias frozen at 0: [N, D] -> [N, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.apply(weights_init_kaiming)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"BNNeck expects [N, D] features, got shape {tuple(x.shape)}; use one BNNeck per part"
            )
        return self.bn(x)


class LinearClassifier(nn.Module):
    """Identity classifier without bias (BoT): [N, D] -> logits [N, C]."""

    def __init__(self, dim: int, num_classes: int, init_std: float = CLASSIFIER_INIT_STD):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes, bias=False)
        weights_init_classifier(self.fc, init_std)

    @property
    def weight(self) -> Tensor:  # [C, D]: the class prototypes (DPM reads them)
        return self.fc.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class ArcFace(nn.Module):
    """Additive angular margin classifier: logits s * cos(theta_j + m [j = y]).   DPM Eq. (7)

    forward(x [N, D], labels [N] or None) -> logits [N, C]; without labels (inference) no margin is
    added, i.e. s * cos(theta). Feed the logits to a (label-smoothed) cross-entropy.

    scale:        s (DPM: 30)
    margin:       m, in radians (DPM: 0.5 on Occluded-Duke, 0.3 on Occluded-REID)
    easy_margin:  add the margin only where cos(theta) > 0; otherwise (standard ArcFace) past
                  theta > pi - m, where cos(theta + m) stops decreasing, use the CosFace-like
                  fallback cos(theta) - m sin(m), which keeps the target logit monotonic in theta
    eps:          clamp for sin(theta) = sqrt(1 - cos^2) so its gradient stays finite at |cos| = 1
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        scale: float,
        margin: float,
        easy_margin: bool = False,
        eps: float = 1e-7,
    ):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"ArcFace scale must be > 0, got {scale}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin must be in [0, pi/2) radians, got {margin}")
        self.scale, self.margin, self.easy_margin, self.eps = scale, margin, easy_margin, eps
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, x: Tensor) -> Tensor:
        """cos(theta) between L2-normalised features and class weights, [N, C]."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = self.cosine(x)  # [N, C]
        if labels is None:
            return self.scale * cos
        return angular_margin_logits(cos, labels, self.scale, self.margin, self.easy_margin, self.eps)


def angular_margin_logits(cos: Tensor, labels: Tensor, scale: float, margin: float, easy_margin: bool = False,
                          eps: float = 1e-7) -> Tensor:
    """ArcFace's logits from cosines cos [N, C] (any cosine-like scores in [-1, 1], e.g. DPM's masked
    prototypes): s * cos(theta_y + m) for the true class, s * cos(theta_j) elsewhere (see `ArcFace`)."""
    sin = (1.0 - cos * cos).clamp_min(eps).sqrt()
    cos_m = cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
    if easy_margin:
        cos_m = torch.where(cos > 0, cos_m, cos)
    else:
        threshold = math.cos(math.pi - margin)  # theta + m > pi beyond this
        cos_m = torch.where(cos > threshold, cos_m, cos - margin * math.sin(margin))
    target = F.one_hot(labels.long(), cos.shape[1]).bool()
    return scale * torch.where(target, cos_m, cos)
