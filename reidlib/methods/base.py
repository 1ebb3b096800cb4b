"""The method contract every paper's model implements (docs/design.md, "Method contract").

A method is an `nn.Module` built from its config and a `DataInfo`, and every hook receives one `Batch`:

    @METHODS.register("mine")
    class Mine(ReIDMethod):
        config_class = MineConfig                    # a dataclass; YAML `model:` sections fill it
        needs_masks = True                           # training batches carry parsing labels

        def __init__(self, cfg: MineConfig, info: DataInfo):
            super().__init__(cfg, info)              # self.cfg, self.info
            self.backbone = build_backbone(cfg.backbone)
            self.classifier = nn.Linear(self.backbone.out_channels, info.num_classes)

        def forward(self, batch):                    # training outputs, a dict of named tensors
            feat = self.backbone(batch.images).mean((2, 3))                     # [N, C]
            return {"feat": feat, "logits": self.classifier(feat)}

        def loss(self, outputs, batch):              # named terms; the engine sums and logs them
            return {"id": F.cross_entropy(outputs["logits"], batch.pids)}

        def embed(self, batch):                      # test-time descriptors
            return Embedding(global_feat=self.backbone(batch.images).mean((2, 3)))

Optional hooks, with defaults here: `distance` (the paper's matching rule, chunked), `explain` (the
figures' maps under `EXPLAIN_KEYS`), `train_step` (one optimisation step: DPM's two-step update overrides
it), `on_train_start` (a pass over the training data before the first epoch: RGANet's memory bank),
`param_groups` (per-module learning rates), `load_stage` (weights of an earlier training stage) and
`part_layout` (what the parts of `part_scores` are, for the visibility analysis); `stage_fields` names the
config fields an `init_from` stage is trained with from the run's own (RGANet's prompt length).
Ablations are switches on the config, named after the paper's table rows in `ablations`. The engine reads
nothing else: no signature is inspected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from reidlib.distance import chunked, pairwise

if TYPE_CHECKING:
    from reidlib.engine.step import StepContext

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------ batch
@dataclass
class Batch:
    """One batch, as every hook of a method receives it. Images are normalised with `norm_mean` /
    `norm_std` (the data config's), which figures use to show them in their true colours."""

    images: Tensor                       # [N, 3, H, W]
    camids: Tensor                       # [N]
    pids: Tensor | None = None           # [N] identity labels (training: 0 .. num_classes - 1)
    masks: Tensor | None = None          # [N, K+1, H, W] parsing targets, background first (data.masks)
    indices: Tensor | None = None        # [N] positions in the split the loader reads
    norm_mean: tuple[float, float, float] = IMAGENET_MEAN
    norm_std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_loader(cls, item: dict, data_cfg: Any = None) -> Batch:
        """A loader's dict (`image`, `camid`, `pid`, `index`, `mask`) as a Batch; `data_cfg` supplies the
        normalisation (ImageNet statistics without it)."""
        norm = {} if data_cfg is None else {"norm_mean": tuple(data_cfg.norm_mean),
                                            "norm_std": tuple(data_cfg.norm_std)}
        return cls(images=item["image"], camids=torch.as_tensor(item["camid"]), pids=item.get("pid"),
                   masks=item.get("mask"), indices=item.get("index"), **norm)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _map(self, fn) -> Batch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: fn(v) if isinstance(v, Tensor) else v for k, v in values.items()})

    def to(self, device: torch.device | str) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def __getitem__(self, index) -> Batch:
        """Rows of the batch (a slice, indices or a boolean mask)."""
        return self._map(lambda t: t[index])

    def flip(self) -> Batch:
        """The horizontal mirror: images and masks flipped, labels unchanged."""
        out = self._map(lambda t: t)
        out.images = self.images.flip(-1)
        if self.masks is not None:
            out.masks = self.masks.flip(-1)
        return out


