"""PAB-ReID: a part-attention based model for occluded person re-identification.

Paper: Zhihao Chen, Yiyuan Ge, "Part-Attention Based Model Make Occluded Person Re-Identification Stronger",
International Joint Conference on Neural Networks (IJCNN), 2024; arXiv:2404.03443. No code was released.

PAB-ReID is BPBreID (Somers et al., WACV 2023; reidlib/methods/bpbreid.py) with another attention predictor
and a feature fuser between the attention maps and the pooling, so `PAB` subclasses `BPBreID` and
replaces only those pieces. Section III, equation by equation:
- Pixel-level attention predictor (Eqs. 1-2, Fig. 3): two stages of 3x3 conv -> BN -> ReLU over the
  backbone map B, then a softmax over X+1 maps (background first), X = 6 (`PixelLevelAttentionPredictor`).
- Part attention loss (Eqs. 3-4): pixel-wise cross-entropy against the parsing labels with label
  regularisation rate theta = 0.1 (`part_attention_loss`; see "Ambiguities" for Eq. 4).
- Visibility (Eq. 5): part x is visible when max F_x > mu, mu = 0.5 (BPBreID's `visibility_scores`,
  "threshold"). It is only read at test time, so mu is a matching-only switch.
- Fine-grained feature fuser (Eqs. 6-9, Fig. 4; "focuser" in Sec. I and Table III): a foreground map
  F_f from the X part maps (Eq. 6), K_1 = Conv(B) (Eq. 7), P_i = K_1 (.) F_i for i in {f, 1..X} (Eq. 8)
  and a gated convolution on each P_i (Eq. 9) (`FineGrainedFeatureFuser`, `GatedConv2d`); each Q_i is
  then pooled to a vector (`pool_fused`).
- Losses (Eqs. 10-13): the part triplet loss, batch-hard on the part-averaged Euclidean distance with
  margin alpha = 0.3 (BPBreID's `part_averaged_triplet_loss` is Eqs. 10-11), the identity loss with label
  smoothing 0.1 (Eq. 12) and L_sum = L_tri + L_ID + gamma_part L_part, gamma_part = 0.35 (Eq. 13), i.e.
  BPBreID's GiLt assembly (`gilt_loss`) with PAB's weights.
- Test: the BN-normalised foreground embedding and the X part embeddings, compared part to part and
  averaged over the parts visible in both images (BPBreID's `visibility_aware_distance`).

Ambiguities and the choices made (each is a `PABConfig` switch where an alternative is plausible):
- Parts: Fig. 2 names head, left hand, right hand, "forehead", left leg, right leg. The fourth is surely
  the torso (no grouping has a forehead; BPBreID's six-part grouping is exactly this list with the
  torso), so the parts are the "six" mask grouping: head, left/right arm, torso, left/right leg.
- Eq. (2) puts a ReLU between the last BN and the softmax; kept (`predictor_final_relu`). The hidden
  width of Eq. (1) is not stated (`predictor_channels`).
- Eq. (4) as printed, eps = theta / N on the labelled class and 1 - (N-1)/N = 1/N elsewhere, N the batch
  size, is not a distribution and would weigh the labelled class less than the others (0.003 vs 0.031 at
  theta = 0.1, N = 32), training the maps away from the labels. Read as label smoothing over the X+1
  classes: 1 - theta + theta/(X+1) on the labelled class, theta/(X+1) elsewhere. Eq. (3) sums over
  positions; the mean over positions and images is taken (BPBreID's code), so that gamma_part = 0.35
  weighs a per-pixel loss and not one that grows with the map's size.
- Eq. (6): "F_f = Concat(F_1, ..., F_X)" yields a 1 x H x W map, so it is a merge, not a concatenation:
  the sum of the part maps (= 1 - background under the softmax) by default, their max (BPBreID's code)
  as `foreground_map: max`.
- Eq. (8) writes K_i but only K_1 is defined and the text applies "the body part attention maps as well
  as the foreground attention map to the overall feature representation K_1": one K_1 for every i.
  Conv's kernel and width are not stated (`fuser_kernel`, `fuser_channels`).
- Eq. (9) writes Convgate(F_i), the attention map, but the text gates "the features": Q_i =
  Convgate(P_i). Gated convolution as in Yu et al. (ICCV 2019): phi(W_f * P) (.) sigmoid(W_g * P), one
  gate per output channel and position, shared by the X+1 inputs; phi (`gate_activation`, ELU there) and
  the kernel (`gate_kernel`) are not stated.
- How Q_i becomes a vector is not stated: parts by the masked average sum Q_x / sum F_x and the
  foreground by the mean over positions (BPBreID's pooling rules, `foreground_pooling`).
- Eq. (12) names no embedding: the identity loss acts on the foreground embedding and on the
  concatenated parts (BPBreID's holistic embeddings that the fuser produces; BPBreID's third one, the
  plain global GAP of B, is `id_weights.global`). Eq. (10) averages over all X parts, visible or not.
- Table III / Fig. 5: see `ABLATIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from reidlib.config import ConfigError, check_range
from reidlib.methods import METHODS
from reidlib.methods.base import Ablation, Batch, DataInfo, PartLayout
from reidlib.methods.bpbreid import (
    EMBEDDINGS,
    POOL_EPS,
    BPBreID,
    BPBreIDConfig,
    PixelToPartClassifier,
    body_part_attention_loss,
    part_probabilities,
    pool_embeddings,
)
from reidlib.methods.parts import stripe_maps

Predictor = Literal["pixel_level", "one_conv"]
PartAttention = Literal["predicted", "stripes"]
GateActivation = Literal["elu", "relu", "identity"]

GATE_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "identity": nn.Identity}


@dataclass
class PABConfig(BPBreIDConfig):
    """PAB-ReID hyper-parameters (Sec. III, IV-B) and ablation switches (Table III, Figs. 5-6). The
    inherited BPBreID names carry PAB's symbols: pixel_weight = gamma_part, pixel_label_smoothing = theta,
    visibility_threshold = mu, triplet_margin = alpha."""

    # --- part attention block, Sec. III-A
    part_attention: PartAttention = "predicted"  # "stripes": fixed horizontal stripes, no attention block
    predictor: Predictor = "pixel_level"  # Eqs. (1)-(2); "one_conv": BPBreID's BN + 1x1 conv classifier
    predictor_channels: int = 256         # width of F_1 in Eq. (1): not stated
    predictor_final_relu: bool = True     # Eq. (2): Softmax(ReLU(BN(conv(F_1))))
    pixel_weight: float = 0.35            # gamma_part, Eq. (13)
    pixel_label_smoothing: float = 0.1    # theta, Eq. (4) read as label smoothing
    visibility: Literal["argmax", "threshold", "continuous"] = "threshold"  # Eq. (5)
    visibility_threshold: float = 0.5     # mu, Eq. (5)
    # --- global-local learning block, Sec. III-B
    fuser: bool = True                    # Eqs. (6)-(9); False: pool B under the maps (BPBreID)
    foreground_map: Literal["max", "sum"] = "sum"  # Eq. (6): merge of the X part maps
    fuser_channels: int | None = 512      # channels of K_1 = Conv(B), Eq. (7) (not stated); None: B's
    fuser_kernel: int = 1                 # Conv of Eq. (7): not stated
    gate_kernel: int = 3                  # Convgate of Eq. (9): 3x3 as in Yu et al.
    gate_activation: GateActivation = "elu"  # phi of the gated convolution (Yu et al.: ELU)
    # --- losses, Eqs. (10)-(13)
    id_weights: dict[str, float] = field(default_factory=lambda: {
        "global": 0.0, "foreground": 1.0, "concat": 1.0, "parts": 0.0})
    triplet_weights: dict[str, float] = field(default_factory=lambda: {
        "global": 0.0, "foreground": 0.0, "concat": 0.0, "parts": 1.0})

    def validate(self) -> None:
        super().validate()
        check_range("model.predictor_channels", self.predictor_channels, 1)
        if self.fuser_channels is not None:
            check_range("model.fuser_channels", self.fuser_channels, 1)
        for name in ("fuser_kernel", "gate_kernel"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ConfigError(f"model.{name}={value!r}; use an odd kernel size (1, 3, 5, ...) so the "
                                  "map keeps its size")
        if self.part_attention == "stripes" and self.pixel_weight > 0:
            raise ConfigError("model.part_attention='stripes' has no predictor for the part attention loss "
                              "to train; set model.pixel_weight to 0")
        if self.dim_reduce_at != "after_pooling":
            raise ConfigError("model.dim_reduce_at must be 'after_pooling' for PAB-ReID: the fuser works on "
                              "the backbone map B (Eq. 7)")
        if self.dim_reduce is None and self.fuser and self.fuser_channels is not None:
            raise ConfigError("model.dim_reduce is null, so every embedding keeps its width: set "
                              "model.fuser_channels to null too (K_1 as wide as B)")


# ----------------------------------------------------------------------------------------------------------
# Part attention block, Sec. III-A

def conv_bn_relu(cin: int, cout: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    """kxk conv (no bias: BN follows) -> BN [-> ReLU], keeping the map's size."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
                               nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PixelLevelAttentionPredictor(nn.Module):
    """Eqs. (1)-(2) up to the softmax: B [N, C, h, w] -> the X+1 pixel logits [N, X+1, h, w] (background
    first); `part_probabilities` applies the softmax of Eq. (2)."""

    KERNEL = 3                            # delta_3 of Eqs. (1)-(2)

    def __init__(self, channels: int, hidden: int, num_parts: int, final_relu: bool = True):
        super().__init__()
        self.stage1 = conv_bn_relu(channels, hidden, self.KERNEL)                            # Eq. (1)
        self.stage2 = conv_bn_relu(hidden, num_parts + 1, self.KERNEL, relu=final_relu)     # Eq. (2)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.stage2(self.stage1(fmap))                                               # [N, X+1, h, w]


