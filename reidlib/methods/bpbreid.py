"""BPBreID: body part-based representation learning for occluded person re-identification.

Paper: V. Somers, C. De Vleeschouwer, A. Alahi, "Body Part-Based Representation Learning for Occluded Person
Re-Identification", WACV 2023, arXiv:2211.03679. Released code: github.com/VlSomers/bpbreid (torchreid
fork). Where the paper is silent the released code decides; "code:" below names the function followed.

The model, piece by piece (each piece is a function or module of its own, for PAB-ReID and BPSEMA-ReID):
- Backbone feature map F [N, C, h, w] (ResNet-50, last stride 1).
- Body part attention (code: `PixelToPartClassifier`): BN + 1x1 conv over F gives K+1 logits per position
  (background first), a softmax over the K+1 channels the attention maps M = softmax(G P^T). The maps are
  trained with a pixel-wise cross-entropy with label smoothing against coarse human-parsing labels
  (`body_part_attention_loss`; code: `BodyPartAttentionLoss`), the labels being resized to the feature map
  and arg-maxed (code: `ImagePartBasedEngine.combine_losses`); weight 0.35 in the total loss.
- Embeddings (code: `BPBreID.forward`): global (GAP of F), foreground (F under the foreground map, the max
  of the K part maps), K parts (masked average pooling under each part map) and their concatenation; each
  through a "after pooling" Linear-BN-ReLU reduction (code: `AfterPoolingDimReduceLayer`) and a BNNeck
  identity classifier (code: `BNClassifier`).
- Visibility (code: `BPBreID.forward`, binary visibility): a part is visible when it wins the pixel-wise
  argmax somewhere on the feature map. `visibility: threshold` is the rule PAB-ReID writes down for the
  same maps (its Eq. 5: max of the part map above mu = 0.5); `continuous` is the code's non-binary score.
- GiLt, "Global-identity Local-triplet" (code: `GiLtLoss`): identity cross-entropy with label smoothing
  on the holistic embeddings (global, foreground, concatenated parts) and the part-averaged batch-hard
  triplet loss on the K part embeddings (Euclidean part distances averaged over parts; code:
  `PartAveragedTripletLoss`). The code's default trains the triplet on all parts (`mask_filtering_training`
  false); `train_visibility` averages over the parts visible in both images instead.
- Test (code: `ImagePartBasedEngine._evaluate`, `compute_distance_matrix_using_bp_features`): the
  BN-normalised foreground embedding and the K part embeddings, each L2-normalised, compared part to part
  by Euclidean distance and averaged over the entries visible in both images (`visibility_aware_distance`).

Not implemented: the code's background embedding (its GiLt weights and test embeddings never use it), the
fixed-attention variants (PifPaf masks or PCB stripes instead of the learned maps) and the test-time
refinement of the maps with external masks (`test_use_target_segmentation`, "none" by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import ConfigError, check_range
from reidlib.distance import chunked
from reidlib.losses import cross_entropy_label_smooth
from reidlib.methods import METHODS
from reidlib.methods.base import Batch, DataInfo, Embedding, PartLayout, ReIDMethod
from reidlib.methods.global_baseline import GlobalHead, scaled_param_groups
from reidlib.methods.parts import masked_average_pool, weighted_part_distance
from reidlib.models import build_backbone

Visibility = Literal["argmax", "threshold", "continuous"]
TargetResize = Literal["bilinear", "area"]
DimReduceAt = Literal["after_pooling", "before_pooling"]

# The embeddings GiLt weighs (code: GLOBAL, FOREGROUND, CONCAT_PARTS, PARTS) and those a test descriptor
# may use: "bn_" takes the embedding after its BNNeck (code: test_embeddings, e.g. "bn_foreg").
EMBEDDINGS = ("global", "foreground", "concat", "parts")
TEST_EMBEDDINGS = ("global", "bn_global", "foreground", "bn_foreground", "parts", "bn_parts")

POOL_EPS = 1e-6                   # code: GlobalWeightedAveragePoolingHead clamps the mask sum at 1e-6
PIXEL_CLASSIFIER_INIT_STD = 0.001  # code: PixelToPartClassifier._init_params
REDUCTION_INIT_STD = 0.01          # code: AfterPoolingDimReduceLayer._init_params
# Test distances compare L2-normalised embeddings, so a Euclidean distance is at most 2. A pair with no
# entry visible in both images gets more than that, behind every comparable pair (code: max + 1).
UNMATCHED_DISTANCE = 3.0


@dataclass
class BPBreIDConfig:
    """BPBreID hyper-parameters (code: default_config.py, configs/bpbreid/*.yaml) and switches."""

    # --- architecture
    backbone: str = "resnet50"            # code: model.bpbreid.backbone (hrnet32 is the paper's other one)
    pretrained: str | None = None         # backbone weights: a file, a folder or "default" (never downloaded)
    last_stride: int | None = 1           # code: last_stride = 1; None: the backbone's own (e.g. HRNet)
    dim_reduce: int | None = 512          # code: dim_reduce_output 512; None: no reduction
    dim_reduce_at: DimReduceAt = "after_pooling"  # code: dim_reduce ("before_pooling": on the map)
    foreground_map: Literal["max", "sum"] = "max"        # code: parts_masks.max(dim=1) ("sum" commented out)
    foreground_pooling: Literal["gap", "gwap"] = "gap"   # code: GlobalAveragePoolingHead: mean_hw(m * F)
    shared_part_classifier: bool = False  # code: shared_parts_id_classifier (only with an id loss on parts)
    # --- GiLt loss (code: GiLtLoss.default_losses_weights, configs/bpbreid/*_train.yaml)
    id_weights: dict[str, float] = field(default_factory=lambda: {
        "global": 1.0, "foreground": 1.0, "concat": 1.0, "parts": 0.0})
    triplet_weights: dict[str, float] = field(default_factory=lambda: {
        "global": 0.0, "foreground": 0.0, "concat": 0.0, "parts": 1.0})
    label_smoothing: float = 0.1          # code: CrossEntropyLoss(label_smooth=True), eps = 0.1
    triplet_margin: float | None = 0.3    # code: loss.triplet.margin; null: soft margin
    train_visibility: bool = False        # code: mask_filtering_training (False: mean over all K parts)
    # --- body part attention loss
    pixel_weight: float = 0.35            # code: loss.part_based.weights.pixls.ce
    pixel_label_smoothing: float = 0.1    # code: BodyPartAttentionLoss(label_smoothing=0.1)
    target_resize: TargetResize = "bilinear"  # code: bilinear (align_corners) then argmax; "area": mean
    # --- visibility and matching
    visibility: Visibility = "argmax"     # code: testing_binary_visibility_score (see the module docstring)
    visibility_threshold: float = 0.5     # for visibility "threshold" (PAB-ReID Eq. 5: mu = 0.5)
    test_visibility: bool = True          # code: mask_filtering_testing (False: every entry counts)
    test_embeddings: tuple[str, ...] = ("bn_foreground", "parts")  # code: test_embeddings
    test_entries: Literal["all", "parts", "holistic"] = "all"  # matching only: which embedded entries count
    # --- optimisation
    backbone_lr_factor: float = 1.0       # code: one rate for all; < 1 fine-tunes a trained backbone slower

    def validate(self) -> None:
        if self.last_stride is not None and self.last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride={self.last_stride!r}; use 1 (BPBreID), 2 or null")
        if self.dim_reduce is not None:
            check_range("model.dim_reduce", self.dim_reduce, 1)
        for name, weights in (("id_weights", self.id_weights), ("triplet_weights", self.triplet_weights)):
            unknown = sorted(set(weights) - set(EMBEDDINGS))
            if unknown:
                raise ConfigError(f"model.{name}: unknown embedding(s) {unknown}; use {list(EMBEDDINGS)}")
            for key, value in weights.items():
                check_range(f"model.{name}.{key}", float(value), 0.0)
        check_range("model.label_smoothing", self.label_smoothing, 0.0, 0.999)
        check_range("model.pixel_label_smoothing", self.pixel_label_smoothing, 0.0, 0.999)
        check_range("model.pixel_weight", self.pixel_weight, 0.0)
        check_range("model.backbone_lr_factor", self.backbone_lr_factor, 0.0)
        check_range("model.visibility_threshold", self.visibility_threshold, 0.0, 1.0)
        if self.triplet_margin is not None:
            check_range("model.triplet_margin", self.triplet_margin, 0.0)
        if not self.test_embeddings:
            raise ConfigError(f"model.test_embeddings is empty; use some of {list(TEST_EMBEDDINGS)}")
        unknown = sorted(set(self.test_embeddings) - set(TEST_EMBEDDINGS))
        if unknown:
            raise ConfigError(f"model.test_embeddings: unknown {unknown}; use some of {list(TEST_EMBEDDINGS)}"
                              " (the concatenated parts cannot be matched part to part)")
        if len({name.removeprefix("bn_") for name in self.test_embeddings}) != len(self.test_embeddings):
            raise ConfigError(f"model.test_embeddings={list(self.test_embeddings)} names an embedding twice")
        if not any(self.id_weight(k) or self.triplet_weight(k) for k in EMBEDDINGS) and not self.pixel_weight:
            raise ConfigError("model: every GiLt and pixel loss weight is 0, so nothing is learned")

    def id_weight(self, name: str) -> float:
        return float(self.id_weights.get(name, 0.0))

    def triplet_weight(self, name: str) -> float:
        return float(self.triplet_weights.get(name, 0.0))

    @property
    def needs_part_heads(self) -> bool:
        """Per-part BNNeck classifiers exist only when something reads them (code: always built)."""
        return self.id_weight("parts") > 0 or "bn_parts" in self.test_embeddings


# ----------------------------------------------------------------------------------------------------------
# Body part attention

class PixelToPartClassifier(nn.Module):
    """The pixel-to-part classifier: BN over F, then a 1x1 conv to K+1 logits (background first).
    [N, C, h, w] -> [N, K+1, h, w] (code: PixelToPartClassifier; the paper's M = softmax(G P^T))."""

    def __init__(self, channels: int, num_parts: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_parts + 1, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=PIXEL_CLASSIFIER_INIT_STD)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.classifier(self.bn(fmap))


def part_probabilities(pixel_logits: Tensor) -> Tensor:
    """Softmax over the K+1 channels: [N, K+1, h, w] -> [N, K+1, h, w], summing to 1 at every position."""
    return pixel_logits.softmax(dim=1)


def pixel_targets(masks: Tensor, size: tuple[int, int], resize: TargetResize = "bilinear") -> Tensor:
    """Parsing labels [N, K+1, H, W] (background first) -> the class of each feature-map position [N, h, w].

    "bilinear": the code's bilinear resize with align_corners, then argmax (ties go to the lower channel,
    i.e. the background); "area": the mean of the labels over each position's cell, then argmax."""
    masks = masks.float()
    if resize == "bilinear":
        small = F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
    elif resize == "area":
        small = F.adaptive_avg_pool2d(masks, size)
    else:
        raise ValueError(f"unknown target resize {resize!r}; use 'bilinear' or 'area'")
    return small.argmax(dim=1)                                          # [N, h, w]


def body_part_attention_loss(pixel_logits: Tensor, masks: Tensor, label_smoothing: float,
                             resize: TargetResize = "bilinear") -> Tensor:
    """Pixel-wise cross-entropy with label smoothing, averaged over the N x h x w positions (code:
    BodyPartAttentionLoss with ppl "cl"). pixel_logits [N, K+1, h, w]; masks [N, K+1, H, W]."""
    if masks.shape[1] != pixel_logits.shape[1]:
        raise ValueError(f"parsing labels have {masks.shape[1]} channels but the pixel classifier predicts "
                         f"{pixel_logits.shape[1]} (K+1); data.mask_grouping must be the model's grouping")
    targets = pixel_targets(masks, tuple(pixel_logits.shape[-2:]), resize)
    return F.cross_entropy(pixel_logits, targets, label_smoothing=label_smoothing)


def visibility_scores(probabilities: Tensor, mode: Visibility = "argmax", threshold: float = 0.5) -> Tensor:
    """Per-channel visibility [N, K+1] (background first) from the maps [N, K+1, h, w], as floats:
    "argmax": 1 where the channel wins the argmax at one position at least (code, binary scores);
    "threshold": 1 where the channel's max exceeds `threshold` (PAB-ReID Eq. 5);
    "continuous": the channel's max itself (code, non-binary scores)."""
    peak = probabilities.amax(dim=(2, 3))                               # [N, K+1]
    if mode == "continuous":
        return peak
    if mode == "threshold":
        return threshold_visibility(peak, threshold)
    if mode == "argmax":
        winner = probabilities.argmax(dim=1)                            # [N, h, w]
        channels = probabilities.shape[1]
        wins = F.one_hot(winner.flatten(1), channels).amax(dim=1)       # [N, K+1]
        return wins.to(probabilities.dtype)
    raise ValueError(f"unknown visibility {mode!r}; use 'argmax', 'threshold' or 'continuous'")


def threshold_visibility(peak: Tensor, threshold: float) -> Tensor:
    """PAB-ReID Eq. (5): 1 where a map's peak probability [N, K] exceeds `threshold` (mu), else 0."""
    return (peak > threshold).to(peak.dtype)


def foreground_attention(part_maps: Tensor, mode: Literal["max", "sum"] = "max") -> Tensor:
    """The foreground map [N, h, w] from the K part maps [N, K, h, w]: their max (code) or sum (= 1 minus
    the background probability)."""
    return part_maps.amax(dim=1) if mode == "max" else part_maps.sum(dim=1)


# ----------------------------------------------------------------------------------------------------------
# Embeddings

def pool_embeddings(fmap: Tensor, part_maps: Tensor, foreground: Tensor,
                    foreground_pooling: Literal["gap", "gwap"] = "gap") -> dict[str, Tensor]:
    """The code's pooling heads, before any reduction: fmap [N, C, h, w], part_maps [N, K, h, w],
    foreground [N, h, w] -> global [N, C] (GAP), foreground [N, C], parts [N, K, C] (masked average).

    foreground_pooling "gap": mean over positions of m * F (the code's GlobalAveragePoolingHead, not
    divided by the map's mass); "gwap": the masked average sum m F / sum m."""
    fg = foreground.unsqueeze(1)                                        # [N, 1, h, w]
    if foreground_pooling == "gap":
        fg_embedding = (fg * fmap).mean(dim=(2, 3))                     # [N, C]
    else:
        fg_embedding = masked_average_pool(fmap, fg, eps=POOL_EPS)[:, 0]
    return {"global": fmap.mean(dim=(2, 3)),                            # [N, C]
            "foreground": fg_embedding,
            "parts": masked_average_pool(fmap, part_maps, eps=POOL_EPS)}  # [N, K, C]


class EmbeddingReduction(nn.Module):
    """Linear -> BN -> ReLU on [N, C] or, shared by all parts, on [N, K, C] (code:
    AfterPoolingDimReduceLayer; the parts go through one layer as N*K samples)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features),
                                    nn.ReLU(inplace=True))
        nn.init.normal_(self.layers[0].weight, std=REDUCTION_INIT_STD)
        nn.init.zeros_(self.layers[0].bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            n, k, _ = x.shape
            return self.layers(x.flatten(0, 1)).view(n, k, -1)
        return self.layers(x)


class MapReduction(nn.Sequential):
    """1x1 conv -> BN -> ReLU on the map, [N, C, h, w] -> [N, D, h, w] (code: BeforePoolingDimReduceLayer)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class PartHeads(nn.Module):
    """A BNNeck classifier per part, or one shared by all: [N, K, D] -> ([N, K, D], [N, K, M])."""

    def __init__(self, num_parts: int, dim: int, num_classes: int, shared: bool):
        super().__init__()
        self.num_parts = num_parts
        self.heads = nn.ModuleList([GlobalHead(dim, num_classes) for _ in range(1 if shared else num_parts)])

    def forward(self, parts: Tensor) -> tuple[Tensor, Tensor]:
        if len(self.heads) == 1:
            n, k, d = parts.shape
            bn, logits = self.heads[0](parts.flatten(0, 1))
            return bn.view(n, k, d), logits.view(n, k, -1)
        outs = [head(parts[:, k]) for k, head in enumerate(self.heads)]
        return torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1)


# ----------------------------------------------------------------------------------------------------------
# GiLt: part-averaged triplet loss

def part_euclidean_distances(parts_a: Tensor, parts_b: Tensor) -> Tensor:
    """Euclidean distance of every part pair: [A, K, D], [B, K, D] -> [K, A, B] (exact, no matmul
    shortcut, so that d(x, x) is 0 and its gradient finite)."""
    return torch.cdist(parts_a.transpose(0, 1), parts_b.transpose(0, 1),
                       compute_mode="donot_use_mm_for_euclid_dist")


def part_averaged_distance(parts: Tensor, visibility: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The distance of every pair of a batch averaged over parts: parts [N, K, D] -> (dist [N, N],
    comparable [N, N] bool). With visibility [N, K] (binary or in [0, 1]) the average is weighted by
    sqrt(v_k^a v_k^b), i.e. over the parts visible in both images for binary scores, and a pair with no
    such part is not comparable (code: PartAveragedTripletLoss with parts_visibility, masked_mean)."""
    d = part_euclidean_distances(parts, parts)                          # [K, N, N]
    if visibility is None:
        return d.mean(0), torch.ones(d.shape[1:], dtype=torch.bool, device=d.device)
    weight = (visibility.t().unsqueeze(2) * visibility.t().unsqueeze(1)).sqrt()  # [K, N, N]
    total = weight.sum(0)                                               # [N, N]
    dist = (weight * d).sum(0) / total.clamp_min(torch.finfo(d.dtype).tiny)
    return dist, total > 0


def masked_batch_hard_triplet_loss(dist: Tensor, pids: Tensor, margin: float | None,
                                   comparable: Tensor | None = None) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) over comparable pairs (code:
    PartAveragedTripletLoss._hard_mine_triplet_loss): for each anchor the farthest comparable positive
    other than itself and the closest comparable negative; anchors lacking either are left out; hard margin
    relu(d_ap - d_an + margin), or softplus(d_ap - d_an) with margin None; mean over the kept anchors."""
    n = pids.shape[0]
    if comparable is None:
        comparable = torch.ones(n, n, dtype=torch.bool, device=dist.device)
    same = pids[:, None] == pids[None, :]
    itself = torch.eye(n, dtype=torch.bool, device=dist.device)
    positive = same & ~itself & comparable
    negative = ~same & comparable
    d_ap = dist.masked_fill(~positive, float("-inf")).amax(1)           # [N]
    d_an = dist.masked_fill(~negative, float("inf")).amin(1)            # [N]
    valid = positive.any(1) & negative.any(1)
    if not valid.any():  # nothing to compare: keep the graph so that backward() still works
        return dist.sum() * 0.0
    gap = d_ap[valid] - d_an[valid]
    return (F.softplus(gap) if margin is None else F.relu(gap + margin)).mean()


def part_averaged_triplet_loss(parts: Tensor, pids: Tensor, margin: float | None,
                               visibility: Tensor | None = None) -> Tensor:
    """GiLt's local triplet: batch-hard mining on the part-averaged Euclidean distance. parts [N, K, D]
    (a holistic embedding is K = 1), pids [N], visibility [N, K] or None (every part counts)."""
    dist, comparable = part_averaged_distance(parts, visibility)
    return masked_batch_hard_triplet_loss(dist, pids, margin, comparable)


# ----------------------------------------------------------------------------------------------------------
# Matching

def visibility_aware_distance(entries_a: Tensor, vis_a: Tensor, entries_b: Tensor, vis_b: Tensor) -> Tensor:
    """Test distance [A, B] of entries [A, E, D] and [B, E, D] (holistic embeddings and parts, each
    L2-normalised by the caller) with visibility [A, E], [B, E]: the Euclidean distances of entries
    averaged with weights sqrt(v^a v^b), i.e. over the entries visible in both images for binary scores
    (code: compute_distance_matrix_using_bp_features, "mean"). A pair sharing no visible entry gets
    UNMATCHED_DISTANCE."""
    root_a, root_b = vis_a.clamp_min(0).sqrt(), vis_b.clamp_min(0).sqrt()
    dist = weighted_part_distance(entries_a, root_a, entries_b, root_b, metric="euclidean")
    shared = (root_a @ root_b.t()) > 0
    return dist.masked_fill(~shared, UNMATCHED_DISTANCE)


# ----------------------------------------------------------------------------------------------------------
# The method

def grouping_of(part_names: tuple[str, ...]) -> str | None:
    """The name of the registered mask grouping with these parts, in this order (None if none has)."""
    from reidlib.data.masks import MASK_GROUPINGS

    for name in MASK_GROUPINGS.names():
        if MASK_GROUPINGS.get(name).parts == tuple(part_names):
            return name
    return None


@METHODS.register("bpbreid")
class BPBreID(ReIDMethod):
    """BPBreID (see the module docstring). K and the part names come from `info.part_names` (the data's
    `mask_grouping`), so the pixel classifier predicts the channels the parsing labels carry."""

    config_class = BPBreIDConfig
    needs_masks = True
    distance_chunk = 256

    def __init__(self, cfg: BPBreIDConfig, info: DataInfo):
        super().__init__(cfg, info)
        if not info.part_names:
            raise ValueError("BPBreID learns its part maps from human-parsing labels: build it with a "
                             "DataInfo whose part_names come from data.masks / data.mask_grouping")
        self.num_parts = k = len(info.part_names)
        self.grouping = grouping_of(info.part_names)
        kwargs = {} if cfg.last_stride is None else {"last_stride": cfg.last_stride}
        self.backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
        channels = self.backbone.out_channels
        self.pixel_classifier = self._build_pixel_classifier(channels, k)
        dim = channels if cfg.dim_reduce is None else cfg.dim_reduce
        self.dim = dim
        self.reduce, self.map_reduce = None, None
        if cfg.dim_reduce is not None and cfg.dim_reduce_at == "before_pooling":
            self.map_reduce = self._build_map_reduction(channels, dim)  # the map is pooled at width D
        elif cfg.dim_reduce is not None:  # code: one reduction per embedding type, the parts sharing theirs
            self.reduce = nn.ModuleDict({name: EmbeddingReduction(width, dim)
                                         for name, width in self._pooled_channels(channels).items()})
        m = info.num_classes
        self.heads = nn.ModuleDict({"global": GlobalHead(dim, m), "foreground": GlobalHead(dim, m),
                                    "concat": GlobalHead(k * dim, m)})
        self.part_heads = PartHeads(k, dim, m, cfg.shared_part_classifier) if cfg.needs_part_heads else None

    def part_layout(self) -> PartLayout:
        return PartLayout("grouping", self.num_parts, self.grouping)

    def param_groups(self, base_lr: float) -> list[dict]:
        factor = self.cfg.backbone_lr_factor
        return scaled_param_groups(self, base_lr, lambda name: factor if name.startswith("backbone.") else 1)

    # --- the pieces a subclass may replace (PAB-ReID: its predictor, fixed stripes, its feature fuser)
    def _build_pixel_classifier(self, channels: int, num_parts: int) -> nn.Module | None:
        """The module giving the K+1 pixel logits from F [N, C, h, w] (None: the maps are not learned)."""
        return PixelToPartClassifier(channels, num_parts)

    def _build_map_reduction(self, channels: int, dim: int) -> nn.Module:
        """The reduction of the map before pooling, [N, C, h, w] -> [N, D, h, w] (code:
        BeforePoolingDimReduceLayer, 1x1 conv -> BN -> ReLU; BPSEMA-ReID refines it)."""
        return MapReduction(channels, dim)

    def _pooled_channels(self, channels: int) -> dict[str, int]:
        """Width of each pooled embedding before its reduction (all C: pooled from F itself)."""
        return {"global": channels, "foreground": channels, "parts": channels}

    def _part_attention(self, fmap: Tensor) -> tuple[Tensor | None, Tensor]:
        """(pixel logits [N, K+1, h, w] or None, the attention maps [N, K+1, h, w], background first)."""
        pixel_logits = self.pixel_classifier(fmap)                      # [N, K+1, h, w]
        return pixel_logits, part_probabilities(pixel_logits)

    def _pool(self, fmap: Tensor, part_maps: Tensor, foreground: Tensor) -> tuple[dict[str, Tensor],
                                                                               dict[str, Tensor]]:
        """(global / foreground / parts embeddings before reduction, extra outputs for `explain`)."""
        return pool_embeddings(fmap, part_maps, foreground, self.cfg.foreground_pooling), {}

    # --- shared feature computation
    def _features(self, images: Tensor) -> dict[str, Tensor]:
        """Everything one forward pass gives, in training and test alike (BN layers follow the mode)."""
        cfg = self.cfg
        fmap = self.backbone(images)                                    # F [N, C, h, w]
        pixel_logits, probabilities = self._part_attention(fmap)        # [N, K+1, h, w] each
        part_maps = probabilities[:, 1:]                                # [N, K, h, w]
        foreground = foreground_attention(part_maps, cfg.foreground_map)  # [N, h, w]
        visibility = visibility_scores(probabilities.detach(), cfg.visibility, cfg.visibility_threshold)
        appearance = fmap if self.map_reduce is None else self.map_reduce(fmap)  # [N, C or D, h, w]
        pooled, extra = self._pool(appearance, part_maps, foreground)
        if self.reduce is not None:
            pooled = {name: self.reduce[name](x) for name, x in pooled.items()}
        out = {"feature_map": fmap, **extra, "part_maps": part_maps, "foreground_map": foreground,
               "part_visibility": visibility[:, 1:],                    # [N, K]
               "part_peaks": probabilities[:, 1:].detach().amax(dim=(2, 3)),  # [N, K], for test-time mu
               # code: foreground_visibility = max over the K+1 scores (always 1 for binary scores)
               "foreground_visibility": visibility.amax(dim=1),         # [N]
               **pooled,                                                # global, foreground, parts
               "concat": pooled["parts"].flatten(1)}                    # [N, K*D]
        if pixel_logits is not None:
            out["pixel_logits"] = pixel_logits
        for name, head in self.heads.items():
            out[f"bn_{name}"], out[f"logits_{name}"] = head(out[name])  # [N, D], [N, M]
        if self.part_heads is not None:
            out["bn_parts"], out["logits_parts"] = self.part_heads(out["parts"])  # [N, K, D], [N, K, M]
        return out

    # --- method contract
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        feats = self._features(batch.images)
        feats.pop("feature_map")
        return feats

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """GiLt terms (id_<embedding>, triplet_<embedding>) and the body part attention term (pixel), each
        already multiplied by its weight; the engine sums them."""
        cfg, pids = self.cfg, batch.pids
        terms = gilt_loss(outputs, pids, cfg)
        if cfg.pixel_weight > 0:
            if batch.masks is None:
                raise ValueError(f"{type(self).__name__}'s body part attention loss needs parsing labels: "
                                 "batch.masks is None (set data.masks to 'parsing' or 'pifpaf')")
            terms["pixel"] = cfg.pixel_weight * body_part_attention_loss(
                outputs["pixel_logits"], batch.masks, cfg.pixel_label_smoothing, cfg.target_resize)
        return terms

    def _test_entries(self, feats: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None,
                                                                 Tensor | None, Tensor | None]:
        """(holistic [N, H, D], their visibility [N, H], parts [N, K, D], their visibility [N, K]) of the
        configured test embeddings, each embedding L2-normalised (code: test.normalize_feature)."""
        cfg = self.cfg
        holistic, holistic_vis, parts, parts_vis = [], [], None, None
        for name in cfg.test_embeddings:
            base = name.removeprefix("bn_")
            x = F.normalize(feats[name], dim=-1)
            if base == "parts":
                parts = x
                parts_vis = feats["part_visibility"]
            else:
                holistic.append(x)
                holistic_vis.append(feats["foreground_visibility"] if base == "foreground"
                                    else torch.ones_like(feats["foreground_visibility"]))
        if not cfg.test_visibility:
            holistic_vis = [torch.ones_like(v) for v in holistic_vis]
            parts_vis = None if parts_vis is None else torch.ones_like(parts_vis)
        return _stack(holistic), _stack(holistic_vis), parts, parts_vis

    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        """parts [N, K, D] and weights [N, K] (visibility), extras holistic [N, H, D] and
        holistic_weights [N, H] (the configured holistic test embeddings), all L2-normalised, and
        part_peaks [N, K] (each part map's peak, so that a threshold visibility can be re-decided when
        matching, `distance`)."""
        feats = self._features(batch.images)
        holistic, holistic_vis, parts, parts_vis = self._test_entries(feats)
        extras = {} if holistic is None else {"holistic": holistic, "holistic_weights": holistic_vis}
        if parts is not None:
            extras["part_peaks"] = feats["part_peaks"]
        return Embedding(parts=parts, weights=parts_vis, extras=extras)

    def _entries(self, emb: Embedding) -> tuple[Tensor, Tensor]:
        """The test entries of an embedding that `test_entries` keeps, holistic first: [N, H+K, D],
        [N, H+K] (a matching-time switch: BPSEMA-ReID's Fig. 9 ranks by the parts alone). With threshold
        visibility the parts' weights are Eq. (5) with this model's threshold, applied here: mu is a
        matching-time switch (PAB-ReID Fig. 6) that re-scores embeddings extracted once."""
        cfg = self.cfg
        entries, weights = [], []
        if "holistic" in emb.extras and cfg.test_entries != "parts":
            entries.append(emb.extras["holistic"])
            weights.append(emb.extras["holistic_weights"])
        if emb.parts is not None and cfg.test_entries != "holistic":
            entries.append(emb.parts)
            rethreshold = cfg.test_visibility and cfg.visibility == "threshold" and "part_peaks" in emb.extras
            weights.append(threshold_visibility(emb.extras["part_peaks"], cfg.visibility_threshold)
                           if rethreshold else emb.weights)
        if not entries:
            raise ValueError(f"model.test_entries={cfg.test_entries!r} keeps none of the embedded entries "
                             f"(test_embeddings={list(cfg.test_embeddings)}): use 'all' or embed both kinds")
        return torch.cat(entries, 1), torch.cat(weights, 1)

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """[Q, G] visibility-aware distance over the test entries, in query chunks."""
        q_entries, q_vis = self._entries(query)
        g_entries, g_vis = self._entries(gallery)
        return chunked(lambda rows: visibility_aware_distance(q_entries[rows], q_vis[rows], g_entries, g_vis),
                       len(query), self.distance_chunk)

    # --- figures
    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """part_maps: the K part attention maps [N, K, h, w]; part_scores: their visibility [N, K];
        attention: the foreground map [N, h, w]; activation: the channel L2 norm of F [N, h, w]."""
        feats = self._features(batch.images)
        return {"part_maps": feats["part_maps"], "part_scores": feats["part_visibility"],
                "attention": feats["foreground_map"].clamp(0.0, 1.0),
                "activation": feats["feature_map"].norm(dim=1)}


def _stack(tensors: list[Tensor]) -> Tensor | None:
    return torch.stack(tensors, 1) if tensors else None


def gilt_loss(outputs: dict[str, Tensor], pids: Tensor, cfg: BPBreIDConfig) -> dict[str, Tensor]:
    """GiLt (code: GiLtLoss.forward): for each embedding with a weight, an identity cross-entropy with
    label smoothing on its BNNeck logits and a part-averaged batch-hard triplet on the embedding itself
    (a holistic one as one part). With `train_visibility`, the part triplet averages over the parts
    visible in both images and the part identity loss skips invisible parts (code: use_visibility_scores).
    Keys id_<embedding> / triplet_<embedding>, weighted."""
    terms: dict[str, Tensor] = {}
    for name in EMBEDDINGS:
        weight = cfg.id_weight(name)
        if weight > 0:
            terms[f"id_{name}"] = weight * _identity_loss(outputs, name, pids, cfg)
    for name in EMBEDDINGS:
        weight = cfg.triplet_weight(name)
        if weight > 0:
            x = outputs[name]
            parts = x if x.dim() == 3 else x.unsqueeze(1)               # [N, K or 1, D]
            visibility = None
            if cfg.train_visibility:
                visibility = outputs["part_visibility"] if name == "parts" else _holistic_visibility(
                    outputs, name)
            terms[f"triplet_{name}"] = weight * part_averaged_triplet_loss(parts, pids, cfg.triplet_margin,
                                                                           visibility)
    return terms


def _holistic_visibility(outputs: dict[str, Tensor], name: str) -> Tensor:
    """[N, 1]: the code's visibility of a holistic embedding (foreground and concat: the foreground's)."""
    vis = outputs["foreground_visibility"]
    return (torch.ones_like(vis) if name == "global" else vis).unsqueeze(1)


def _identity_loss(outputs: dict[str, Tensor], name: str, pids: Tensor, cfg: BPBreIDConfig) -> Tensor:
    if name != "parts":
        return cross_entropy_label_smooth(outputs[f"logits_{name}"], pids, cfg.label_smoothing)
    logits = outputs["logits_parts"]                                    # [N, K, M]
    labels = pids.unsqueeze(1).expand(-1, logits.shape[1])              # [N, K]
    if cfg.train_visibility:  # code: binary scores drop the invisible parts' samples
        keep = outputs["part_visibility"] > 0                           # [N, K]
        if not keep.any():
            return logits.sum() * 0.0
        return cross_entropy_label_smooth(logits[keep], labels[keep], cfg.label_smoothing)
    return cross_entropy_label_smooth(logits.flatten(0, 1), labels.flatten(), cfg.label_smoothing)


__all__ = [
    "BPBreID", "BPBreIDConfig", "EMBEDDINGS", "TEST_EMBEDDINGS", "UNMATCHED_DISTANCE", "EmbeddingReduction",
    "MapReduction", "PartHeads", "PixelToPartClassifier", "body_part_attention_loss", "foreground_attention",
    "gilt_loss", "grouping_of", "masked_batch_hard_triplet_loss", "part_averaged_distance",
    "part_averaged_triplet_loss", "part_euclidean_distances", "part_probabilities", "pixel_targets",
    "pool_embeddings", "threshold_visibility", "visibility_aware_distance", "visibility_scores",
]