@dataclass(frozen=True)
class DataInfo:
    """What a method's layers are sized to, from the training data and the data config."""

    num_classes: int                     # training identities
    num_cameras: int = 1                 # highest training camera id + 1 (camera embedding rows)
    image_size: tuple[int, int] = (256, 128)  # (height, width) of the input images
    part_names: tuple[str, ...] = ()     # parsing-label parts of data.mask_grouping (background excluded)

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes}: pass the number of training identities (>= 1)")
        if self.num_cameras < 1:
            raise ValueError(f"num_cameras={self.num_cameras}: pass the number of training cameras (>= 1)")

    @classmethod
    def from_dataset(cls, dataset: Any, data_cfg: Any) -> DataInfo:
        parts: tuple[str, ...] = ()
        if data_cfg.masks is not None:
            from reidlib.data.masks import get_grouping

            parts = tuple(get_grouping(data_cfg.mask_grouping, data_cfg.masks).parts)
        # camera ids index camera embeddings: the table needs a row for the highest training id, even if
        # an id in between has no training image (a camera the split lacks)
        cameras = max((r.camid for r in dataset.train), default=0) + 1
        return cls(num_classes=dataset.num_train_pids, num_cameras=cameras,
                   image_size=(data_cfg.height, data_cfg.width), part_names=parts)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict) -> DataInfo:
        raw = dict(raw)
        raw["image_size"] = tuple(raw.get("image_size") or (256, 128))
        raw["part_names"] = tuple(raw.get("part_names") or ())
        return cls(**raw)


