"""RGANet: Region Generation and Assessment Network (Shuting He, Weihua Chen, Kai Wang, Hao Luo, Fan Wang,
Wei Jiang, Henghui Ding, "Region Generation and Assessment Network for Occluded Person Re-Identification",
IEEE Transactions on Information Forensics and Security, 2023). No code was released.

Section III on the CLIP image encoder of `reidlib.models.clip` (ViT-B/16, no overlapping patches):
- F [N, d, h, w]: the last block's patch tokens after ln_post, projected into CLIP's joint space (d = the
  text embeddings' width, Sec. III-C); the global feature F_g is their average (GAP, Sec. III-A).
- Region Generation Module: text prototypes p_1..p_N of the region names ("head", "upper body", "lower
  body", "foot") from the frozen text encoder, in a prompt of K learnable context vectors
  [V]_1..[V]_K [CLASS] (CoOp's unified context) or a hand-crafted template (Table VI); a learnable
  background embedding p_0; Eq. (1): S = softmax over {p_0, .., p_N} of gamma * cos(F(x, y), p_k) per
  position; Eq. (2): region features F_j^r by masked average pooling of F under S_j.
- Eq. (3): the prompt is learnt first, alone (`rganet_prompt`: every other parameter frozen), with the
  segmentation loss against pseudo parsing labels grouped into the N regions (`REGION_PARTS`).
- Region Assessment Module: Eq. (4) discrimination-aware indicator alpha_j = sigmoid(W_a^T F_j^r) (one FC
  shared by the regions); Eqs. (5)-(6) invariance-aware indicator: a memory bank of region class centres
  C_j, initialised by a pass over the training data with fixed-stripe features and updated with momentum
  m_u from the regions whose alpha exceeds 0.85, beta_j = softmax_j cos(F_j^r, C_j); the confidence w_j.
- Eq. (7) confidence-weighted ID loss per region; Eq. (8) L = sum_j L_ram + sum_j L_tri(F_j^r) + L_id(F_g)
  + L_tri(F_g); Eqs. (9)-(10): d = (sum_j w_j^q w_j^g d_j + d_g) / (sum_j w_j^q w_j^g + 1), cosine d's.
- Table V's rows are switches: `regions` none (the baseline) / stripes (PCB-style fixed stripes) / rgm,
  each with `dai` and `iai`.

Ambiguities and the choices made (switches where they matter):
- w_j: the text sums alpha_j and beta_j, then softmaxes over the regions; Fig. 4's numbers are the mean
  (alpha_j + beta_j) / 2 (`confidence`: "sum_softmax", the default, or "mean"). With one indicator, w_j is
  the softmax of that indicator (or the indicator itself under "mean"); with none (Table V's rows without
  RAM), w_j = 1, each region's ID loss counted fully as in PCB (`unassessed_weight: uniform`: 1/N, what
  the softmax gives equal scores, so that the RAM rows differ from them by the scores alone, not by the
  loss's scale: the softmaxed w sums to 1 over the regions). w is not detached in Eq. (7): it is how
  DAI's FC learns (no other loss reaches it).
- Eq. (3) sums over the body regions j = 1..N only, which never pulls p_0 towards the background; the
  background's term is kept by default (`seg_background`; False drops background positions). The sign is
  the usual negative log-likelihood, averaged over positions.
- Pseudo labels at the feature grid: the label map's area fractions per cell (`adaptive_avg_pool2d`), a
  cell taking its largest class (`seg_min_body: null`) or, with a threshold, its largest body region when
  at least that fraction of it is body (a coarse grid has few cells that are mostly one body part).
- The memory bank's "forward step at the beginning of training" is read as one pass over the training
  images (`memory_init_images` caps it). With DAI off, every region updates the bank. The text says a
  small m_u updates the bank slowly, Eq. (5) the opposite (m_u weighs the old centre): Eq. (5) is followed.
- F_g: GAP of F as Sec. III-A says (`global_pool: gap`); `cls` takes the projected class token, CLIP-ReID's
  feature (the ci / demo rows start from a CLIP baseline trained on it).
- Heads: BNNeck + bias-free classifier on F_g and on each region (BoT's head, as the CLIP baseline); the
  triplet losses take the features before the BNNecks; cross-entropy with the config's label smoothing.
- Main stage: the prompt, p_0 and the text encoder stay frozen (the prototypes "obtained" by the prompt
  stage); hand-crafted rows start from the same stage's weights (the image encoder, and its p_0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import ConfigError, check_range
from reidlib.distance import chunked, cosine
from reidlib.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from reidlib.methods import METHODS
from reidlib.methods.base import Ablation, Batch, DataInfo, Embedding, PartLayout, ReIDMethod
from reidlib.methods.clip_baseline import CLIPBaselineConfig, build_clip_encoder
from reidlib.methods.global_baseline import GlobalHead, is_bias, scaled_param_groups
from reidlib.methods.parts import PartLinear, masked_average_pool, stripe_maps, weighted_unit_parts
from reidlib.models.heads import CLASSIFIER_INIT_STD

PAPER_REGIONS = ("head", "upper body", "lower body", "foot")  # Sec. IV-B, N = 4
# The parts of the parsing grouping "eight" (reidlib.data.masks) each region name covers; Fig. 3(a)'s
# N = 2 and 3 use subsets ("bags", its N = 5, has no parsing label). A part no region names is background.
REGION_PARTS = {
    "head": ("head",),
    "upper body": ("left_arm", "right_arm", "torso"),
    "lower body": ("left_leg", "right_leg"),
    "foot": ("left_feet", "right_feet"),
}
LEARNABLE = "learnable"
Regions = Literal["none", "stripes", "rgm"]


@dataclass
class RGANetConfig(CLIPBaselineConfig):
    """RGANet's settings (Sec. III, IV-B) and the switches of Tables V-VI and Fig. 3."""

    regions: Regions = "rgm"              # Table V: none (baseline), stripes (fixed-stripe), rgm
    dai: bool = True                      # Table V: discrimination-aware indicator, Eq. (4)
    iai: bool = True                      # Table V: invariance-aware indicator, Eqs. (5)-(6)
    region_names: list[str] = field(default_factory=lambda: list(PAPER_REGIONS))  # N = 4, Fig. 3(a)
    prompt: str = LEARNABLE               # Table VI: "learnable" or a template holding [CLASS]
    prompt_length: int = 8                # K, Fig. 3(c)
    gamma: float = 20.0                   # Eq. (1), Fig. 3(b)
    memory_momentum: float = 0.3          # m_u of Eq. (5), Fig. 3(d)
    memory_threshold: float = 0.85        # Sec. III-D: alpha above which a region updates the bank
    memory_init_images: int | None = None  # the bank's initial pass: None = every training image
    confidence: Literal["sum_softmax", "mean"] = "sum_softmax"  # w_j: text (sum, softmax) / Fig. 4 (mean)
    unassessed_weight: Literal["one", "uniform"] = "one"  # w_j without DAI and IAI: 1 or 1/N (docstring)
    seg_background: bool = True           # Eq. (3) with the background's term (the equation: False)
    seg_min_body: float | None = None     # pseudo-label rule at the feature grid (module docstring)
    global_pool: Literal["gap", "cls"] = "gap"  # F_g: GAP of F (Sec. III-A) or the projected class token
    label_smoothing: float = 0.0          # Eqs. (7)-(8): cross-entropy (the paper is silent on smoothing)
    penultimate_triplet: bool = False     # a CLIP-ReID option the paper does not use
    test_feature: str = "before_bn"       # Eq. (9): cosine distances of F_g and F_j^r

    def validate(self) -> None:
        super().validate()
        if self.test_feature != "before_bn":
            raise ConfigError("model.test_feature: RGANet matches F_g and F_j^r before the BNNecks (Eq. 9); "
                              "leave it at 'before_bn'")
        if self.regions == "none" and (self.dai or self.iai):
            raise ConfigError("model.dai / model.iai assess regions: set them false with model.regions: none")
        unknown = [n for n in self.region_names if n not in REGION_PARTS]
        if unknown or not self.region_names or len(set(self.region_names)) != len(self.region_names):
            raise ConfigError(f"model.region_names={self.region_names!r}: name distinct regions among "
                              f"{list(REGION_PARTS)}")
        if self.prompt != LEARNABLE and "[CLASS]" not in self.prompt:
            raise ConfigError(f"model.prompt={self.prompt!r}: use 'learnable' or a template with [CLASS], "
                              "e.g. 'a [CLASS] part of a person.'")
        check_range("model.prompt_length", self.prompt_length, 1, 60)
        check_range("model.gamma", self.gamma, 1e-6)
        check_range("model.memory_momentum", self.memory_momentum, 0.0, 1.0)
        check_range("model.memory_threshold", self.memory_threshold, 0.0, 1.0)
        if self.memory_init_images is not None:
            check_range("model.memory_init_images", self.memory_init_images, 1)
        if self.seg_min_body is not None:
            check_range("model.seg_min_body", self.seg_min_body, 0.0, 1.0)


