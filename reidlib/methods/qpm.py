"""QPM: Quality-aware Part Models for occluded person re-identification.

Paper: P. Wang, C. Ding, Z. Shao, Z. Hong, S. Zhang, D. Tao, "Quality-aware Part Models for Occluded Person
Re-identification", IEEE Transactions on Multimedia, doi:10.1109/TMM.2022.3156282; arXiv:2201.00107.

Section III, equation by equation:
- Part branch (III-A): F is split into K horizontal stripes and region-average pooled (z_k). A non-shared
  1x1 conv gives f_k, with one ID classifier per part (Eq. 1). A non-shared predictor
  (1x1 conv -> BN -> sigmoid on z_k) gives the quality score q_k. The part distance is the
  quality-weighted average of cosine part distances (Eq. 2), trained with a batch-hard triplet loss
  normalised by the number of violating triplets (Eq. 3).
- Global branch, ISA (III-B): G = conv1x1(F). h = sum_k q^_k g_k (Eqs. 4-5), the SE-like reduction with
  an ID loss on the reduced feature (Eq. 6), M = sigma(G * h~) (Eq. 7), G~ = M * G + G (Eq. 8). The ISA
  module lives in `spatial_attention.py` next to the Table VII alternatives.
- AGFE (III-C): each image pair pools its stripe features of G~ with the pair's joint quality weights
  (Eqs. 9-11). An ID loss covers all N x N pairs (Eq. 12) and a triplet loss uses pair-wise cosine
  distances (Eq. 13). The total loss is Eq. (14).
- Matching (III-D): part distances (Eq. 2) against the whole gallery, then the top-n neighbours are
  re-scored with D = gamma * D_part + (1 - gamma) * D_global (Eq. 15).

"Fine-tuned from the IDE model" (Sec. IV-A) is the `stage` switch. `stage: ide` trains the IDE model
(backbone, GAP, one classifier, cross-entropy); configs/qpm.yaml names that stage in `init_from`, so every
QPM run starts from its backbone (`ReIDMethod.load_stage`: the tensors both models share).

Ablations (Tables V-VII) and sweeps (Tables IX-XI) are switches on `QPMConfig`: `QPM.ablations` maps each
table row, spelled as in the paper, to them. Table V's "Part branch" (58.3 / 46.7 on Occluded-Duke) is
Table XI's gamma = 1.0 row by the paper's own numbers: the jointly trained QPM scored with its part
distance alone, so it re-scores the QPM run; "Part branch (trained alone)" is a part-only model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import ConfigError, check_range
from reidlib.distance import chunked
from reidlib.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from reidlib.methods import METHODS
from reidlib.methods.base import Ablation, Batch, DataInfo, Embedding, PartLayout, ReIDMethod
from reidlib.methods.parts import (
    PartLinear,
    conv1x1,
    stripe_maps,
    stripe_pool,
    weighted_part_distance,
    weighted_unit_parts,
)
from reidlib.methods.spatial_attention import ATTENTIONS, NEEDS_SPATIAL_SIZE, build_spatial_attention
from reidlib.models import build_backbone

GlobalFeature = Literal["none", "gap", "single", "agfe"]
Attention = Literal["isa", "fc_sa", "rga_sa", "ra_sa", "cbam_sa", "none"]

# Cosine distances lie in [0, 2]. Every distance of Eq. (2) and Eq. (15) is an average of them, so adding
# this bound to the part distance of a gallery item outside the top-n ranks it behind every re-scored one.
MAX_COSINE_DISTANCE = 2.0
# Elements per intermediate tensor in chunked all-pairs computations (~64 MB in float32).
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class QPMConfig:
    """QPM hyper-parameters (Sec. III, IV-A) and ablation switches (Tables V-VII)."""

    # --- architecture, Sec. III-A / IV-A
    backbone: str = "resnet50"            # ResNet-50 with its last down-sampling removed
    pretrained: str | None = None         # backbone weights: a file, a folder or "default" (never downloaded)
    stage: Literal["ide", "qpm"] = "qpm"  # "ide": the IDE model QPM is fine-tuned from (Sec. IV-A)
    num_parts: int = 6                    # K
    part_dim: int = 1024                  # d (Table X)
    global_dim: int = 1024                # channels of G; not stated, taken equal to d
    embed_block: Literal["conv", "conv_bn", "conv_bn_relu"] = "conv_bn"  # the 1x1 convs giving f_k and G
    quality_bn: bool = True               # BN between the quality conv and the sigmoid
    # --- ablation switches, Tables V-VII (see QPM.ablations)
    part_branch: bool = True              # part features f_k, Eq. (1), D_part
    quality: bool = True                  # False: every q_k = 1 (Baseline rows)
    part_triplet: bool = True             # Eq. (3)
    global_feature: GlobalFeature = "agfe"  # gap: GAP of G~; single: Eq. (4) on G~; agfe: Eqs. (9)-(11)
    spatial_attention: Attention = "isa"  # Table VII
    attention_residual: bool | None = True  # True: G~ = M*G + G for every module; None: each one's own
    isa_reduction: int = 4                # reduction ratio of ISA's two-layer network
    isa_id_loss: bool = True              # Eq. (6)
    detach_quality: bool = False          # True: global-branch losses do not train the quality predictor
    # --- losses
    margin: float = 0.3                   # alpha of Eqs. (3) and (13)
    label_smoothing: float = 0.0          # the paper uses plain cross-entropy
    # --- matching, Sec. III-D
    gamma: float = 0.6                    # Eq. (15)
    top_n: int | None = 30                # n neighbours re-scored with Eq. (15); None: the whole gallery

    def validate(self) -> None:
        for name in ("num_parts", "part_dim", "global_dim", "isa_reduction"):
            check_range(f"model.{name}", getattr(self, name), 1)
        check_range("model.margin", self.margin, 0.0)
        check_range("model.label_smoothing", self.label_smoothing, 0.0, 0.99)
        check_range("model.gamma", self.gamma, 0.0, 1.0)
        if self.top_n is not None:
            check_range("model.top_n", self.top_n, 1)
        if self.stage == "qpm" and not self.part_branch and self.global_feature == "none":
            raise ConfigError("model: part_branch is false and global_feature is 'none', so nothing is "
                              "learned; enable the part branch or pick global_feature gap/single/agfe")
        if self.spatial_attention != "none" and self.global_feature == "none":
            raise ConfigError(f"model.spatial_attention={self.spatial_attention!r} acts on the global "
                              "branch; set global_feature to gap/single/agfe or spatial_attention to 'none'")

    @property
    def uses_quality_predictor(self) -> bool:
        """Whether the quality predictor is learned: the part distances, ISA, SI and AGFE all pool with q."""
        if not self.quality:
            return False
        return (self.part_branch or self.spatial_attention == "isa"
                or self.global_feature in ("single", "agfe"))


# ----------------------------------------------------------------------------------------------------------
# Ablation and sweep rows (names exactly as printed in the paper's tables)

_PART_ONLY = {"global_feature": "none", "spatial_attention": "none"}
_GLOBAL_ONLY = {"part_branch": False, "part_triplet": False}


def _agfe_with(attention: str) -> Ablation:
    return Ablation({**_GLOBAL_ONLY, "global_feature": "agfe", "spatial_attention": attention})


ABLATIONS: dict[str, Ablation] = {
    # Table V
    "Baseline": Ablation({**_PART_ONLY, "quality": False, "part_triplet": False}),   # PCB [3]
    "Baseline(+triplet)": Ablation({**_PART_ONLY, "quality": False, "part_triplet": True}),
    "Part branch": Ablation(test={"gamma": 1.0}, base="QPM"),  # = Table XI's gamma = 1.0 (see docstring)
    "Part branch (trained alone)": Ablation(_PART_ONLY),       # not in the paper: a part-only model
    "GAP global": Ablation({**_GLOBAL_ONLY, "quality": False, "global_feature": "gap",
                            "spatial_attention": "none"}),
    "GAP global(+ISA)": Ablation({**_GLOBAL_ONLY, "global_feature": "gap", "spatial_attention": "isa"}),
    "AGFE global": _agfe_with("none"),
    "AGFE global(+ISA)": _agfe_with("isa"),
    "QPM": Ablation(),
    # Table VI (its "GAP global" and "AGFE global" rows are the Table V ones)
    "SI global": Ablation({**_GLOBAL_ONLY, "global_feature": "single", "spatial_attention": "none"}),
    # Table VII: each module on top of "AGFE global"; "+ISA" is "AGFE global(+ISA)"
    "+FC-SA": _agfe_with("fc_sa"),
    "+RGA-SA": _agfe_with("rga_sa"),
    "+RA-SA": _agfe_with("ra_sa"),
    "+CBAM-SA": _agfe_with("cbam_sa"),
    "+ISA": _agfe_with("isa"),
    # Tables IX and X retrain with K parts / dimension d; Table XI re-scores the QPM run with Eq. (15)'s gamma
    **{f"K={k}": Ablation({"num_parts": k}) for k in (2, 3, 4, 6, 8)},
    **{f"d={d}": Ablation({"part_dim": d, "global_dim": d}) for d in (128, 256, 512, 1024)},
    **{f"gamma={g:.1f}": Ablation(test={"gamma": g}, base="QPM") for g in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)},
}


# ----------------------------------------------------------------------------------------------------------
# The equations as pure functions

def pair_weights(q_a: Tensor, q_b: Tensor, eps: float = 1e-12) -> Tensor:
    """Eq. (11): q~_k = q_k^a q_k^b / sum_i q_i^a q_i^b, on broadcastable [..., K] -> [..., K]."""
    joint = q_a * q_b
    return joint / joint.sum(-1, keepdim=True).clamp_min(eps)


def agfe_features(g_a: Tensor, q_a: Tensor, g_b: Tensor, q_b: Tensor) -> tuple[Tensor, Tensor]:
    """Eqs. (9)-(10): the global features of a pair, pooled with the pair's joint weights (Eq. 11).

    g [..., K, C] stripe features of G~, q [..., K]; leading dimensions broadcast (e.g. g_a [A, 1, K, C]
    with g_b [1, B, K, C] gives all pairs). Returns (h_b^a, h_a^b): a's feature for this pair and b's,
    each [..., C]."""
    w = pair_weights(q_a, q_b).unsqueeze(-2)                           # [..., 1, K]
    return (w @ g_a).squeeze(-2), (w @ g_b).squeeze(-2)


def agfe_distance_matrix(g_a: Tensor, q_a: Tensor, g_b: Tensor, q_b: Tensor, eps: float = 1e-12,
                         gram_b: Tensor | None = None) -> Tensor:
    """Cosine distance of the AGFE features of every pair (a, b): [A, K, C] x [B, K, C] -> [A, B].

    h_b^a = sum_k w_k g_k^a, so <h_b^a, h_a^b> = w^T S_ab w with S_ab[k, l] = <g_k^a, g_l^b>. The [A, B, C]
    pair features are never built, only [A, B, K, K] Gram blocks (K = 6). `gram_b` may carry
    g_b @ g_b^T [B, K, K] precomputed."""
    w = pair_weights(q_a.unsqueeze(1), q_b.unsqueeze(0))                # [A, B, K]
    cross = torch.einsum("akc,blc->abkl", g_a, g_b)                     # [A, B, K, K]
    gram_a = g_a @ g_a.transpose(1, 2)                                  # [A, K, K]
    if gram_b is None:
        gram_b = g_b @ g_b.transpose(1, 2)                              # [B, K, K]
    dot = torch.einsum("abk,abkl,abl->ab", w, cross, w)
    sq_a = torch.einsum("abk,akl,abl->ab", w, gram_a, w)
    sq_b = torch.einsum("abk,bkl,abl->ab", w, gram_b, w)
    return 1.0 - dot / (sq_a.clamp_min(eps).sqrt() * sq_b.clamp_min(eps).sqrt())


def agfe_pair_logits(part_logits: Tensor, q: Tensor) -> Tensor:
    """Classifier logits W^s h_g^p of every ordered pair (p, g) in a batch (the terms of Eq. 12).

    The classifier is affine and the weights of Eq. (11) sum to one, so
    W^s h_g^p + b = sum_k q~_k (W^s g~_k^p + b). Classifying the K stripes once ([N, K, M]) and mixing
    costs N*N*K*M instead of N*N*C*M. part_logits [N, K, M], q [N, K] -> [N(p), N(g), M]."""
    w = pair_weights(q.unsqueeze(1), q.unsqueeze(0))                    # [N, N, K]
    return torch.einsum("pgk,pkm->pgm", w, part_logits)


# ----------------------------------------------------------------------------------------------------------
# Layers

class PartEmbedding(nn.Module):
    """z_k -> f_k: a non-shared 1x1 conv per part (Sec. III-A), optionally with BN and ReLU."""

    def __init__(self, num_parts: int, in_features: int, out_features: int, block: str):
        super().__init__()
        self.conv = PartLinear(num_parts, in_features, out_features)
        self.bn = nn.BatchNorm1d(num_parts * out_features) if "bn" in block else None
        self.relu = block.endswith("relu")

    def forward(self, z: Tensor) -> Tensor:                             # [N, K, C] -> [N, K, d]
        f = self.conv(z)
        if self.bn is not None:
            f = self.bn(f.flatten(1)).view_as(f)
        return F.relu(f) if self.relu else f


class PartQualityPredictor(nn.Module):
    """Per part: 1x1 conv (C -> 1), BN, sigmoid on z_k; parameters not shared between parts (Sec. III-A).
    The BN of a part normalises its scalar score over the batch (running statistics at test time)."""

    def __init__(self, num_parts: int, channels: int, bn: bool = True):
        super().__init__()
        self.score = PartLinear(num_parts, channels, 1)
        self.bn = nn.BatchNorm1d(num_parts) if bn else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:                             # [N, K, C] -> [N, K]
        return torch.sigmoid(self.bn(self.score(z).squeeze(-1)))


def _classifier(in_features: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, std=0.001)  # PCB's classifier initialisation
    nn.init.zeros_(fc.bias)
    return fc


# ----------------------------------------------------------------------------------------------------------
# The method

@METHODS.register("qpm")
class QPM(ReIDMethod):
    """QPM (see the module docstring). `info.image_size` sizes the attention modules with fixed-size
    layers (FC-SA, RGA-SA)."""

    config_class = QPMConfig
    metric = "cosine"
    distance_chunk = 256
    ablations = ABLATIONS

    def __init__(self, cfg: QPMConfig, info: DataInfo):
        super().__init__(cfg, info)
        num_classes = info.num_classes
        self.backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
        channels = self.backbone.out_channels
        k = cfg.num_parts
        self.attention = None
        if cfg.stage == "ide":
            self.ide_classifier = _classifier(channels, num_classes)
        else:
            if cfg.part_branch:
                self.part_embed = PartEmbedding(k, channels, cfg.part_dim, cfg.embed_block)
                self.part_classifier = PartLinear(k, cfg.part_dim, num_classes, init_std=0.001)  # W_k^p
            if cfg.uses_quality_predictor:
                self.quality_predictor = PartQualityPredictor(k, channels, cfg.quality_bn)
            if cfg.global_feature != "none":
                block = cfg.embed_block
                self.global_embed = conv1x1(channels, cfg.global_dim, bn="bn" in block,       # F -> G
                                            relu=block.endswith("relu"))
                spatial = (self._feature_size(info.image_size)
                           if cfg.spatial_attention in NEEDS_SPATIAL_SIZE else None)
                self.attention = build_spatial_attention(
                    cfg.spatial_attention, cfg.global_dim, k, spatial, cfg.attention_residual,
                    cfg.isa_reduction)
                self.global_classifier = _classifier(cfg.global_dim, num_classes)               # W^s
                if cfg.spatial_attention == "isa" and cfg.isa_id_loss:
                    self.isa_classifier = _classifier(self.attention.reduced_dim, num_classes)  # W^g

    # --- construction helpers
    def _feature_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            shape = self.backbone(torch.zeros(1, 3, *image_size)).shape
        self.backbone.train(was_training)
        return int(shape[2]), int(shape[3])

    def part_layout(self) -> PartLayout | None:
        return None if self.cfg.stage == "ide" else PartLayout("stripes", self.cfg.num_parts)

    # --- shared feature computation
    def _features(self, images: Tensor) -> dict[str, Tensor]:
        """Per-image quantities of every enabled branch."""
        cfg = self.cfg
        fmap = self.backbone(images)                                    # F  [N, C, h, w]
        out: dict[str, Tensor] = {"feature_map": fmap}
        if cfg.stage == "ide":
            out["ide_feat"] = fmap.mean((2, 3))                         # [N, C]
            return out
        z = stripe_pool(fmap, cfg.num_parts)                            # z_k [N, K, C]
        if cfg.uses_quality_predictor:
            q = self.quality_predictor(z)                               # q_k [N, K]
        else:
            q = z.new_ones(z.shape[:2])
        out["quality"] = q
        if cfg.part_branch:
            out["part_feats"] = self.part_embed(z)                      # f_k [N, K, d]
        if cfg.global_feature == "none":
            return out
        q_global = q.detach() if cfg.detach_quality else q
        g = self.global_embed(fmap)                                     # G  [N, Cg, h, w]
        out["global_map"] = g
        if self.attention is not None:
            att = self.attention.attend(g, q_global)                    # Eqs. (4)-(8) for ISA
            g_refined = att.refined                                     # G~ [N, Cg, h, w]
            out["attention"] = att.mask
            if "h_hat" in att.aux:
                out["isa_reduced"] = att.aux["h_hat"]                   # h^ [N, Cg/r]
        else:
            g_refined = g
        out["refined_map"] = g_refined
        if cfg.global_feature == "gap":
            out["global_feat"] = g_refined.mean((2, 3))                 # [N, Cg]
        else:
            stripes = stripe_pool(g_refined, cfg.num_parts)             # g~_k [N, K, Cg]
            if cfg.global_feature == "single":                          # Eq. (4) on G~ ("SI global")
                q_hat = q_global / q_global.sum(1, keepdim=True).clamp_min(1e-12)
                out["global_feat"] = torch.einsum("nk,nkc->nc", q_hat, stripes)
            else:
                out["global_parts"] = stripes
        return out

    # --- method contract
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        feats = self._features(batch.images)
        out = {k: v for k, v in feats.items() if k not in ("feature_map", "global_map", "refined_map")}
        if self.cfg.stage == "ide":
            out["ide_logits"] = self.ide_classifier(feats["ide_feat"])
            return out
        if "part_feats" in feats:
            out["part_logits"] = self.part_classifier(feats["part_feats"])            # [N, K, M]
        if "global_feat" in feats:
            out["global_logits"] = self.global_classifier(feats["global_feat"])       # [N, M]
        if "global_parts" in feats:
            out["global_part_logits"] = self.global_classifier(feats["global_parts"])  # [N, K, M]
        if "isa_reduced" in feats and hasattr(self, "isa_classifier"):
            out["isa_logits"] = self.isa_classifier(feats["isa_reduced"])             # [N, M]
        return out

    def _ce(self, logits: Tensor, pids: Tensor) -> Tensor:
        return cross_entropy_label_smooth(logits, pids, self.cfg.label_smoothing)

    def _triplet(self, dist: Tensor, pids: Tensor) -> Tensor:
        """Eqs. (3) / (13): batch-hard, normalised by the number of triplets that violate the margin."""
        return batch_hard_triplet_loss(pids, self.cfg.margin, dist=dist, average="violating")

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        cfg, pids = self.cfg, batch.pids
        terms: dict[str, Tensor] = {}
        if cfg.stage == "ide":
            return {"ide_id": self._ce(outputs["ide_logits"], pids)}
        q = outputs["quality"]
        if "part_logits" in outputs:                                    # Eq. (1): sum over parts
            logits = outputs["part_logits"]
            terms["part_id"] = sum(self._ce(logits[:, k], pids) for k in range(logits.shape[1]))
            if cfg.part_triplet:                                        # Eq. (3) on Eq. (2) distances
                parts = outputs["part_feats"]
                dist = weighted_part_distance(parts, q, parts, q)       # Eq. (2)
                terms["part_triplet"] = self._triplet(dist, pids)
        if "isa_logits" in outputs:                                     # Eq. (6)
            terms["global_id"] = self._ce(outputs["isa_logits"], pids)
        q_global = q.detach() if cfg.detach_quality else q
        if "global_part_logits" in outputs:                             # Eq. (12): all N x N pairs
            pair_logits = agfe_pair_logits(outputs["global_part_logits"], q_global)   # [N(p), N(g), M]
            n = pids.shape[0]
            labels = pids.unsqueeze(1).expand(n, n)                     # h_g^p carries p's identity
            ce = self._ce(pair_logits.reshape(n * n, -1), labels.reshape(-1))
            # (1/N^2) sum_{g,p} [CE(h_g^p) + CE(h_p^g)]: both sums run over the same N^2 ordered pairs
            terms["sg_id"] = 2.0 * ce
            stripes = outputs["global_parts"]                           # Eq. (13) on Eqs. (9)-(10)
            dist = agfe_distance_matrix(stripes, q_global, stripes, q_global)
            terms["global_triplet"] = self._triplet(dist, pids)
        elif "global_logits" in outputs:                                # GAP / SI global
            terms["sg_id"] = self._ce(outputs["global_logits"], pids)
            g = F.normalize(outputs["global_feat"], dim=1)
            terms["global_triplet"] = self._triplet(1.0 - g @ g.t(), pids)
        return terms                                                    # Eq. (14): their sum

    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        feats = self._features(batch.images)
        if self.cfg.stage == "ide":
            return Embedding(global_feat=feats["ide_feat"])
        extras = {"global_parts": feats["global_parts"]} if "global_parts" in feats else {}
        return Embedding(global_feat=feats.get("global_feat"), parts=feats.get("part_feats"),
                         weights=feats["quality"], extras=extras)

    # --- matching
    def _global_distance_matrix(self, query: Embedding, gallery: Embedding,
                                gram: Tensor | None = None) -> Tensor:
        if "global_parts" in query.extras:
            return agfe_distance_matrix(query.extras["global_parts"], query.weights,
                                        gallery.extras["global_parts"], gallery.weights, gram_b=gram)
        return 1.0 - F.normalize(query.global_feat, dim=1) @ F.normalize(gallery.global_feat, dim=1).t()

    def _global_distance_pairs(self, query: Embedding, gallery: Embedding, index: Tensor) -> Tensor:
        """Global distance of query i to gallery items index[i] ([Q, n]) -> [Q, n]."""
        if "global_parts" in query.extras:
            h_q, h_g = agfe_features(query.extras["global_parts"].unsqueeze(1), query.weights.unsqueeze(1),
                                     gallery.extras["global_parts"][index], gallery.weights[index])
            return 1.0 - F.cosine_similarity(h_q, h_g, dim=-1)
        q = F.normalize(query.global_feat, dim=1).unsqueeze(1)          # [Q, 1, C]
        g = F.normalize(gallery.global_feat, dim=1)[index]              # [Q, n, C]
        return 1.0 - (q * g).sum(-1)

    def _rows_per_chunk(self, per_row: int) -> int:
        """Query rows per chunk so that the largest intermediate stays near _CHUNK_ELEMENTS."""
        return max(1, min(self.distance_chunk, _CHUNK_ELEMENTS // max(1, per_row)))

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """[Q, G]. The part branch uses Eq. (2) and global-only models use their global distance. QPM
        applies Eq. (15) to the top-n part-distance neighbours; the other gallery items keep their
        part-distance order behind all re-scored ones. Computed in query chunks, with the gallery's
        operands prepared once."""
        cfg = self.cfg
        if cfg.stage == "ide":
            return super().distance(query, gallery)
        n_gallery, k = len(gallery), cfg.num_parts
        use_part, use_global = cfg.part_branch, cfg.global_feature != "none"
        agfe = "global_parts" in gallery.extras
        full_global = use_global and (not use_part or cfg.top_n is None or cfg.top_n >= n_gallery)
        unit = weighted_unit_parts(gallery.parts, gallery.weights) if use_part else None
        gram = None
        if agfe and full_global:
            parts = gallery.extras["global_parts"]
            gram = parts @ parts.transpose(1, 2)                        # [G, K, K]

        def part(rows: slice) -> Tensor:                                # Eq. (2)
            return weighted_part_distance(query.parts[rows], query.weights[rows], gallery.parts,
                                          gallery.weights, unit_b=unit)

        def rows_fn(rows: slice) -> Tensor:
            if not use_global:
                return part(rows)
            if full_global:
                d_global = self._global_distance_matrix(query[rows], gallery, gram)
                if not use_part:
                    return d_global
                return cfg.gamma * part(rows) + (1.0 - cfg.gamma) * d_global            # Eq. (15)
            d_part = part(rows)                                         # [q, G]
            index = d_part.topk(cfg.top_n, dim=1, largest=False).indices                # [q, n]
            d_global = self._global_distance_pairs(query[rows], gallery, index)
            rescored = cfg.gamma * d_part.gather(1, index) + (1.0 - cfg.gamma) * d_global  # Eq. (15)
            return (d_part + MAX_COSINE_DISTANCE).scatter(1, index, rescored)

        if full_global and agfe:
            per_row = n_gallery * k * k                                 # [q, G, K, K] Gram blocks
        elif use_global and not full_global:
            per_row = max(n_gallery, 2 * cfg.top_n * k * cfg.global_dim)  # gathered pair stripes
        else:
            per_row = n_gallery * k
        return chunked(rows_fn, len(query), self._rows_per_chunk(per_row))

    # --- figures
    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """Fig. 4: part_scores = the quality scores q_k [N, K] on the stripes of part_maps [N, K, h, w].
        Fig. 5: activation_before / activation, channel-L2 heat maps [N, h, w] of G before and after the
        spatial attention, and its mask `attention` [N, h, w] (channel mean for per-channel masks). A model
        without a global branch shows the backbone map F instead of G. Call it on a model in eval mode:
        the quality BN then uses its running statistics, as at test time."""
        feats = self._features(batch.images)
        before = feats.get("global_map", feats["feature_map"])
        after = feats.get("refined_map", before)
        out = {"activation_before": before.norm(dim=1), "activation": after.norm(dim=1)}
        if "quality" in feats:
            n, _, h, w = feats["feature_map"].shape
            out["part_scores"] = feats["quality"]
            out["part_maps"] = stripe_maps(self.cfg.num_parts, h, w, before.device).expand(n, -1, -1, -1)
        if "attention" in feats:
            out["attention"] = feats["attention"].mean(1)
        return out


__all__ = [
    "QPM", "QPMConfig", "ABLATIONS", "ATTENTIONS", "pair_weights", "agfe_features", "agfe_distance_matrix",
    "agfe_pair_logits", "MAX_COSINE_DISTANCE",
]
