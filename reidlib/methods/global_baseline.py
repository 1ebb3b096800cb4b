"""What the global-feature baselines share: BoT's BNNeck head and loss terms, the test-feature rule, the
optional center loss and per-parameter learning-rate factors.

BoT (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019)
fixed the recipe the later baselines inherit:
- Sec. 3.5 BNNeck: the triplet loss sees the feature f_t before a BatchNorm, the identity classifier the
  normalised feature f_i after it; the classifier has no bias;
- Sec. 3.3: cross-entropy with label smoothing, q_i = 1 - (N-1)/N eps on the true class, eps/N elsewhere
  (`F.cross_entropy(label_smoothing=eps)`);
- Sec. 2: batch-hard triplet loss with margin 0.3 (TransReID, Sec. 3.1: soft margin instead);
- Sec. 3.6: the optional center loss.
TransReID's ViT baseline (He et al., ICCV 2021, Sec. 3.1) and CLIP-ReID's image-encoder baseline (Li et
al., AAAI 2023) keep this head on their class tokens, so `GlobalBaseline` implements forward / loss /
embed / param_groups once; a subclass only says which global features its backbone gives
(`features`), one `GlobalHead` per named feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import check_range
from reidlib.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from reidlib.methods.base import Batch, DataInfo, Embedding, ReIDMethod
from reidlib.models.heads import BNNeck, LinearClassifier

TestFeature = Literal["before_bn", "after_bn"]


@dataclass
class GlobalLossConfig:
    """Fields every BNNeck baseline shares (defaults: BoT); method configs extend it."""

    label_smoothing: float = 0.1          # eps of the ID loss (0: plain cross-entropy)
    triplet_margin: float | None = 0.3    # hard margin; null: soft margin log(1 + exp(d_ap - d_an))
    test_feature: TestFeature = "after_bn"  # the descriptor at test time: f_t (before BN) or f_i (after)
    feat_norm: bool = True                # L2-normalise it, so Euclidean ranking equals cosine ranking
    bias_lr_factor: float = 1.0           # bias parameters train with lr * this factor

    def validate(self) -> None:
        check_range("model.label_smoothing", self.label_smoothing, 0.0, 0.999)
        if self.triplet_margin is not None:
            check_range("model.triplet_margin", self.triplet_margin, 0.0)
        check_range("model.bias_lr_factor", self.bias_lr_factor, 0.0)


def scaled_param_groups(model: nn.Module, base_lr: float, factor: Callable[[str], float]) -> list[dict]:
    """One optimiser group per distinct learning-rate factor: parameter `name` trains with
    base_lr * factor(name). Frozen parameters are left out; the group order is deterministic (sorted by
    factor), so optimiser checkpoints load back into the same groups."""
    by_factor: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            by_factor.setdefault(float(factor(name)), []).append(param)
    return [{"params": params, "lr": base_lr * f} for f, params in sorted(by_factor.items())]


def is_bias(name: str) -> bool:
    """Bias-like parameters as TransReID / CLIP-ReID's optimisers select them ('bias' in the name)."""
    return "bias" in name