class RegionPrompts(nn.Module):
    """The text side of the RGM (Sec. III-C): prototypes p_1..p_N of the region names from the frozen text
    encoder, with K learnable context vectors (CoOp's unified context, N(0, 0.02) as CoOp's random init)
    or a fixed template, and the learnable background embedding p_0. forward(clip) -> [1 + N, d]."""

    def __init__(self, clip: nn.Module, names: list[str], prompt: str, length: int):
        super().__init__()
        self.learnable = prompt == LEARNABLE
        if self.learnable:  # "X X .. X head." : the K placeholders' embeddings are replaced by the context
            texts = [" ".join(["X"] * length) + f" {name}." for name in names]
        else:
            texts = [prompt.replace("[CLASS]", name) for name in names]
        tokens = clip.tokenize(texts)                                     # [N, ctx]
        self.register_buffer("tokens", tokens, persistent=False)
        self.length = length
        self.ctx = nn.Parameter(torch.randn(length, clip.text_width) * 0.02) if self.learnable else None
        self.background = nn.Parameter(torch.randn(clip.embed_dim) * clip.embed_dim ** -0.5)  # p_0 [d]

    def forward(self, clip: nn.Module) -> Tensor:
        if self.learnable:
            words = clip.model.token_embedding(self.tokens)               # [N, ctx, Dt]
            ctx = self.ctx.to(words.dtype).expand(len(words), -1, -1)     # [N, K, Dt]
            words = torch.cat([words[:, :1], ctx, words[:, 1 + self.length:]], dim=1)
            text = clip.encode_text_embeddings(words, self.tokens)        # [N, d]
        else:
            text = clip.encode_text(self.tokens)                          # [N, d]
        return torch.cat([self.background[None].to(text.dtype), text])   # [1 + N, d]


