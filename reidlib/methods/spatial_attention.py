"""Spatial attention modules compared in QPM's Table VII, each written from its own paper.

Every module maps a feature map G [N, C, h, w] to a refined map of the same shape. `attend` also returns
the attention mask (what Fig. 5 draws) and module-specific side outputs (ISA's reduced feature for Eq. 6).

Combination convention. QPM's ISA refines G as G~ = M * G + G (Eq. 8). Residual Attention Networks use
the same form, (1 + M) * T. CBAM, RGA and the RRU of STMP multiply without a residual (M * G). Table VII
places every module at the same point of the "AGFE global" model, and the paper does not say how the
competitors were combined. The modules therefore take `residual`: True gives M * G + G, False gives M * G,
and None gives the module's own convention (`own_residual`). QPM's config sets True for all of them by
default, so that only the way the mask is computed differs between rows.

Modules and their sources (QPM reference numbers in brackets):
- ISA     QPM Sec. III-B, Eqs. (4)-(8).
- FC-SA   [67] Y. Liu, Z. Yuan, W. Zhou, H. Li, "Spatial and temporal mutual promotion for video-based
          person re-identification", AAAI 2019. This is the spatial gate of the Refining Recurrent Unit. The
          official code (github.com/yolomax/rru-reid, rru.py) defines it: a 1x1 conv-BN-ReLU reduction,
          the channel mean, then fully connected layers over all h*w positions (written there as a
          full-size conv), reshaped to h x w and passed through a sigmoid.
- RGA-SA  [68] Z. Zhang, C. Lan, W. Zeng, X. Jin, Z. Chen, "Relation-aware global attention for person
          re-identification", CVPR 2020, Sec. 3.2 (spatial RGA, "RGA-S").
- RA-SA   [69] F. Wang et al., "Residual attention network for image classification", CVPR 2017,
          Sec. 3.1-3.3: a bottom-up / top-down soft mask branch and the spatial-attention activation f3.
- CBAM-SA [70] S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional block attention module",
          ECCV 2018, Sec. 3, spatial attention module, Eq. (3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.methods.parts import conv1x1, stripe_pool

ATTENTIONS = ("isa", "fc_sa", "rga_sa", "ra_sa", "cbam_sa", "none")
NEEDS_SPATIAL_SIZE = ("fc_sa", "rga_sa")  # fully connected / relation layers fixed to h*w positions


@dataclass
class Attended:
    """Output of `SpatialAttention.attend`."""

    refined: Tensor                                     # [N, C, h, w]
    mask: Tensor                                        # [N, 1, h, w] or [N, C, h, w], values in [0, 1]
    aux: dict[str, Tensor] = field(default_factory=dict)


class SpatialAttention(nn.Module):
    """Base: subclasses implement `mask(x, quality) -> (M, aux)`; this class combines M with x."""

    own_residual: bool = False      # the combination the module's own paper uses
    needs_quality: bool = False     # True only for ISA (it pools parts with QPM's quality scores)

    def __init__(self, residual: bool | None = None):
        super().__init__()
        self.residual = self.own_residual if residual is None else residual

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def attend(self, x: Tensor, quality: Tensor | None = None) -> Attended:
        if self.needs_quality and quality is None:
            raise ValueError(f"{type(self).__name__} needs part quality scores [N, K]; pass quality=")
        m, aux = self.mask(x, quality)
        refined = m * x + x if self.residual else m * x  # Eq. (8) when residual
        return Attended(refined, m, aux)

    def forward(self, x: Tensor, quality: Tensor | None = None) -> Tensor:
        return self.attend(x, quality).refined


class IdentityAwareSpatialAttention(SpatialAttention):
    """ISA, QPM Sec. III-B.

    h = sum_k q^_k g_k with q^_k = q_k / sum_i q_i (Eqs. 4-5), where the g_k are the stripe averages of G.
    h is reduced by a 1x1 conv with ratio r, passed through ReLU and expanded back (1x1 conv):
    h^ = W1 h and h~ = W2 ReLU(h^). The caller puts an ID loss on h^ (Eq. 6).
    Then M = sigma(<G_ij, h~>) (Eq. 7) and G~ = M * G + G (Eq. 8).
    The 1x1 convs act on a vector, so they are written as nn.Linear. The paper calls h^ "the output of the
    first Conv layer", so h^ is taken before the ReLU.
    """

    own_residual = True
    needs_quality = True

    def __init__(self, channels: int, num_parts: int, reduction: int = 4, residual: bool | None = None):
        super().__init__(residual)
        if channels // reduction < 1:
            raise ValueError(f"ISA reduction {reduction} leaves no channels of {channels}")
        self.num_parts = num_parts
        self.reduced_dim = channels // reduction
        self.reduce = nn.Linear(channels, self.reduced_dim)
        self.expand = nn.Linear(self.reduced_dim, channels)

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        parts = stripe_pool(x, self.num_parts)                       # [N, K, C]
        q_hat = quality / quality.sum(1, keepdim=True).clamp_min(1e-12)      # Eq. (5)  [N, K]
        h = torch.einsum("nk,nkc->nc", q_hat, parts)                         # Eq. (4)  [N, C]
        h_hat = self.reduce(h)                                               # [N, C/r] (Eq. 6 input)
        h_tilde = self.expand(F.relu(h_hat))                                 # [N, C]
        m = torch.sigmoid(torch.einsum("nchw,nc->nhw", x, h_tilde))          # Eq. (7)  [N, h, w]
        return m.unsqueeze(1), {"h": h, "h_hat": h_hat}


class FullyConnectedSpatialAttention(SpatialAttention):
    """FC-SA: the spatial gate of STMP's Refining Recurrent Unit [67] (official code, rru.py).

    z = ReLU(BN(conv1x1(G)))  ->  s = mean_c(z) [N, h*w]  ->  M = sigma(FC2(ReLU(FC1(s)))) reshaped h x w.
    The RRU uses a 256-channel reduction of a 4096-channel input (ratio 16) and 128 hidden units for an
    8 x 8 map (2 * h * w). Those ratios are kept here. The FC layers fix the number of positions, so the
    module is built for one feature-map size. In the RRU the gate mixes two states (a GRU-style update),
    so it has no stand-alone residual of its own: own convention M * G.
    """

    def __init__(self, channels: int, spatial_size: tuple[int, int], reduction: int = 16,
                 hidden_per_position: int = 2, residual: bool | None = None):
        super().__init__(residual)
        self.spatial_size = tuple(spatial_size)
        positions = self.spatial_size[0] * self.spatial_size[1]
        self.reduce = conv1x1(channels, max(1, channels // reduction))
        self.fc = nn.Sequential(
            nn.Linear(positions, hidden_per_position * positions),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_per_position * positions, positions),
        )

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        _check_size(self, x)
        n, _, h, w = x.shape
        s = self.reduce(x).mean(1).flatten(1)                                 # [N, h*w]
        return torch.sigmoid(self.fc(s)).view(n, 1, h, w), {}


class RelationAwareSpatialAttention(SpatialAttention):
    """RGA-S [68], Sec. 3.2.

    r_ij = theta(x_i)^T phi(x_j) over all position pairs (theta, phi: 1x1 conv-BN-ReLU to C/s1).
    Each position i stacks its relations [r_i,: ; r_:,i] (2hw values) and embeds them with psi (1x1
    conv-BN-ReLU to hw/s1). It also embeds its own feature with varphi (1x1 conv-BN-ReLU to C/s1,
    channel-mean pooled to 1). The attention is a_i = sigma(W2 ReLU(W1 y_i)) on y_i = [pool(varphi(x_i)),
    psi(r_i)], with W1 reducing by s2. Ratios s1 = s2 = 8 as in the paper. Own convention M * G.
    """

    def __init__(self, channels: int, spatial_size: tuple[int, int], channel_ratio: int = 8,
                 spatial_ratio: int = 8, down_ratio: int = 8, residual: bool | None = None):
        super().__init__(residual)
        self.spatial_size = tuple(spatial_size)
        positions = self.spatial_size[0] * self.spatial_size[1]
        inter_c = max(1, channels // channel_ratio)
        inter_s = max(1, positions // spatial_ratio)
        self.theta = conv1x1(channels, inter_c)
        self.phi = conv1x1(channels, inter_c)
        self.embed_feature = conv1x1(channels, inter_c)
        self.embed_relation = conv1x1(2 * positions, inter_s)
        joint = 1 + inter_s
        hidden = max(1, joint // down_ratio)
        self.weights = nn.Sequential(
            nn.Conv2d(joint, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1, bias=False), nn.BatchNorm2d(1),
        )

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        _check_size(self, x)
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2)                                      # [N, C', hw]
        phi = self.phi(x).flatten(2)                                          # [N, C', hw]
        r = theta.transpose(1, 2) @ phi                                       # [N, hw(i), hw(j)] = r_ij
        # channel j at position i: outgoing r_ij, then incoming r_ji
        relations = torch.cat([r.transpose(1, 2), r], 1).view(n, 2 * h * w, h, w)
        y = torch.cat([self.embed_feature(x).mean(1, keepdim=True), self.embed_relation(relations)], 1)
        return torch.sigmoid(self.weights(y)), {}                            # [N, 1, h, w]


class _PreActBottleneck(nn.Module):
    """Pre-activation residual unit (BN-ReLU-conv 1x1 / 3x3 / 1x1), the unit RAN stacks in its mask branch."""

    def __init__(self, channels: int, bottleneck_ratio: int = 4):
        super().__init__()
        mid = max(1, channels // bottleneck_ratio)
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualSpatialAttention(SpatialAttention):
    """RA-SA: the soft mask branch of the Residual Attention Network [69] with its spatial activation f3.

    Trunk T = G (the features are already computed). Mask branch: max-pool down, residual unit, bilinear
    up to h x w, add the trunk (the skip of RAN's innermost stage), BN-ReLU-conv1x1 twice. Then
    f3(x_{i,c}) = sigma((x_{i,c} - mean_c) / std_c), where mean and std are taken over the positions of
    each channel (Sec. 3.3, "spatial attention"). The maps are small (24 x 8 at paper scale), so there is
    only one down/up level where RAN uses several. The mask is per channel [N, C, h, w]. Own convention
    H = (1 + M) * T, which is the same as Eq. (8).
    """

    own_residual = True

    def __init__(self, channels: int, residual: bool | None = None, eps: float = 1e-5):
        super().__init__(residual)
        self.eps = eps
        self.down_unit = _PreActBottleneck(channels)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
        )

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        down = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)            # bottom-up
        up = F.interpolate(self.down_unit(down), size=x.shape[2:], mode="bilinear", align_corners=False)
        logits = self.head(up + x)                                            # [N, C, h, w]
        mean = logits.mean((2, 3), keepdim=True)
        std = logits.std((2, 3), keepdim=True, correction=0)
        return torch.sigmoid((logits - mean) / (std + self.eps)), {}          # f3


class CBAMSpatialAttention(SpatialAttention):
    """CBAM spatial attention [70], Eq. (3): M_s = sigma(f7x7([AvgPool_c(F); MaxPool_c(F)])).
    Own convention F'' = M_s * F. The paper's formula has no BN after the convolution."""

    def __init__(self, kernel_size: int = 7, residual: bool | None = None):
        super().__init__(residual)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def mask(self, x: Tensor, quality: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # [N, 2, h, w]
        return torch.sigmoid(self.conv(pooled)), {}


def _check_size(module: nn.Module, x: Tensor) -> None:
    if tuple(x.shape[2:]) != module.spatial_size:
        raise ValueError(
            f"{type(module).__name__} was built for {module.spatial_size[0]}x{module.spatial_size[1]} "
            f"feature maps but got {x.shape[2]}x{x.shape[3]}; build the method with the image size of the "
            "data (image_size=(data.height, data.width))"
        )


def build_spatial_attention(name: str, channels: int, num_parts: int,
                            spatial_size: tuple[int, int] | None = None, residual: bool | None = True,
                            isa_reduction: int = 4) -> SpatialAttention | None:
    """Table VII modules by name (`ATTENTIONS`); "none" gives None (G~ = G)."""
    if name == "none":
        return None
    if name in NEEDS_SPATIAL_SIZE and spatial_size is None:
        raise ValueError(f"spatial attention {name!r} needs the feature-map size (spatial_size=(h, w))")
    if name == "isa":
        return IdentityAwareSpatialAttention(channels, num_parts, isa_reduction, residual)
    if name == "fc_sa":
        return FullyConnectedSpatialAttention(channels, spatial_size, residual=residual)
    if name == "rga_sa":
        return RelationAwareSpatialAttention(channels, spatial_size, residual=residual)
    if name == "ra_sa":
        return ResidualSpatialAttention(channels, residual=residual)
    if name == "cbam_sa":
        return CBAMSpatialAttention(residual=residual)
    raise ValueError(f"unknown spatial attention {name!r}; use one of {list(ATTENTIONS)}")


__all__ = [
    "ATTENTIONS", "NEEDS_SPATIAL_SIZE", "Attended", "SpatialAttention", "IdentityAwareSpatialAttention",
    "FullyConnectedSpatialAttention", "RelationAwareSpatialAttention", "ResidualSpatialAttention",
    "CBAMSpatialAttention", "build_spatial_attention",
]