def part_attention_loss(pixel_logits: Tensor, masks: Tensor, theta: float) -> Tensor:
    """L_part, Eqs. (3)-(4) read as label smoothing (module docstring): the mean over images and
    positions of -sum_x eps_x log F_x, eps_x = 1 - theta + theta/(X+1) for the labelled part, theta/(X+1)
    for the others. pixel_logits [N, X+1, h, w]; masks [N, X+1, H, W] (resized, then arg-maxed)."""
    return body_part_attention_loss(pixel_logits, masks, theta)


def fixed_stripes(fmap: Tensor, num_parts: int) -> Tensor:
    """The "w/o part attention block" maps: X horizontal stripes and an empty background, [N, X+1, h, w]."""
    n, _, h, w = fmap.shape
    stripes = stripe_maps(num_parts, h, w, device=fmap.device).to(fmap.dtype)              # [X, h, w]
    maps = torch.cat([torch.zeros_like(stripes[:1]), stripes])                             # [X+1, h, w]
    return maps.unsqueeze(0).expand(n, -1, -1, -1)


# ----------------------------------------------------------------------------------------------------------
# Fine-grained feature fuser, Sec. III-B

class GatedConv2d(nn.Module):
    """Convgate of Eq. (9) (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019):
    phi(W_f * x) (.) sigmoid(W_g * x), a learned soft gate per output channel and position, so that
    background positions can be switched off. [M, C, h, w] -> [M, C, h, w]."""

    def __init__(self, channels: int, kernel_size: int, activation: GateActivation = "elu"):
        super().__init__()
        padding = kernel_size // 2
        self.feature = nn.Conv2d(channels, channels, kernel_size, padding=padding)
        self.gate = nn.Conv2d(channels, channels, kernel_size, padding=padding)
        self.activation = GATE_ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.feature(x)) * torch.sigmoid(self.gate(x))


