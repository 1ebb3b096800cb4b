"""DPM: Dynamic Prototype Mask (Lei Tan, Pingyang Dai, Rongrong Ji, Yongjian Wu, "Dynamic Prototype Mask for
Occluded Person Re-Identification", ACM MM 2022, doi:10.1145/3503161.3547764).

Section 3, on the TransReID ViT of `vit_baseline` (subclassed: backbone, SIE, BNNeck and class-token feature):
- Eqs. (1)-(2): overlapping 16 x 16 patches with stride s_d (`patch_stride`: 11 on Occluded-Duke in the
  released config, 12 in TransReID), position embedding and lambda * camera embedding, lambda = 3.
- Hierarchical Mask Generator, Eq. (3): the patch tokens of blocks 2, 4, 10 and 12 (raw block outputs,
  before the final LayerNorm), reshaped to maps f_l [N, D, h, w], a binary gate G choosing which enter,
  concatenated, convolutional layers G, global pooling, sigmoid: a channel mask M_p [N, D] per image.
- Masked prototype, Eq. (4): W_mp^i = W_p (.) M_p^i, the identity classifier's weights W_p [C, D] (the
  holistic prototypes) masked per image; the masked branch classifies BN(f_t) against W_mp^i.
- Head Enrich Module, Eqs. (5)-(6): A [heads, L] = softmax over the patches of q_cls K_img^T / sqrt(d) in
  the last block, rows L2-normalised, L_hem = ||A A^T - I||_F^2.
- Eq. (7): the masked branch takes an additive angular margin (ArcFace, s = 30, m = 0.5).
- Eq. (8): L = alpha L_cls + (1 - alpha) L_M-cls + beta L_hem + L_tri, alpha = 0.5, beta = 0.1; L_tri is
  the batch-hard soft-margin triplet loss on f_t (TransReID's).
- Sec. 4.1: two steps per iteration, the first with the HMG frozen (the prototypes and the backbone
  learn), the second with everything but the HMG frozen (`train_step`); at test time the query's mask is
  applied to the gallery, computed in parallel for all queries (`distance`).

Ambiguities and the choices made (each a `DPMConfig` switch where plausible):
- The HMG's layers G are not described. The released code's are followed: three conv3x3-BN-ReLU layers
  (k D -> 2D -> D -> D for k gated-in maps; the code has k = 4), 2 x 2 max pooling after the first two,
  global pooling, then a linear layer D -> D before the sigmoid, whose weight (and bias) start at zero,
  so every mask starts at 0.5 (`hmg_zero_init`). Eq. (3) writes Avgpool; the code max-pools
  (`hmg_pool`: "max" = code, the default; "avg" = Eq. 3). On a grid smaller than 2 along a side (the ci
  ViT) the 2 x 2 pooling shrinks only the sides that can be halved.
- The gate G of Eq. (3): `hmg_gate` over `hmg_blocks` (1-based blocks of a 12-block ViT); a gated-off
  block's map is left out of the concatenation (the first conv narrows accordingly). Table 3's "+DPM"
  (no HR) uses the last block only. A shallower ViT (ci: 4 blocks) taps the blocks at the same fractions
  of its depth (`tapped_blocks`: rounded, at least block 1, each after the previous one).
- Table 5's variants (`mask_feature`, `mask_before_norm`): the masked classifier is a cosine classifier,
  and renormalising after masking makes "mask, then normalise" and "normalise, then mask, then
  normalise" equal, so the two are told apart as: P_n (after the L2 normalisation, the default and the
  paper's final model by Table 5's numbers): cos_ij = <f_i / |f_i|, M_i (.) W_j / |W_j|>, nothing
  renormalised after the mask; P (before): cos_ij = cos(f_i, M_i (.) W_j). F / F_n mask the feature too,
  in the same place. The text contradicts itself (it finds "after" better, then selects "before"); the
  released code computes cos(f_i, M_i (.) W_j / |W_j|), i.e. our P.
- Table 4's switches (`global_classifier`, `masked_classifier`): "S" is a bias-free linear softmax
  classifier, "A" ArcFace on the cosine. Both branches share the prototypes W_p (the code's single weight
  matrix). A softmax masked branch uses logits <f_i [(.) M_i], M_i (.) W_j> (Eq. 4 literally;
  `mask_before_norm` only concerns cosines). The prototypes start as the code's (Xavier uniform).
- The ID loss has no label smoothing (the paper is silent; the code's IF_LABELSMOOTH is off). Table 3's
  "baseline" (`dpm: false`) is the ViT with L_cls + L_tri (weight 1), no HMG and one step per iteration.
- L_hem: per image, averaged over the batch (the paper writes one image's norm). The code differs (below).
- Test rule: the query's mask acts as in training, the gallery features taking the place of the
  prototypes: d(q, g) = arccos(masked cosine of f_q and f_g under M_q) (the code's arccos distance); with
  `mask_feature` the query's feature is masked too. `test_mask: false` ranks by the plain cosine.
- Two-step update: each step a fresh forward pass (as the code); the gradients of the parameters a step
  freezes are dropped before the optimiser step, so SGD's momentum and weight decay skip them too. Step 1
  backpropagates the whole loss of Eq. (8) (the masked term reaching the backbone through the mask, as in
  the code); step 2 runs the backbone without gradients and backpropagates the masked term alone, the
  only term that depends on the HMG, so the HMG's gradient equals the whole loss's at a third of the
  cost. BatchNorm statistics (HMG, BNNeck) update in both passes (as in the code). Under DDP this relies
  on the engine's find_unused_parameters (step 2 leaves the backbone without gradients).

The released code (stone96123/DPM, a TransReID fork) differs from the paper in:
- HMG: max pooling instead of Eq. (3)'s average pooling; a zero-initialised linear layer after the pooling.
- HEM: the orthonormal loss reads the last block's pre-softmax scores q k^T / sqrt(d) (softmax over all
  tokens skipped) for the patch keys (`hem_scores: logits`; the paper's Eq. 5 softmax is the default),
  and sums ||A A^T - I||_F^2 over the batch divided by heads^2 instead of averaging over images.
- Masked prototypes: normalise W, mask, renormalise (= our P, see above); at test time the query's mask
  is applied to the L2-normalised gallery features only, the query's feature unmasked, renormalised.
- The HMG has its own SGD optimiser with no learning-rate schedule (constant base lr, biases x 2); here
  one optimiser and schedule serve both steps, the HMG's learning rate following the schedule.
- 150 epochs, stride 11, lambda 3, soft-margin triplet, no label smoothing, BIAS_LR_FACTOR 2, test feature
  before the BNNeck, L2-normalised (configs/OCC_Duke/dpm.yml); beta 0.01 on Occluded-REID is a comment there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import ConfigError, check_range
from reidlib.distance import chunked
from reidlib.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from reidlib.methods import METHODS
from reidlib.methods.base import Ablation, Batch, DataInfo, Embedding
from reidlib.methods.vit_baseline import ViTBaseline, ViTBaselineConfig
from reidlib.models.heads import angular_margin_logits

Classifier = Literal["softmax", "arcface"]
PAPER_BLOCKS = (2, 4, 10, 12)   # Sec. 3.1 / 3.2: the blocks Swin merges patches after, and the last
PAPER_DEPTH = 12                # ViT-B/16


@dataclass
class DPMConfig(ViTBaselineConfig):
    """DPM's settings (Sec. 3, 4.1) and the switches of Tables 3-5; the ViT ones are ViTBaselineConfig's."""

    patch_stride: int = 11                # code: STRIDE_SIZE 11 on Occluded-Duke
    dpm: bool = True                      # HMG + masked branch + two steps; False: Table 3's baseline
    hmg_blocks: list[int] = field(default_factory=lambda: list(PAPER_BLOCKS))  # Sec. 3.2, of 12 blocks
    hmg_gate: list[bool] = field(default_factory=lambda: [True] * len(PAPER_BLOCKS))  # G of Eq. (3)
    hmg_pool: Literal["max", "avg"] = "max"  # code: max; Eq. (3): average
    hmg_zero_init: bool = True            # code: the last linear layer starts at zero (mask 0.5)
    mask_feature: bool = False            # Table 5: F / F_n also mask the feature
    mask_before_norm: bool = False        # Table 5: P / F (before) or P_n / F_n (after, the final model)
    global_classifier: Classifier = "softmax"   # Table 4's Cls: S
    masked_classifier: Classifier = "arcface"   # Table 4's Mask-Cls: A
    arc_scale: float = 30.0               # Sec. 4.1: s
    arc_margin: float = 0.5               # Sec. 4.1: m (0.3 on Occluded-REID)
    alpha: float = 0.5                    # Eq. (8), Fig. 5
    beta: float = 0.1                     # Eq. (8), Fig. 5 (0.01 on Occluded-REID)
    hem_scores: Literal["softmax", "logits"] = "softmax"  # Eq. (5); code: the pre-softmax scores
    two_step: bool = True                 # Sec. 4.1: HMG frozen, then everything else frozen
    test_mask: bool = True                # Sec. 4.1: the query's mask applied to the gallery

    def validate(self) -> None:
        super().validate()
        if len(self.hmg_blocks) != len(self.hmg_gate):
            raise ConfigError(f"model.hmg_gate has {len(self.hmg_gate)} entries for "
                              f"{len(self.hmg_blocks)} model.hmg_blocks: give one per block")
        if self.dpm and not any(self.hmg_gate):
            raise ConfigError("model.hmg_gate lets no block into the mask generator: open at least one")
        for i, block in enumerate(self.hmg_blocks):
            check_range(f"model.hmg_blocks[{i}]", block, 1, PAPER_DEPTH)
        if list(self.hmg_blocks) != sorted(set(self.hmg_blocks)):
            raise ConfigError(f"model.hmg_blocks={self.hmg_blocks}: list distinct blocks in increasing order")
        check_range("model.arc_scale", self.arc_scale, 0.0)
        check_range("model.arc_margin", self.arc_margin, 0.0, math.pi / 2)
        check_range("model.alpha", self.alpha, 0.0, 1.0)
        check_range("model.beta", self.beta, 0.0)


def tapped_blocks(depth: int, blocks=PAPER_BLOCKS, reference_depth: int = PAPER_DEPTH) -> list[int]:
    """The 1-based blocks of a `depth`-block ViT at the same fractions of depth as `blocks` of a
    `reference_depth`-block one: round(b * depth / reference), at least 1 and after the previous tap.
    12 blocks: [2, 4, 10, 12]; 4 blocks: [1, 2, 3, 4]."""
    taps: list[int] = []
    for b in blocks:
        tap = max(1, math.floor(b * depth / reference_depth + 0.5), taps[-1] + 1 if taps else 1)
        if tap > depth:
            raise ConfigError(f"a {depth}-block ViT cannot tap {len(blocks)} distinct blocks "
                              f"{list(blocks)} (of {reference_depth}); use fewer model.hmg_blocks")
        taps.append(tap)
    return taps


# ----------------------------------------------------------------------------------------------------------
# Hierarchical Mask Generator, Sec. 3.2

def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _halve(x: Tensor) -> Tensor:
    """2 x 2 max pooling (code), along the sides longer than 1 only."""
    kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
    return F.max_pool2d(x, kernel, kernel)


class HierarchicalMaskGenerator(nn.Module):
    """Eq. (3): maps [N, D, h, w] x k -> M_p [N, D] in (0, 1) (layers: the released code's)."""

    def __init__(self, dim: int, num_maps: int, pool: str = "max", zero_init: bool = True):
        super().__init__()
        self.pool = pool
        self.convs = nn.ModuleList([_conv_bn_relu(num_maps * dim, 2 * dim), _conv_bn_relu(2 * dim, dim),
                                    _conv_bn_relu(dim, dim)])
        self.fc = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)
        if zero_init:
            nn.init.zeros_(self.fc.weight)

    def forward(self, maps: list[Tensor]) -> Tensor:
        x = torch.cat(maps, dim=1)                                      # G * (f_1, ..., f_L)
        x = _halve(self.convs[0](x))
        x = _halve(self.convs[1](x))
        x = self.convs[2](x)
        x = x.amax(dim=(2, 3)) if self.pool == "max" else x.mean(dim=(2, 3))  # code: max; Eq. (3): avg
        return torch.sigmoid(self.fc(x))                                # Eq. (3): sigma(...)