# -------------------------------------------------------------------------------------- embedding
@dataclass
class Embedding:
    """What a method extracts from images for matching.

    global_feat: [N, D]       a holistic descriptor (may be None for pure part models)
    parts:       [N, K, Dp]   part descriptors (None for global models)
    weights:     [N, K]       per-part visibility / quality / confidence in [0, 1]
    extras:      anything else the method's `distance` needs, each with N as its first dimension
    """

    global_feat: Tensor | None = None
    parts: Tensor | None = None
    weights: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        for t in self._tensors():
            return t.shape[0]
        return 0

    def _tensors(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                yield v
        yield from self.extras.values()

    def map(self, fn) -> Embedding:
        """Apply `fn` to every tensor (slicing, `.to(device)`, `.cpu()`)."""
        return Embedding(
            global_feat=None if self.global_feat is None else fn(self.global_feat),
            parts=None if self.parts is None else fn(self.parts),
            weights=None if self.weights is None else fn(self.weights),
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def __getitem__(self, index) -> Embedding:
        return self.map(lambda t: t[index])

    def to(self, device) -> Embedding:
        return self.map(lambda t: t.to(device))

    @staticmethod
    def cat(items: list[Embedding]) -> Embedding:
        first = items[0]

        def join(get):
            return None if get(first) is None else torch.cat([get(e) for e in items], 0)

        return Embedding(
            global_feat=join(lambda e: e.global_feat),
            parts=join(lambda e: e.parts),
            weights=join(lambda e: e.weights),
            extras={k: torch.cat([e.extras[k] for e in items], 0) for k in first.extras},
        )


# ------------------------------------------------------------------------------------------ explain
# What `explain` may return, the same meaning for every method, so figures and the comparison notebook
# treat methods alike. h x w is the feature map's grid (figures upsample to the image).
EXPLAIN_KEYS: dict[str, str] = {
    "activation": "[N, h, w] the map the descriptor is pooled from (channel L2 norm), after any attention",
    "activation_before": "[N, h, w] the same map before the method's attention (attention figures)",
    "attention": "[N, h, w] a spatial attention mask in [0, 1]",
    "part_maps": "[N, K, h, w] where each part is: soft or hard assignment of positions to the K parts",
    "part_scores": "[N, K] per-part visibility / quality / confidence in [0, 1]",
    "head_attention": "[N, H, h, w] class-token attention of each head of a transformer's last block",
}
_EXPLAIN_RANK = {"activation": 3, "activation_before": 3, "attention": 3, "part_maps": 4, "part_scores": 2,
                 "head_attention": 4}
_EXPLAIN_UNIT_RANGE = ("attention", "part_scores")


def check_explain(out: dict[str, Tensor], n: int) -> None:
    """Raise ValueError unless `out` uses only EXPLAIN_KEYS with their shapes (and [0, 1] ranges)."""
    for key, value in out.items():
        if key not in EXPLAIN_KEYS:
            raise ValueError(f"explain() key {key!r} is not one of {list(EXPLAIN_KEYS)}")
        if value.dim() != _EXPLAIN_RANK[key] or value.shape[0] != n:
            raise ValueError(f"explain()[{key!r}] has shape {tuple(value.shape)}; expected "
                             f"{EXPLAIN_KEYS[key].split(']')[0]}] with N={n}")
        if key in _EXPLAIN_UNIT_RANGE and value.numel() and not (0 <= value.min() and value.max() <= 1):
            raise ValueError(f"explain()[{key!r}] must lie in [0, 1]")


# ------------------------------------------------------------------------------------------ parts
@dataclass(frozen=True)
class PartLayout:
    """What the K parts of `part_scores` / `part_maps` are, so their truth can be looked up:
    `stripes` equal horizontal stripes of the image (count = K), or `grouping` parsing-label groups
    (reidlib.data.masks; names = the group names)."""

    kind: str                            # "stripes" | "grouping"
    count: int
    grouping: str | None = None          # the mask grouping's name, for kind "grouping"


@dataclass(frozen=True)
class Ablation:
    """A row of a paper's ablation table: config switches for training (`model`) and for matching only
    (`test`: applied to a trained run's model when it is evaluated, e.g. a distance weight)."""

    model: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    base: str | None = None              # another row whose trained run this row re-scores (test only)


# ------------------------------------------------------------------------------------------ method
class ReIDMethod(nn.Module):
    """Base class (see the module docstring). Subclasses set `config_class` and implement forward, loss
    and embed; the default `distance` compares global features with `self.metric`."""

    config_class: ClassVar[type] = object
    metric: ClassVar[str] = "euclidean"
    distance_chunk: ClassVar[int] = 512
    needs_masks: ClassVar[bool] = False  # training batches must carry parsing labels (data.masks)
    test_masks: ClassVar[bool] = False   # test batches too (embed / explain read them)
    ablations: ClassVar[dict[str, Ablation]] = {}
    backbone_attribute: ClassVar[str] = "backbone"  # the module whose stride or patch `min_image_size` reads
    stage_fields: ClassVar[tuple[str, ...]] = ()  # model fields the `init_from` stage takes from the run
    is_stage: ClassVar[bool] = False     # only an earlier training stage of another method (not compared)

    def __init__(self, cfg: Any, info: DataInfo):
        super().__init__()
        self.cfg, self.info = cfg, info

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, batch: Batch) -> Embedding:
        raise NotImplementedError

    @torch.no_grad()
    def distance(self, query: Embedding, gallery: Embedding) -> Tensor:
        """[Q, G] distance with the paper's matching rule; default: global features, `self.metric`."""
        g = gallery.global_feat
        return chunked(lambda rows: pairwise(query.global_feat[rows], g, self.metric), len(query),
                       self.distance_chunk)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """Maps and scores for the paper's figures, under EXPLAIN_KEYS."""
        return {}

    def part_layout(self) -> PartLayout | None:
        """What the parts of `explain()["part_scores"]` are (None: the method has no part scores)."""
        return None

    def feature_rows(self) -> int:
        """Feature-map rows the method needs: one per stripe of a stripe layout, else one."""
        layout = self.part_layout()
        return layout.count if layout is not None and layout.kind == "stripes" else 1

    def min_image_size(self) -> tuple[int, int]:
        """The smallest (height, width) input the method is meant for: a feature-map cell of its backbone
        (a CNN's stride, a ViT's patch) across and `feature_rows` down. `reidlib.methods.build` refuses
        smaller images. No minimum for a method without a `backbone_attribute` module."""
        from reidlib.models import min_input_side

        backbone = getattr(self, self.backbone_attribute, None)
        if backbone is None:
            return (1, 1)
        return min_input_side(backbone, self.feature_rows()), min_input_side(backbone)

    # --- training hooks
    def train_step(self, batch: Batch, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   ctx: StepContext) -> dict[str, Tensor]:
        """One optimisation step; returns the loss terms (reidlib.engine.step has the rules to follow)."""
        from reidlib.engine.step import default_train_step

        return default_train_step(batch, optimizer, scaler, ctx)

    def on_train_start(self, batches: Iterable[Batch]) -> None:
        """Called once before the first epoch of a fresh run (not on resume), in eval mode and without
        gradients, with the training split in order and without augmentation: `batches` is an iterator,
        one pass (the loader starts only if the method iterates it). Default: nothing."""

    def param_groups(self, base_lr: float) -> list[dict]:
        """Parameter groups for the optimiser; override for per-module learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": base_lr}]

    def load_stage(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Initialise from an earlier training stage's weights (`init_from`): every tensor whose name and
        shape match is copied; returns the names copied. Override to restrict (e.g. the backbone only)."""
        own = self.state_dict()
        taken = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
        if not taken:
            raise ValueError(f"the earlier stage's weights share no tensor with {type(self).__name__}: "
                             "init_from must name a run of a model with the same backbone")
        self.load_state_dict(taken, strict=False)
        return sorted(taken)


__all__ = ["Ablation", "Batch", "DataInfo", "EXPLAIN_KEYS", "Embedding", "IMAGENET_MEAN", "IMAGENET_STD",
           "PartLayout", "ReIDMethod", "check_explain"]