class FineGrainedFeatureFuser(nn.Module):
    """Eqs. (7)-(9): B [N, C, h, w] and the maps F_i [N, X+1, h, w] (foreground first, then the X parts)
    -> Q_i [N, X+1, C', h, w]. One K_1 and one gated convolution serve every i."""

    def __init__(self, in_channels: int, channels: int, conv_kernel: int, gate_kernel: int,
                 gate_activation: GateActivation = "elu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, conv_kernel, padding=conv_kernel // 2)  # Eq. (7)
        self.gated = GatedConv2d(channels, gate_kernel, gate_activation)                    # Eq. (9)

    def forward(self, fmap: Tensor, maps: Tensor) -> Tensor:
        whole_body = self.conv(fmap)                                    # K_1 [N, C', h, w], Eq. (7)
        masked = whole_body.unsqueeze(1) * maps.unsqueeze(2)            # P_i [N, X+1, C', h, w], Eq. (8)
        gated = self.gated(masked.flatten(0, 1))                        # Q_i [N*(X+1), C', h, w], Eq. (9)
        return gated.view(masked.shape)


def pool_fused(fused: Tensor, maps: Tensor, foreground_pooling: Literal["gap", "gwap"] = "gap"
               ) -> dict[str, Tensor]:
    """Q_i [N, X+1, C', h, w] (foreground first) -> foreground [N, C'] and parts [N, X, C'] vectors, by
    BPBreID's rules: a part is the masked average sum_hw Q_x / sum_hw F_x; the foreground the mean over
    positions ("gap") or likewise divided by its map's mass ("gwap"). maps [N, X+1, h, w]."""
    sums = fused.sum(dim=(3, 4))                                        # [N, X+1, C']
    mass = maps.sum(dim=(2, 3)).clamp_min(POOL_EPS).unsqueeze(-1)       # [N, X+1, 1]
    pooled = sums / mass
    positions = maps.shape[2] * maps.shape[3]
    foreground = sums[:, 0] / positions if foreground_pooling == "gap" else pooled[:, 0]
    return {"foreground": foreground, "parts": pooled[:, 1:]}


# ----------------------------------------------------------------------------------------------------------
# Ablation rows (names as printed in the paper; Table III rows as in reidlib/reported/pab_reid.yaml)

def _weights(**nonzero: float) -> dict[str, float]:
    """A full GiLt weight dict (the rows replace the paper's dict key by key, so every key is given)."""
    return {key: float(nonzero.get(key, 0.0)) for key in EMBEDDINGS}


_PAPER_ID = _weights(foreground=1.0, concat=1.0)
_NO_ID = _weights()
_PART_TRIPLET = _weights(parts=1.0)
# "normal triplet loss": batch-hard on the Euclidean distance of the concatenated part embeddings, the
# same features as the part triplet, so only the distance changes (Eq. 10's mean of part distances).
_ORDINARY_TRIPLET = _weights(concat=1.0)
_NO_TRIPLET = _weights()

# Fig. 6 grid. The text says mu and gamma_part start at 0.15 and 0.3 and grow by 0.2, but the best cell
# (mu = 0.5, gamma_part = 0.35) and the values it discusses (mu above 0.7, gamma_part = 0.55) fit the
# symbols swapped: mu in {0.3, 0.5, 0.7}, gamma_part in {0.15, 0.35, 0.55}.
FIG6_MU = (0.3, 0.5, 0.7)
FIG6_GAMMA_PART = (0.15, 0.35, 0.55)
PAPER_GAMMA_PART = 0.35


def _gamma_row(gamma: float) -> str:
    return "ALL" if gamma == PAPER_GAMMA_PART else f"gamma_part={gamma}"


ABLATIONS: dict[str, Ablation] = {
    # Table III. "w/o Part attention block": no predictor, no parsing labels, no attention loss; the
    # fuser and the losses see X fixed horizontal stripes instead (all visible). The weaker reading,
    # the predictor kept without parsing supervision, is Fig. 6's gamma_part = 0 (not in the paper).
    "w/o Part attention block": Ablation({"part_attention": "stripes", "pixel_weight": 0.0}),
    # the parts and the foreground pooled from B under the maps, as BPBreID does (no K_1, no gate)
    "w/o Fine-Grained Feature Focuser": Ablation({"fuser": False}),
    # the block kept, its two-stage predictor replaced by BPBreID's BN + 1x1 conv pixel classifier
    "w/o Pixel-level Attention predictor": Ablation({"predictor": "one_conv"}),
    # Sec. IV-D: "the ablation experiment using normal triplet loss" (identity loss kept)
    "w/o Part Triplet Loss": Ablation({"triplet_weights": _ORDINARY_TRIPLET}),
    "ALL": Ablation(),
    # Fig. 5, the ReID losses (L_part kept in every column). The text gives "Triplet loss" the numbers of
    # Table III's "w/o Part Triplet Loss", which keeps the identity loss, i.e. "ID + triplet loss" here:
    # one of the paper's two labels is off; the columns are implemented as labelled.
    "ID loss": Ablation({"id_weights": _PAPER_ID, "triplet_weights": _NO_TRIPLET}),
    "Triplet loss": Ablation({"id_weights": _NO_ID, "triplet_weights": _ORDINARY_TRIPLET}),
    "ID + triplet loss": Ablation({"id_weights": _PAPER_ID, "triplet_weights": _ORDINARY_TRIPLET}),
    "Part triplet loss": Ablation(),      # = ALL (the text: 5.5 / 6.4 above "Triplet loss")
    # Fig. 6: gamma_part retrains; mu only decides visibility at test, so it re-scores a trained row
    **{_gamma_row(g): Ablation({"pixel_weight": g}) for g in FIG6_GAMMA_PART if _gamma_row(g) != "ALL"},
    **{f"mu={mu}, gamma_part={g}": Ablation(test={"visibility_threshold": mu}, base=_gamma_row(g))
       for mu in FIG6_MU for g in FIG6_GAMMA_PART},
}


# ----------------------------------------------------------------------------------------------------------
# The method

@METHODS.register("pab")
class PAB(BPBreID):
    """PAB-ReID (see the module docstring): BPBreID's embeddings, GiLt-style losses and visibility-aware
    matching, with the pixel-level attention predictor and the fine-grained feature fuser."""

    config_class = PABConfig
    ablations = ABLATIONS

    def __init__(self, cfg: PABConfig, info: DataInfo):
        super().__init__(cfg, info)
        channels = self.backbone.out_channels
        self.fuser = None
        if cfg.fuser:
            self.fuser = FineGrainedFeatureFuser(channels, self._fused_channels(channels), cfg.fuser_kernel,
                                                 cfg.gate_kernel, cfg.gate_activation)

    def part_layout(self) -> PartLayout:
        if self.cfg.part_attention == "stripes":
            return PartLayout("stripes", self.num_parts)
        return super().part_layout()

    # --- BPBreID's pieces, replaced
    def _fused_channels(self, channels: int) -> int:
        return channels if self.cfg.fuser_channels is None else self.cfg.fuser_channels

    def _build_pixel_classifier(self, channels: int, num_parts: int) -> nn.Module | None:
        cfg = self.cfg
        if cfg.part_attention == "stripes":
            return None
        if cfg.predictor == "one_conv":
            return PixelToPartClassifier(channels, num_parts)
        return PixelLevelAttentionPredictor(channels, cfg.predictor_channels, num_parts,
                                            cfg.predictor_final_relu)

    def _pooled_channels(self, channels: int) -> dict[str, int]:
        fused = self._fused_channels(channels) if self.cfg.fuser else channels
        return {"global": channels, "foreground": fused, "parts": fused}

    def _part_attention(self, fmap: Tensor) -> tuple[Tensor | None, Tensor]:
        if self.pixel_classifier is None:
            return None, fixed_stripes(fmap, self.num_parts)
        pixel_logits = self.pixel_classifier(fmap)                      # [N, X+1, h, w]
        return pixel_logits, part_probabilities(pixel_logits)           # F, Eq. (2)

    def _pool(self, fmap: Tensor, part_maps: Tensor, foreground: Tensor) -> tuple[dict[str, Tensor],
                                                                               dict[str, Tensor]]:
        """With the fuser: F_f (Eq. 6) and the part maps through Eqs. (7)-(9), then `pool_fused`; the
        global embedding stays the GAP of B. Extra output: the channel norm of Q_f [N, h, w]."""
        cfg = self.cfg
        pooled = pool_embeddings(fmap, part_maps, foreground, cfg.foreground_pooling)
        if self.fuser is None:
            return pooled, {}
        maps = torch.cat([foreground.unsqueeze(1), part_maps], dim=1)  # F_i, i in {f, 1..X} [N, X+1, h, w]
        fused = self.fuser(fmap, maps)                                  # Q_i [N, X+1, C', h, w]
        pooled.update(pool_fused(fused, maps, cfg.foreground_pooling))
        return pooled, {"fused_activation": fused[:, 0].norm(dim=1)}    # [N, h, w]

    def _features(self, images: Tensor) -> dict[str, Tensor]:
        out = super()._features(images)
        # Eq. (5) scores the X parts only: the foreground embedding always takes part in matching
        out["foreground_visibility"] = torch.ones_like(out["foreground_visibility"])
        return out

    # --- figures
    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """part_maps: the X part attention maps [N, X, h, w]; part_scores: their visibility (Eq. 5) [N, X];
        attention: the foreground map F_f [N, h, w]; activation: the channel L2 norm of the fused
        foreground features Q_f (of B without the fuser); activation_before: that of B."""
        feats = self._features(batch.images)
        before = feats["feature_map"].norm(dim=1)
        return {"part_maps": feats["part_maps"], "part_scores": feats["part_visibility"],
                "attention": feats["foreground_map"].clamp(0.0, 1.0),
                "activation": feats.get("fused_activation", before), "activation_before": before}


__all__ = [
    "ABLATIONS", "FIG6_GAMMA_PART", "FIG6_MU", "FineGrainedFeatureFuser", "GatedConv2d", "PAB", "PABConfig",
    "PixelLevelAttentionPredictor", "conv_bn_relu", "fixed_stripes", "part_attention_loss", "pool_fused",
]
