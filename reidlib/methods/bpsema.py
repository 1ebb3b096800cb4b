"""BPSEMA-ReID: BPBreID with a dynamic feature refinement module and EMA attention.

Paper: Zheng Li, Yang Xu, "Research on Occluded Person Re-identification Algorithm Based on Body Part
Features", manuscript received 21 March 2025, revised 29 June 2025 (the text names no venue). No code was
released; the paper builds on BPBreID's code (Torchreid), so `BPSEMA` subclasses `BPBreID`
(reidlib/methods/bpbreid.py) and replaces two pieces. Section II:
- Body part attention (Eq. 3, M = softmax(G P^T)), the pooling into global, foreground and part
  embeddings (Eq. 2), the identity classifiers (Eq. 6) and the GiLt loss with the part distances combined
  by their mean (Eq. 15) into a batch-hard triplet with a hard (Eq. 16) or soft (Eq. 17) margin: BPBreID's.
- EMA attention in the part attention module (Eq. 4): the map goes through `ema` before the pixel
  classifier. Eq. (4) describes an exponential moving average of feature maps, F_ema = alpha F + (1 - alpha)
  F_ema_prev; reference [34] and the module's name are those of Efficient Multi-scale Attention (Ouyang et
  al., ICASSP 2023), the usual meaning of "EMA attention". Both are implemented: "multiscale"
  (`EfficientMultiScaleAttention`, the default: an attention module acting on each image's own map) and
  "moving_average" (`FeatureMovingAverage`, Eq. 4 literally: a running average over training batches,
  which mixes other images' maps into each image's attention).
- Dynamic feature refinement module in the dimension-reduction layer (Eqs. 7-14, Fig. 4): 1x1 conv, BN,
  ReLU, SE channel attention with two FC layers and a sigmoid, and a residual connection
  (`DynamicFeatureRefinement`). It replaces BPBreID's reduction of the map before pooling (code:
  BeforePoolingDimReduceLayer, conv-BN-ReLU), which is Table II's D1. Eq. (14) adds the input x (C_in
  channels) to the refined map (C_out): with C_in != C_out the shortcut is a 1x1 conv + BN projection
  (ResNet's option B), the identity otherwise (`shortcut`).

Ambiguities and the choices made (each a `BPSEMAConfig` switch):
- Table II: D1 = BPBreID with the map reduced before pooling (conv-BN-ReLU), D2 = + residual, D3 = +
  residual + SE, D4 = D3 + EMA (BPSEMA). "D1 represents the original results of BPBreID": our D1 is
  trained here under the same protocol, not copied.
- SE's reduction ratio is not stated: 16, SE's own default (`se_reduction`). EMA's group count is not
  stated: 32, as in Ouyang et al.'s code, capped so that each group keeps a channel (`ema_groups`); the
  moving average's alpha is not stated: 0.9 (`ema_decay`).
- K = 5 parts on holistic and 8 on occluded data sets (Sec. III-B); the demo uses 5 (see the notebook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

from reidlib.config import ConfigError, check_range
from reidlib.methods import METHODS
from reidlib.methods.base import Ablation, DataInfo
from reidlib.methods.bpbreid import BPBreID, BPBreIDConfig, DimReduceAt, part_probabilities

EmaKind = Literal["none", "multiscale", "moving_average"]


@dataclass
class BPSEMAConfig(BPBreIDConfig):
    """BPSEMA-ReID hyper-parameters (Sec. II, III-B) and Table II's switches, on top of BPBreID's."""

    dim_reduce_at: DimReduceAt = "before_pooling"  # Sec. II-C: the module sits in the reduction layer
    residual: bool = True                 # Eq. (14); False: Table II's D1
    se: bool = True                       # Eqs. (11)-(13); False: D1, D2
    se_reduction: int = 16                # FC bottleneck of Eq. (12): not stated (SE's default)
    ema: EmaKind = "multiscale"           # Eq. (4) / [34]; "none": D1-D3
    ema_groups: int = 32                  # Efficient Multi-scale Attention's channel groups (its code's 32)
    ema_decay: float = 0.9                # alpha of Eq. (4), "moving_average" only: not stated

    def validate(self) -> None:
        super().validate()
        if self.dim_reduce is None or self.dim_reduce_at != "before_pooling":
            raise ConfigError("BPSEMA-ReID refines the map in the reduction layer before pooling: set "
                              "model.dim_reduce (e.g. 512) and model.dim_reduce_at: before_pooling")
        check_range("model.se_reduction", self.se_reduction, 1)
        check_range("model.ema_groups", self.ema_groups, 1)
        check_range("model.ema_decay", self.ema_decay, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Dynamic feature refinement module, Sec. II-C

class DynamicFeatureRefinement(nn.Module):
    """Eqs. (7)-(14): x [N, C_in, h, w] -> x_out [N, C_out, h, w]. x' = Conv1x1(x) (Eq. 7), BN (Eq. 8),
    ReLU (Eqs. 9-10), x_SE = x'' * s with s = sigmoid(W2 ReLU(W1 GAP(x''))) (Eqs. 11-13), x_out =
    shortcut(x) + x_SE (Eq. 14). Without `residual` and `se` it is BPBreID's conv-BN-ReLU (Table II D1)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = True, se: bool = True,
                 se_reduction: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)                   # Eq. (7)
        self.bn = nn.BatchNorm2d(out_channels)                                            # Eq. (8)
        self.relu = nn.ReLU(inplace=True)                                                 # Eqs. (9)-(10)
        squeeze = max(1, out_channels // se_reduction)
        self.se = SqueezeExcitation(out_channels, squeeze) if se else None                # Eqs. (11)-(13)
        self.shortcut = None
        if residual:                                                                      # Eq. (14)
            self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def channel_weights(self, refined: Tensor) -> Tensor:
        """s of Eq. (12) for x'' [N, C_out, h, w]: [N, C_out, 1, 1] in (0, 1)."""
        return self.se._scale(refined)

    def forward(self, x: Tensor) -> Tensor:
        refined = self.relu(self.bn(self.conv(x)))                                       # x''
        if self.se is not None:
            refined = refined * self.channel_weights(refined)                            # x_SE
        return refined if self.shortcut is None else self.shortcut(x) + refined


# ----------------------------------------------------------------------------------------------------------
# EMA attention, Sec. II-B (Eq. 4 / [34])

class EfficientMultiScaleAttention(nn.Module):
    """Efficient Multi-scale Attention (Ouyang et al., "Efficient Multi-Scale Attention Module with
    Cross-Spatial Learning", ICASSP 2023), written from the paper: the channels split into G groups; a 1x1
    branch encodes the map pooled along height and along width (a shared 1x1 conv, sigmoid gates per row
    and per column, then GroupNorm), a 3x3 branch the local context; each branch's channel descriptor
    (global pooling, softmax over the group's channels) weighs the other branch's map ("cross-spatial
    learning"), and the sum of both, through a sigmoid, re-weights every position of the group.
    [N, C, h, w] -> [N, C, h, w]."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        groups = min(groups, channels)
        while channels % groups:                    # the largest group count <= `groups` dividing C
            groups -= 1
        self.groups = groups
        width = channels // groups
        self.conv1x1 = nn.Conv2d(width, width, 1)
        self.conv3x3 = nn.Conv2d(width, width, 3, padding=1)
        self.norm = nn.GroupNorm(width, width)

    @staticmethod
    def _descriptor(x: Tensor) -> Tensor:
        """Softmax over channels of the global average: [M, c, h, w] -> [M, 1, c]."""
        return x.mean(dim=(2, 3)).softmax(dim=-1).unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = x.reshape(n * self.groups, c // self.groups, h, w)                       # [M, c, h, w]
        pooled_h = g.mean(dim=3, keepdim=True)                                       # [M, c, h, 1]
        pooled_w = g.mean(dim=2, keepdim=True).transpose(2, 3)                       # [M, c, w, 1]
        encoded = self.conv1x1(torch.cat([pooled_h, pooled_w], dim=2))               # [M, c, h+w, 1]
        gate_h, gate_w = encoded.split([h, w], dim=2)
        branch1 = self.norm(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())  # [M, c, h, w]
        branch3 = self.conv3x3(g)                                                    # [M, c, h, w]
        weights = (self._descriptor(branch1) @ branch3.flatten(2)                    # [M, 1, h*w]
                   + self._descriptor(branch3) @ branch1.flatten(2))
        return (g * weights.view(-1, 1, h, w).sigmoid()).reshape(n, c, h, w)


class FeatureMovingAverage(nn.Module):
    """Eq. (4) as printed: F_ema = alpha F + (1 - alpha) F_ema_prev, F_ema_prev the running average of the
    batches' mean maps (a buffer updated in training, like BN's statistics, and read at test time).
    [N, C, h, w] -> [N, C, h, w]; the first training batch starts the average (before it, F_ema = F)."""

    def __init__(self, decay: float = 0.9):
        super().__init__()
        self.decay = decay
        self.register_buffer("running", torch.zeros(0), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.running.shape != x.shape[1:]:  # no history (yet, or for this map size): F_ema = F
            if not self.training:
                return x
            self.running = x.detach().mean(0)                                        # [C, h, w]
        previous = self.running
        if self.training:
            self.running = self.decay * x.detach().mean(0) + (1.0 - self.decay) * previous
        return self.decay * x + (1.0 - self.decay) * previous                        # Eq. (4)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "running"
        if key in state_dict:  # the running map's size is only known from the saved model
            self.running = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_ema(kind: EmaKind, channels: int, cfg: BPSEMAConfig) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "multiscale":
        return EfficientMultiScaleAttention(channels, cfg.ema_groups)
    if kind == "moving_average":
        return FeatureMovingAverage(cfg.ema_decay)
    raise ConfigError(f"model.ema={kind!r}; use 'none', 'multiscale' or 'moving_average'")


# ----------------------------------------------------------------------------------------------------------
# Table II rows (names as printed; reidlib/reported/bpsema_reid.yaml)

ABLATIONS: dict[str, Ablation] = {
    "D1": Ablation({"residual": False, "se": False, "ema": "none"}),   # BPBreID, map reduced before pooling
    "D2": Ablation({"residual": True, "se": False, "ema": "none"}),    # + residual connection
    "D3": Ablation({"residual": True, "se": True, "ema": "none"}),     # + residual + SE
    "D4": Ablation(),                                                  # + EMA: BPSEMA
    "D4 (EMA as a moving average)": Ablation({"ema": "moving_average"}),
}


# ----------------------------------------------------------------------------------------------------------
# The method

@METHODS.register("bpsema")
class BPSEMA(BPBreID):
    """BPSEMA-ReID (see the module docstring): BPBreID with EMA attention before the pixel classifier and
    the dynamic feature refinement module as the reduction of the map before pooling."""

    config_class = BPSEMAConfig
    ablations = ABLATIONS

    def __init__(self, cfg: BPSEMAConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.ema = build_ema(cfg.ema, self.backbone.out_channels, cfg)

    def _build_map_reduction(self, channels: int, dim: int) -> nn.Module:
        cfg = self.cfg
        return DynamicFeatureRefinement(channels, dim, cfg.residual, cfg.se, cfg.se_reduction)

    def _part_attention(self, fmap: Tensor) -> tuple[Tensor | None, Tensor]:
        attended = fmap if self.ema is None else self.ema(fmap)                      # Eq. (4) / [34]
        pixel_logits = self.pixel_classifier(attended)                               # Eq. (3), [N, K+1, h, w]
        return pixel_logits, part_probabilities(pixel_logits)


__all__ = ["ABLATIONS", "BPSEMA", "BPSEMAConfig", "DynamicFeatureRefinement", "EfficientMultiScaleAttention",
           "FeatureMovingAverage", "build_ema"]
