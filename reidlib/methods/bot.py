"""BoT: Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019.

Sec. 2 (standard baseline) and Sec. 3 (tricks), as the final "strong baseline":
- backbone: ResNet-50 with the last stride set to 1 (Sec. 3.4), global average pooling -> f_t [N, 2048];
- BNNeck (Sec. 3.5): f_i = BN(f_t); the bias-free ID classifier sees f_i, the triplet loss f_t;
- ID loss: cross-entropy with label smoothing eps = 0.1 (Sec. 3.3); batch-hard triplet loss, margin
  0.3 (Sec. 2); optional center loss with weight beta = 0.0005 (Sec. 3.6; off unless
  `center_loss_weight` > 0). Total: L = L_ID + L_Triplet + beta L_C;
- test: f_i (after BNNeck) compared by cosine distance (Sec. 3.5), i.e. L2-normalised f_i with the
  Euclidean distance (`feat_norm`), which ranks the gallery identically.
The schedule (warm-up, Adam, milestones) and augmentation live in reidlib/configs/bot.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reidlib.config import ConfigError, check_range
from reidlib.methods import METHODS
from reidlib.methods.base import Batch, DataInfo
from reidlib.methods.global_baseline import CenterLoss, GlobalBaseline, GlobalLossConfig
from reidlib.models import build_backbone


@dataclass
class BoTConfig(GlobalLossConfig):
    """BoT's model and loss settings (the GlobalLossConfig defaults are BoT's)."""

    backbone: str = "resnet50"            # a CNN of reidlib.models (resnet_small / resnet_tiny in demo / ci)
    pretrained: str | None = None         # backbone weights: a file, a folder or "default" (never downloaded)
    last_stride: int = 1                  # Sec. 3.4
    center_loss_weight: float = 0.0       # beta of Sec. 3.6 (0.0005 in the paper); 0 turns the term off
    center_lr: float = 0.5                # SGD step of the class centres (BoT's released code)

    def validate(self) -> None:
        super().validate()
        if self.last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride={self.last_stride!r}; use 1 (BoT) or 2 (ImageNet ResNet)")
        check_range("model.center_loss_weight", self.center_loss_weight, 0.0)
        check_range("model.center_lr", self.center_lr, 0.0)


@METHODS.register("bot")
class BoT(GlobalBaseline):
    """ResNet -> GAP -> BNNeck -> ID classifier; losses: id, triplet (and center if enabled)."""

    config_class = BoTConfig

    def __init__(self, cfg: BoTConfig, info: DataInfo):
        backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, last_stride=cfg.last_stride)
        super().__init__(cfg, info, {"main": backbone.out_channels})
        self.backbone = backbone
        self.center_loss = (CenterLoss(info.num_classes, backbone.out_channels, cfg.center_lr)
                            if cfg.center_loss_weight > 0 else None)

    def features(self, batch: Batch) -> dict[str, Tensor]:
        return {"main": self.backbone(batch.images).mean(dim=(2, 3))}    # GAP: f_t [N, C]

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        terms = super().loss(outputs, batch)                              # id, triplet
        if self.center_loss is not None:                                  # Sec. 3.6: + beta L_C
            terms["center"] = self.cfg.center_loss_weight * self.center_loss(outputs["feat"], batch.pids)
        return terms

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """activation [N, h, w]: channel-wise L2 norm of the last feature map (where GAP draws from)."""
        return {"activation": self.backbone(batch.images).norm(dim=1)}


__all__ = ["BoT", "BoTConfig"]