# ----------------------------------------------------------------------------------------------------------
# Eqs. (4)-(7)

def masked_cosine(feat: Tensor, protos: Tensor, mask: Tensor, mask_feature: bool = False,
                  before_norm: bool = False, eps: float = 1e-12) -> Tensor:
    """Cosine scores [N, K] of features feat [N, D] against prototypes protos [K, D], each row i seeing the
    prototypes masked by its own mask[i] [D] (Eq. 4: W_mp^i = W_p (.) M_p^i), batched.

    before_norm=False (Table 5's P_n / F_n): <f_i/|f_i| [(.) M_i], M_i (.) W_j/|W_j|>;
    before_norm=True  (P / F):               cos(f_i [(.) M_i], M_i (.) W_j).
    """
    m2 = mask * mask if mask_feature else mask                          # M on the prototype (and feature)
    if not before_norm:
        return (F.normalize(feat, dim=1, eps=eps) * m2) @ F.normalize(protos, dim=1, eps=eps).t()
    num = (feat * m2) @ protos.t()                                      # <f_i [(.) M_i], M_i (.) W_j>
    proto_norm = ((mask * mask) @ (protos * protos).t()).clamp_min(eps * eps).sqrt()  # |M_i (.) W_j|
    feat_norm = (feat * mask if mask_feature else feat).norm(dim=1, keepdim=True).clamp_min(eps)
    return num / (feat_norm * proto_norm)