class GlobalHead(nn.Module):
    """BNNeck + bias-free identity classifier on one global feature: f_t [N, D] -> (f_i [N, D],
    logits [N, C]). BoT Sec. 3.5."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.neck = BNNeck(dim)
        self.classifier = LinearClassifier(dim, num_classes)

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        bn_feat = self.neck(feat)
        return bn_feat, self.classifier(bn_feat)


class CenterLoss(nn.Module):
    """BoT Sec. 3.6 (Wen et al., ECCV 2016): pulls each feature f_t towards its class centre c_y.

    L_C = mean_i ||f_t,i - c_{y_i}||^2. The paper writes (1/2) sum_i; BoT's released code averages over
    the batch without the 1/2, which is the scale its beta = 0.0005 and centre learning rate 0.5 were
    tuned for, so that is the form used here. BoT updates the centres with their own SGD optimiser on
    the unweighted L_C; here the same SGD step, c <- c - center_lr * dL_C/dc, is taken inside `forward`
    during training, so the centres (a buffer) need no second optimiser in the engine.
    """

    def __init__(self, num_classes: int, dim: int, center_lr: float):
        super().__init__()
        self.center_lr = center_lr
        self.register_buffer("centers", torch.randn(num_classes, dim))

    def forward(self, feat: Tensor, pids: Tensor) -> Tensor:  # feat [N, D], pids [N]
        centers = self.centers[pids]                                      # [N, D]
        loss = (feat - centers).pow(2).sum(1).mean()
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                # dL_C/dc_j = -(2/N) sum_{i: y_i = j} (f_i - c_j)
                grad = torch.zeros_like(self.centers).index_add_(0, pids, centers - feat.detach())
                self.centers.sub_(self.center_lr * 2.0 / feat.shape[0] * grad)
        return loss


class GlobalBaseline(ReIDMethod):
    """A method whose descriptor is built from global features, each with a `GlobalHead`.

    Subclasses implement `features(batch) -> {name: [N, D]}`: one pre-BN feature per head name
    (in `heads`) plus, optionally, features that only take a triplet loss (any other name). Output keys
    and loss terms carry a suffix per head: "" for the head named "main", "_<name>" otherwise:
      forward -> feat[_x] (f_t), bn_feat[_x] (f_i), logits[_x]; triplet-only features as feat_<name>
      loss    -> id[_x] on logits[_x]; triplet[_x] on every feat[_x]
      embed   -> global_feat = concat over heads (in order) of f_t or f_i, L2-normalised if feat_norm
    """

    def __init__(self, cfg: GlobalLossConfig, info: DataInfo, head_dims: dict[str, int]):
        super().__init__(cfg, info)
        self.heads = nn.ModuleDict({name: GlobalHead(dim, info.num_classes)
                                    for name, dim in head_dims.items()})

    @staticmethod
    def suffix(name: str) -> str:
        return "" if name == "main" else f"_{name}"

    def features(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        feats = self.features(batch)
        out: dict[str, Tensor] = {}
        for name, feat in feats.items():
            s = self.suffix(name)
            out[f"feat{s}"] = feat                                        # f_t [N, D]
            if name in self.heads:
                out[f"bn_feat{s}"], out[f"logits{s}"] = self.heads[name](feat)  # f_i [N, D], [N, C]
        return out

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        cfg, pids = self.cfg, batch.pids
        terms: dict[str, Tensor] = {}
        for name in self.heads:
            s = self.suffix(name)
            terms[f"id{s}"] = cross_entropy_label_smooth(outputs[f"logits{s}"], pids, cfg.label_smoothing)
        for key, feat in outputs.items():
            if key.startswith("feat"):
                terms["triplet" + key[len("feat"):]] = batch_hard_triplet_loss(
                    pids, cfg.triplet_margin, features=feat)
        return terms

    def descriptor(self, feats: dict[str, Tensor]) -> Tensor:
        """The test descriptor [N, sum D] from `features` output (BoT Sec. 3.5 / TransReID NECK_FEAT)."""
        parts = [self.heads[name].neck(feats[name]) if self.cfg.test_feature == "after_bn" else feats[name]
                 for name in self.heads]
        desc = torch.cat(parts, dim=1)
        return F.normalize(desc, dim=1) if self.cfg.feat_norm else desc

    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        return Embedding(global_feat=self.descriptor(self.features(batch)))

    def param_groups(self, base_lr: float) -> list[dict]:
        factor = self.cfg.bias_lr_factor
        return scaled_param_groups(self, base_lr, lambda name: factor if is_bias(name) else 1.0)


__all__ = [
    "CenterLoss", "GlobalBaseline", "GlobalHead", "GlobalLossConfig", "TestFeature",
    "is_bias", "scaled_param_groups",
]