def region_targets(masks: Tensor, merge: Tensor, grid: tuple[int, int], min_body: float | None) -> Tensor:
    """Pseudo labels at the feature grid: masks [N, K+1, H, W] (background first) merged into regions by
    `merge` [1+R, K+1] (0/1), area fractions per cell, then one label per cell -> [N, h, w] in 0..R.
    min_body None: the largest class; a number: the largest region where at least that much is body."""
    regions = torch.einsum("rk,nkhw->nrhw", merge.to(masks.dtype), masks)  # [N, 1+R, H, W]
    frac = F.adaptive_avg_pool2d(regions, grid)                          # [N, 1+R, h, w]
    if min_body is None:
        return frac.argmax(1)
    body = frac[:, 1:]
    label = body.argmax(1) + 1
    return torch.where(body.sum(1) >= min_body, label, torch.zeros_like(label))


@METHODS.register("rganet")
class RGANet(ReIDMethod):
    """CLIP image encoder -> F -> (F_g, region features F_j^r under S_j or stripes) -> RAM (alpha, beta,
    w) -> losses id, triplet (global), ram, region_triplet; Eq. (10) at test time."""

    config_class = RGANetConfig
    metric = "cosine"
    backbone_attribute = "clip"
    # the prompt stage (`init_from`) learns with the row's own settings of these
    stage_fields: ClassVar[tuple[str, ...]] = ("region_names", "prompt_length", "gamma", "seg_background",
                                               "seg_min_body")
    ablations: ClassVar[dict[str, Ablation]] = {
        # Table V
        "Baseline": Ablation({"regions": "none", "dai": False, "iai": False}),
        "Fixed-stripe": Ablation({"regions": "stripes", "dai": False, "iai": False}),
        "Fixed-stripe + DAI": Ablation({"regions": "stripes", "dai": True, "iai": False}),
        "Fixed-stripe + IAI": Ablation({"regions": "stripes", "dai": False, "iai": True}),
        "Fixed-stripe + DAI + IAI": Ablation({"regions": "stripes", "dai": True, "iai": True}),
        "RGM": Ablation({"regions": "rgm", "dai": False, "iai": False}),
        "RGM + DAI": Ablation({"regions": "rgm", "dai": True, "iai": False}),
        "RGM + IAI": Ablation({"regions": "rgm", "dai": False, "iai": True}),
        "RGM + DAI + IAI": Ablation({"regions": "rgm", "dai": True, "iai": True}),
        # beyond the paper: the rows without RAM with the RAM rows' loss scale (sum_j w_j = 1)
        "Fixed-stripe, w = 1/N": Ablation({"regions": "stripes", "dai": False, "iai": False,
                                           "unassessed_weight": "uniform"}),
        "RGM, w = 1/N": Ablation({"regions": "rgm", "dai": False, "iai": False,
                                  "unassessed_weight": "uniform"}),
        # Table VI: RGM only
        **{f'"{p}"': Ablation({"regions": "rgm", "dai": False, "iai": False, "prompt": p})
           for p in ("a photo of a [CLASS].", "a person photo of a [CLASS].",
                     "a photo of a [CLASS] part of a person.", "a [CLASS] part of a person.")},
        '"[Learnable Tokens] + [CLASS]"': Ablation({"regions": "rgm", "dai": False, "iai": False}),
        # Fig. 3: (a)-(c) RGM only, (d) the full model
        **{f"N={n}": Ablation({"regions": "rgm", "dai": False, "iai": False,
                               "region_names": list(names)})
           for n, names in ((2, PAPER_REGIONS[1:3]), (3, PAPER_REGIONS[:3]), (4, PAPER_REGIONS))},
        **{f"gamma={g:g}": Ablation({"regions": "rgm", "dai": False, "iai": False, "gamma": g})
           for g in (1, 10, 20, 50, 100)},
        **{f"K={k}": Ablation({"regions": "rgm", "dai": False, "iai": False, "prompt_length": k})
           for k in (2, 4, 8, 12, 16)},
        **{f"m_u={m:g}": Ablation({"memory_momentum": m}) for m in (0.1, 0.3, 0.5, 0.7, 0.9)},
    }

    def __init__(self, cfg: RGANetConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.clip = clip = build_clip_encoder(cfg, info)
        self.num_regions = 0 if cfg.regions == "none" else len(cfg.region_names)
        d, n, classes = clip.embed_dim, self.num_regions, info.num_classes
        self.head = GlobalHead(d, classes)                               # BNNeck + classifier on F_g
        self.prompts = RegionPrompts(clip, cfg.region_names, cfg.prompt, cfg.prompt_length)
        self.prompts.requires_grad_(False)  # learnt by the prompt stage only
        if n:
            self.region_neck = nn.BatchNorm1d(n * d)                    # a BNNeck per region
            self.region_neck.bias.requires_grad_(False)
            self.region_classifier = PartLinear(n, d, classes, bias=False,      # W_b of Eq. (7)
                                                init_std=CLASSIFIER_INIT_STD)
        self.discrimination = nn.Linear(d, 1) if cfg.dai else None      # W_a of Eq. (4), shared by regions
        self.register_buffer("memory", torch.zeros(n, d))               # C_j of Eq. (5)

    # ------------------------------------------------------------------------------ features
    def feature_map(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(F [N, d, h, w] the projected patch tokens, the projected class token [N, d])."""
        cams = batch.camids if self.clip.sie_embed is not None else None
        cls, patches = self.clip.encode_image_tokens(batch.images, cams)  # [N, d], [N, L, Dv]
        return self.clip.spatial(self.clip.project(patches)), cls

    def region_logits(self, fmap: Tensor) -> Tensor:
        """gamma * cos(F(x, y), p_k) for k = 0..N: [N, d, h, w] -> [N, 1+N, h, w] (Eq. 1 before softmax)."""
        protos = F.normalize(self.prompts(self.clip), dim=1)              # [1+N, d]
        return self.cfg.gamma * torch.einsum("ndhw,kd->nkhw", F.normalize(fmap, dim=1), protos)

    def region_maps(self, fmap: Tensor) -> Tensor:
        """The maps the region features are pooled under, [N, R, h, w]: S_1..S_N (Eq. 1) or stripes."""
        n, _, h, w = fmap.shape
        if self.cfg.regions == "stripes":
            return stripe_maps(self.num_regions, h, w, fmap.device).to(fmap.dtype).expand(n, -1, -1, -1)
        return self.region_logits(fmap).softmax(1)[:, 1:]

    def assess(self, regions: Tensor) -> dict[str, Tensor]:
        """RAM on region features [N, R, d]: alpha (Eq. 4), beta (Eq. 6) and the confidence w, each [N, R]."""
        cfg, out = self.cfg, {}
        if cfg.dai:
            out["alpha"] = torch.sigmoid(self.discrimination(regions).squeeze(-1))           # Eq. (4)
        if cfg.iai:
            sim = F.cosine_similarity(regions, self.memory.to(regions.dtype)[None], dim=-1)  # [N, R]
            out["beta"] = sim.softmax(1)                                                       # Eq. (6)
        scores = [out[k] for k in ("alpha", "beta") if k in out]
        if not scores:
            scale = 1.0 if cfg.unassessed_weight == "one" else 1.0 / regions.shape[1]
            out["w"] = regions.new_full(regions.shape[:2], scale)
        elif cfg.confidence == "sum_softmax":
            out["w"] = sum(scores).softmax(1)
        else:
            out["w"] = sum(scores) / len(scores)
        return out

    @torch.no_grad()
    def update_memory(self, regions: Tensor, alpha: Tensor | None) -> None:
        """Eq. (5): C_j <- m_u C_j + (1 - m_u) mean of the batch's F_j^r whose alpha_j exceeds the threshold
        (every region's without DAI); a region with none keeps its centre."""
        keep = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device) if alpha is None \
            else alpha > self.cfg.memory_threshold                        # [N, R]
        count = keep.sum(0)                                               # [R]
        mean = torch.einsum("nr,nrd->rd", keep.to(regions.dtype), regions) / count.clamp_min(1)[:, None]
        m = self.cfg.memory_momentum
        updated = m * self.memory + (1 - m) * mean.to(self.memory.dtype)
        self.memory.copy_(torch.where((count > 0)[:, None], updated, self.memory))

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        fmap, cls = self.feature_map(batch)                               # [N, d, h, w], [N, d]
        out = {"fmap": fmap, "global": fmap.mean((2, 3)) if self.cfg.global_pool == "gap" else cls}
        if self.num_regions:
            out["maps"] = self.region_maps(fmap)                          # [N, R, h, w]
            out["regions"] = masked_average_pool(fmap, out["maps"])       # F_j^r [N, R, d], Eq. (2)
            out.update(self.assess(out["regions"]))
        return out

    # ------------------------------------------------------------------------------ training
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = self.encode(batch)
        out["bn_global"], out["logits"] = self.head(out["global"])
        if self.num_regions:
            n, r, d = out["regions"].shape
            bn = self.region_neck(out["regions"].flatten(1)).view(n, r, d)
            out["region_logits"] = self.region_classifier(bn)              # [N, R, C]
            if self.cfg.iai and self.training and torch.is_grad_enabled():
                self.update_memory(out["regions"].detach(), out.get("alpha"))
        return out

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        cfg, pids = self.cfg, batch.pids
        terms = {"id": cross_entropy_label_smooth(outputs["logits"], pids, cfg.label_smoothing),
                 "triplet": batch_hard_triplet_loss(pids, cfg.triplet_margin, features=outputs["global"])}
        if self.num_regions:
            logits, regions = outputs["region_logits"], outputs["regions"]   # [N, R, C], [N, R, d]
            n, r, c = logits.shape
            ce = F.cross_entropy(logits.reshape(n * r, c), pids.repeat_interleave(r),
                                 label_smoothing=cfg.label_smoothing, reduction="none").view(n, r)
            terms["ram"] = (outputs["w"] * ce).sum(1).mean()                  # Eq. (7), summed over j
            terms["region_triplet"] = sum(batch_hard_triplet_loss(pids, cfg.triplet_margin,
                                                                  features=regions[:, j]) for j in range(r))
        return terms

    def on_train_start(self, batches: Iterable[Batch]) -> None:
        """The memory bank's initialisation (Sec. III-D): C_j = the mean fixed-stripe feature of stripe j
        over the training images (the first `memory_init_images` of them)."""
        if not (self.num_regions and self.cfg.iai):
            return
        total, seen, limit = torch.zeros_like(self.memory), 0, self.cfg.memory_init_images
        for batch in batches:
            if limit is not None:
                batch = batch[: limit - seen]
            fmap, _ = self.feature_map(batch.to(self.memory.device))
            n, _, h, w = fmap.shape
            stripes = stripe_maps(self.num_regions, h, w, fmap.device).expand(n, -1, -1, -1)
            total += masked_average_pool(fmap.float(), stripes).sum(0)
            seen += n
            if limit is not None and seen >= limit:
                break
        self.memory.copy_(total / max(seen, 1))

    def param_groups(self, base_lr: float) -> list[dict]:
        factor = self.cfg.bias_lr_factor
        return scaled_param_groups(self, base_lr, lambda name: factor if is_bias(name) else 1.0)

    # ------------------------------------------------------------------------------ test
    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        out = self.encode(batch)
        if not self.num_regions:
            return Embedding(global_feat=out["global"])
        return Embedding(global_feat=out["global"], parts=out["regions"], weights=out["w"])

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """Eqs. (9)-(10), cosine distances: d = (sum_j w_j^q w_j^g d_j + d_g) / (sum_j w_j^q w_j^g + 1)."""
        if query.parts is None:
            return super().distance(query, gallery)
        unit_g = weighted_unit_parts(gallery.parts, gallery.weights)      # [G, R*d]

        def rows(sl: slice) -> Tensor:
            total = query.weights[sl] @ gallery.weights.t()               # sum_j w^q w^g  [q, G]
            regions = total - weighted_unit_parts(query.parts[sl], query.weights[sl]) @ unit_g.t()
            return (regions + cosine(query.global_feat[sl], gallery.global_feat)) / (total + 1)

        return chunked(rows, len(query), self.distance_chunk)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """activation: |F| per position; part_maps: S_1..S_N (or the stripes); part_scores: w."""
        out = self.encode(batch)
        maps = {"activation": out["fmap"].norm(dim=1)}
        if self.num_regions:
            maps.update(part_maps=out["maps"], part_scores=out["w"].clamp(0, 1))
        return maps

    @torch.no_grad()
    def assessment(self, batch: Batch) -> dict[str, Tensor]:
        """Fig. 4: alpha, beta and w per region, [N, R] each (those the row computes)."""
        out = self.encode(batch)
        return {k: out[k] for k in ("alpha", "beta", "w") if k in out}

    def part_layout(self) -> PartLayout | None:
        if self.cfg.regions == "stripes":
            return PartLayout("stripes", self.num_regions)
        if self.cfg.regions == "rgm" and tuple(self.cfg.region_names) == PAPER_REGIONS:
            return PartLayout("grouping", self.num_regions, grouping="four_v")  # the same four regions
        return None


@METHODS.register("rganet_prompt")
class RGANetPrompt(RGANet):
    """The prompt stage (Sec. III-C, IV-B): only the K context vectors and p_0 learn, with L_seg (Eq. 3)
    against pseudo parsing labels (data.masks, grouped by data.mask_grouping "eight" and merged into the
    regions by `REGION_PARTS`); the image and text encoders stay frozen (and in eval mode)."""

    needs_masks = True
    is_stage = True
    stage_fields: ClassVar[tuple[str, ...]] = ()  # its own stage (the trunk) is shared by every prompt

    def __init__(self, cfg: RGANetConfig, info: DataInfo):
        if cfg.regions != "rgm" or cfg.prompt != LEARNABLE:
            raise ConfigError("rganet_prompt learns the context vectors of a learnable prompt: set "
                              "model.regions: rgm and model.prompt: learnable")
        super().__init__(cfg, info)
        missing = [p for name in cfg.region_names for p in REGION_PARTS[name] if p not in info.part_names]
        if missing:
            raise ConfigError(f"the parsing labels have no part {missing} for model.region_names "
                              f"{cfg.region_names}: set data.mask_grouping to 'eight' "
                              f"(its parts: {info.part_names or 'none; data.masks is not set'})")
        merge = torch.zeros(1 + self.num_regions, 1 + len(info.part_names))   # [1+R, K+1]
        merge[0, 0] = 1.0
        for k, part in enumerate(info.part_names, start=1):
            covering = [j for j, name in enumerate(cfg.region_names, start=1) if part in REGION_PARTS[name]]
            merge[covering[0] if covering else 0, k] = 1.0               # unnamed parts: background
        self.register_buffer("merge", merge, persistent=False)
        self.requires_grad_(False)
        self.prompts.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen: no BatchNorm statistics (hybrid stem) or dropout change
        return self

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        with torch.no_grad():
            fmap, _ = self.feature_map(batch)
        return {"seg_logits": self.region_logits(fmap)}                   # [N, 1+R, h, w]

    def targets(self, masks: Tensor, grid: tuple[int, int]) -> Tensor:
        return region_targets(masks, self.merge, grid, self.cfg.seg_min_body)  # [N, h, w]

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits = outputs["seg_logits"]
        target = self.targets(batch.masks, tuple(logits.shape[-2:]))
        if not self.cfg.seg_background:  # Eq. (3) as printed: body positions only
            target = target.masked_fill(target == 0, -100)
        # the mean over the labelled positions; a batch without any gives 0 (not 0 / 0)
        per_cell = F.cross_entropy(logits, target, reduction="none")     # [N, h, w], 0 where ignored
        return {"seg": per_cell.sum() / (target != -100).sum().clamp_min(1)}

    def on_train_start(self, batches: Iterable[Batch]) -> None:
        """No memory bank in this stage."""


__all__ = ["PAPER_REGIONS", "REGION_PARTS", "RGANet", "RGANetConfig", "RGANetPrompt", "RegionPrompts",
           "region_targets"]
