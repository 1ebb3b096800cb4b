"""PCB: Sun et al., "Beyond Part Models: Person Retrieval with Refined Part Pooling (and a Strong
Convolutional Baseline)", ECCV 2018 (the uniform-partition baseline, without RPP).

Sec. 3.1, as the structure of PCB:
- backbone: ResNet-50 without its global pooling and classifier, the last down-sampling removed, so a
  384 x 128 image gives a 24 x 8 tensor T;
- T is split into p = 6 horizontal stripes, each average pooled into a column vector g_k [C];
- a 1 x 1 convolution reduces each g_k to h_k [256] (followed by BN and ReLU as in the released code);
- p classifiers (FC + softmax), one per stripe, none shared; training minimises the sum of the p
  cross-entropy losses;
- test: the p vectors concatenated, G = [g_1 .. g_p] or H = [h_1 .. h_p]. The paper reports G "achieves
  slightly higher accuracy, but at a larger computation cost": `test_feature` picks g (default) or h.
Matching (released code): each part vector is L2-normalised, the p of them concatenated and compared by
the Euclidean distance. The embedding carries the normalised parts [N, p, D] and their concatenation
as `global_feat`, so `distance` is the base class's Euclidean distance on `global_feat`.

Choices where the paper is silent, taken from the released code (github.com/syfafterzy/PCB_RPP_for_reID):
dropout 0.5 on g before the reduction, the reduction shared by the stripes (one conv over the p x 1
map; `shared_reduction: false` gives one per stripe), classifiers with bias and N(0, 0.001^2) weights.
Sec. 4.2's learning rates (0.1 for new layers, 0.1x for the pretrained backbone) are `param_groups`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import check_range
from reidlib.losses import cross_entropy_label_smooth
from reidlib.methods import METHODS
from reidlib.methods.base import Batch, DataInfo, Embedding, PartLayout, ReIDMethod
from reidlib.methods.global_baseline import scaled_param_groups
from reidlib.methods.parts import PartLinear, stripe_maps, stripe_pool
from reidlib.models import build_backbone
from reidlib.models.heads import CLASSIFIER_INIT_STD


@dataclass
class PCBConfig:
    """PCB's model settings (Sec. 3.1) and the released code's choices."""

    backbone: str = "resnet50"            # last stride 1 (resnet_small / resnet_tiny in demo / ci)
    pretrained: str | None = None         # backbone weights: a file, a folder or "default" (never downloaded)
    num_parts: int = 6                    # p (Sec. 3.1; Fig. 6 sweeps it)
    reduced_dim: int = 256                # dimension of h_k (Sec. 3.1)
    shared_reduction: bool = True         # one 1x1 conv for all stripes (released code) or one per stripe
    dropout: float = 0.5                  # on g_k before the reduction (released code; 0 turns it off)
    test_feature: Literal["g", "h"] = "g"  # G (pooled, before reduction) or H (reduced), Sec. 3.1
    label_smoothing: float = 0.0          # PCB uses plain cross-entropy
    backbone_lr_factor: float = 0.1       # Sec. 4.2: pretrained layers train at 0.1 x the base rate

    def validate(self) -> None:
        for name in ("num_parts", "reduced_dim"):
            check_range(f"model.{name}", getattr(self, name), 1)
        check_range("model.dropout", self.dropout, 0.0, 0.999)
        check_range("model.label_smoothing", self.label_smoothing, 0.0, 0.999)
        check_range("model.backbone_lr_factor", self.backbone_lr_factor, 0.0)


class StripeReduction(nn.Module):
    """g_k -> h_k: 1x1 conv (no bias), BN, ReLU. [N, K, C] -> [N, K, d]. A shared conv has a shared BN
    (statistics over images and stripes, BatchNorm2d on the K x 1 map); per-stripe convs have one BN per
    stripe."""

    def __init__(self, num_parts: int, channels: int, dim: int, shared: bool):
        super().__init__()
        self.shared = shared
        self.conv = PartLinear(num_parts, channels, dim, shared=shared, bias=False)
        self.bn = nn.BatchNorm1d(dim if shared else num_parts * dim)

    def forward(self, g: Tensor) -> Tensor:
        h = self.conv(g)                                                  # [N, K, d]
        if self.shared:
            h = self.bn(h.transpose(1, 2)).transpose(1, 2)                # BN over (N, K) per channel
        else:
            h = self.bn(h.flatten(1)).view_as(h)
        return F.relu(h)


@METHODS.register("pcb")
class PCB(ReIDMethod):
    """ResNet -> p stripes -> (dropout, 1x1 conv, BN, ReLU) -> p classifiers; loss: sum of p CEs."""

    config_class = PCBConfig

    def __init__(self, cfg: PCBConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
        channels, k = self.backbone.out_channels, cfg.num_parts
        self.dropout = nn.Dropout(cfg.dropout)
        self.reduction = StripeReduction(k, channels, cfg.reduced_dim, cfg.shared_reduction)
        self.classifier = PartLinear(k, cfg.reduced_dim, info.num_classes, init_std=CLASSIFIER_INIT_STD)

    def stripes(self, images: Tensor) -> Tensor:
        """g: the p stripe-pooled column vectors of the backbone map, [N, p, C]."""
        return stripe_pool(self.backbone(images), self.cfg.num_parts)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        g = self.stripes(batch.images)                                          # [N, p, C]
        h = self.reduction(self.dropout(g))                               # [N, p, d]
        return {"part_pooled": g, "part_feats": h, "part_logits": self.classifier(h)}  # logits [N, p, M]

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits, eps = outputs["part_logits"], self.cfg.label_smoothing   # [N, p, M]
        return {"id": sum(cross_entropy_label_smooth(logits[:, k], batch.pids, eps)  # summed over stripes
                          for k in range(logits.shape[1]))}

    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        """parts: the normalised g_k (or h_k) [N, p, D]; global_feat: their concatenation [N, p * D]."""
        g = self.stripes(batch.images)
        parts = g if self.cfg.test_feature == "g" else self.reduction(g)
        parts = F.normalize(parts, dim=2)
        return Embedding(global_feat=parts.flatten(1), parts=parts)

    def param_groups(self, base_lr: float) -> list[dict]:
        factor = self.cfg.backbone_lr_factor
        return scaled_param_groups(self, base_lr, lambda name: factor if name.startswith("backbone.") else 1)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """activation [N, h, w] (channel L2 norm of T) and part_maps [N, p, h, w] (the p stripes)."""
        fmap = self.backbone(batch.images)
        n, _, h, w = fmap.shape
        maps = stripe_maps(self.cfg.num_parts, h, w, fmap.device).expand(n, -1, -1, -1)
        return {"activation": fmap.norm(dim=1), "part_maps": maps}

    def part_layout(self) -> PartLayout:
        return PartLayout("stripes", self.cfg.num_parts)


__all__ = ["PCB", "PCBConfig", "StripeReduction"]