def orthonormal_loss(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Eq. (6): rows of A [N, heads, L] L2-normalised, ||A A^T - I||_F^2 per image, averaged over N."""
    a = F.normalize(scores, dim=-1, eps=eps)
    gram = a @ a.transpose(1, 2)                                        # [N, heads, heads]
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return (gram - eye).pow(2).sum(dim=(1, 2)).mean()


# ----------------------------------------------------------------------------------------------------------
# Tables 3-5 and Fig. 5 (row names as printed; reidlib/reported/dpm.yaml)

_NO_HR = {"hmg_gate": [False, False, False, True]}   # the last block only
_NO_HEM = {"beta": 0.0}
_BASELINE = {"dpm": False, **_NO_HEM}

ABLATIONS: dict[str, Ablation] = {
    # Table 3
    "baseline": Ablation(_BASELINE),                                   # ViT, L_cls + L_tri
    "+DPM": Ablation({**_NO_HR, **_NO_HEM}),
    "+DPM+HR": Ablation(_NO_HEM),
    "+DPM+HR+HEM": Ablation(),                                         # DPM
    # Table 4: on "+DPM" (its last row is Table 3's +DPM); the baselines have no masked branch
    "baseline (Cls=S)": Ablation(base="baseline"),
    "baseline (Cls=A)": Ablation({**_BASELINE, "global_classifier": "arcface"}),
    "DPM (Cls=S, Mask-Cls=S)": Ablation({**_NO_HR, **_NO_HEM, "masked_classifier": "softmax"}),
    "DPM (Cls=A, Mask-Cls=A)": Ablation({**_NO_HR, **_NO_HEM, "global_classifier": "arcface"}),
    "DPM (Cls=S, Mask-Cls=A)": Ablation(base="+DPM"),
    # Table 5: on the full DPM
    "P_n": Ablation(base="+DPM+HR+HEM"),
    "P_n + F_n": Ablation({"mask_feature": True}),
    "P": Ablation({"mask_before_norm": True}),
    "P + F": Ablation({"mask_feature": True, "mask_before_norm": True}),
    # Fig. 5: alpha on DPM with HMG and no HEM ("+DPM+HR"), beta on the full DPM
    **{f"alpha={a:g}": Ablation({**_NO_HEM, "alpha": a}) for a in (0.1, 0.3, 0.7, 0.9)},
    "alpha=0.5": Ablation(base="+DPM+HR"),
    **{f"beta={b:g}": Ablation({"beta": b}) for b in (0.01, 0.05, 0.15, 0.2)},
    "beta=0.1": Ablation(base="+DPM+HR+HEM"),
}


# ----------------------------------------------------------------------------------------------------------
# The method

@METHODS.register("dpm")
class DPM(ViTBaseline):
    """ViT (+SIE) -> class token f_t -> BNNeck -> prototypes W_p (softmax / ArcFace), masked per image by
    the HMG's channel mask (ArcFace); losses: id, mask_id, hem, triplet; two steps per iteration."""

    config_class = DPMConfig
    ablations = ABLATIONS

    def __init__(self, cfg: DPMConfig, info: DataInfo):
        super().__init__(cfg, info)
        nn.init.xavier_uniform_(self.prototypes)                         # code: MArcface's weight init
        depth, dim = self.vit.num_blocks, self.vit.embed_dim
        taps = tapped_blocks(depth, cfg.hmg_blocks)
        self.hmg_taps = [t for t, on in zip(taps, cfg.hmg_gate, strict=True) if on]  # 1-based, gated in
        self.mask_generator = (HierarchicalMaskGenerator(dim, len(self.hmg_taps), cfg.hmg_pool,
                                                         cfg.hmg_zero_init) if cfg.dpm else None)

    @property
    def prototypes(self) -> Tensor:
        """W_p [C, D]: the identity classifier's weights, one holistic prototype per identity."""
        return self.heads["main"].classifier.fc.weight

    # --- encoding
    def encode(self, batch: Batch, hem: bool = False) -> dict[str, Tensor]:
        """f_t [N, D], the mask M_p [N, D] (with `dpm`) and, with `hem`, the last block's class-token
        scores over the patches [N, heads, L] (pre-softmax, Eq. 5's argument)."""
        vit = self.vit
        outs = vit(batch.images, self._cams(batch.camids), return_all=True,      # Eq. (2), the blocks
                   return_attention="logits" if hem else False)
        out = {}
        if hem:
            outs, logits = outs                                         # [N, heads, 1+L, 1+L]
            out["cls_scores"] = logits[:, :, 0, vit.num_prefix_tokens:]
        out["feat"] = vit.norm(outs[-1])[:, 0]                          # f_t: the class token
        if self.mask_generator is not None:
            out["mask"] = self.mask_from_blocks(outs)
        return out

    def mask_from_blocks(self, outs: list[Tensor]) -> Tensor:
        """Eq. (3) from every block's raw output [N, 1+L, D] (block order): M_p [N, D]."""
        return self.mask_generator([self.vit.spatial(outs[t - 1]) for t in self.hmg_taps])

    def head_attention(self, cls_scores: Tensor) -> Tensor:
        """A of Eq. (5): softmax over the patches of the class token's scores, [N, heads, L]."""
        return cls_scores.softmax(dim=-1)

    # --- training
    def forward(self, batch: Batch, mask_step: bool = False) -> dict[str, Tensor]:
        """Training outputs. `mask_step` (the second step, which trains the HMG alone): the backbone runs
        without gradients and only the masked branch is scored, the one term of Eq. (8) that depends on
        the HMG, so the HMG's gradient is the whole loss's."""
        cfg = self.cfg
        if mask_step:
            with torch.no_grad():
                outs = self.vit(batch.images, self._cams(batch.camids), return_all=True)
                bn = self.heads["main"].neck(self.vit.norm(outs[-1])[:, 0])
            out = {"mask": self.mask_from_blocks(outs)}
        else:
            out = self.encode(batch, hem=self.training and cfg.dpm and cfg.beta > 0)
            bn = self.heads["main"].neck(out["feat"])                   # f_i = BN(f_t)
            out["bn_feat"] = bn
        w = self.prototypes
        if not mask_step:
            arc = cfg.global_classifier == "arcface"
            out["scores"] = F.normalize(bn, dim=1) @ F.normalize(w, dim=1).t() if arc else bn @ w.t()
        if "mask" in out:
            mask = out["mask"]
            if cfg.masked_classifier == "arcface":                      # Eqs. (4), (7)
                out["mask_scores"] = masked_cosine(bn, w, mask, cfg.mask_feature, cfg.mask_before_norm)
            else:                                                       # Eq. (4) in a softmax classifier
                out["mask_scores"] = (bn * (mask * mask if cfg.mask_feature else mask)) @ w.t()
        return out

    def _classify(self, scores: Tensor, kind: str, pids: Tensor) -> Tensor:
        cfg = self.cfg
        if kind == "arcface":
            scores = angular_margin_logits(scores.float(), pids, cfg.arc_scale, cfg.arc_margin)
        return cross_entropy_label_smooth(scores, pids, cfg.label_smoothing)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Eq. (8): alpha L_cls + (1 - alpha) L_M-cls + beta L_hem + L_tri (baseline: L_cls + L_tri)."""
        cfg, pids = self.cfg, batch.pids
        terms: dict[str, Tensor] = {}
        if "mask_scores" in outputs:
            terms["mask_id"] = (1 - cfg.alpha) * self._classify(outputs["mask_scores"], cfg.masked_classifier,
                                                                pids)
        if "scores" not in outputs:                                     # `forward(mask_step=True)`
            return terms
        id_loss = self._classify(outputs["scores"], cfg.global_classifier, pids)
        terms["id"] = cfg.alpha * id_loss if "mask_scores" in outputs else id_loss
        if "cls_scores" in outputs:
            scores = outputs["cls_scores"].float()
            a = self.head_attention(scores) if cfg.hem_scores == "softmax" else scores  # Eq. (5) / code
            terms["hem"] = cfg.beta * orthonormal_loss(a)                   # Eq. (6)
        terms["triplet"] = batch_hard_triplet_loss(pids, cfg.triplet_margin, features=outputs["feat"])
        return terms

    def train_step(self, batch, optimizer, scaler, ctx):
        """Sec. 4.1: step 1 updates everything but the HMG, step 2 the HMG alone; both on the whole loss
        (a fresh forward pass each). Returns step 1's terms. Without `dpm` / `two_step`: one plain step."""
        from reidlib.engine.step import default_train_step

        if self.mask_generator is None or not self.cfg.two_step:
            return default_train_step(batch, optimizer, scaler, ctx)
        hmg = {id(p) for p in self.mask_generator.parameters()}
        terms = self._partial_step(batch, optimizer, scaler, ctx, lambda p: id(p) not in hmg)  # step 1
        self._partial_step(batch, optimizer, scaler, ctx, lambda p: id(p) in hmg, mask_step=True)  # step 2
        return terms

    @staticmethod
    def _partial_step(batch, optimizer, scaler, ctx, trains, mask_step: bool = False) -> dict[str, Tensor]:
        """forward -> loss -> backward; the gradients of parameters `trains` rejects are dropped (None: the
        optimiser skips them, momentum and weight decay included) -> step."""
        with ctx.autocast():
            outputs = ctx.forward(batch, mask_step=True) if mask_step else ctx.forward(batch)
            terms = ctx.method.loss(outputs, batch)
        total = sum(terms.values())
        ctx.check_finite(terms, total)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if not trains(p):
                    p.grad = None
        ctx.clip_grad(optimizer, scaler)
        scaler.step(optimizer)
        scaler.update()
        return terms

    # --- test
    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        """f_t (or BN(f_t), `test_feature`), L2-normalised (`feat_norm`), and the mask M_p as extras."""
        out = self.encode(batch)
        feat = self.descriptor({"main": out["feat"]})
        extras = {"mask": out["mask"]} if "mask" in out else {}
        return Embedding(global_feat=feat, extras=extras)

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """Sec. 4.1: arccos of the masked cosine (`masked_cosine`) of each query and every gallery
        feature under the query's mask, the gallery in the prototypes' place; batched over queries."""
        cfg = self.cfg
        if not cfg.test_mask or "mask" not in query.extras:
            return super().distance(query, gallery)
        g, q, m = gallery.global_feat, query.global_feat, query.extras["mask"]

        def rows(r):
            cos = masked_cosine(q[r], g, m[r], cfg.mask_feature, cfg.mask_before_norm)
            return torch.arccos(cos.clamp(-1 + 1e-5, 1 - 1e-5))         # code: arccos of the clipped cosine

        return chunked(rows, len(query), self.distance_chunk)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """head_attention [N, heads, gh, gw]: A of Eq. (5), the last block's class-token attention of each
        head over the patches (softmax over the patches only), the maps HEM pushes apart."""
        a = self.head_attention(self.encode(batch, hem=True)["cls_scores"])
        return {"head_attention": a.reshape(*a.shape[:2], *self.vit.grid_size)}


__all__ = ["ABLATIONS", "DPM", "DPMConfig", "HierarchicalMaskGenerator", "masked_cosine", "orthonormal_loss",
           "tapped_blocks"]
