"""The ViT baseline: TransReID without the jigsaw patch module (He et al., "TransReID: Transformer-based
Object Re-Identification", ICCV 2021).

Sec. 3.1 (transformer-based strong baseline) plus Sec. 3.3 (side information embedding):
- ViT-B/16 on overlapping 16 x 16 patches taken with stride s (12 here; 16 gives non-overlapping
  patches, TransReID's "Baseline" row); learnable position embeddings resized to the patch grid;
- SIE: a learnable vector per camera, scaled by lambda = 3 and added to every token;
- the class token of the last layer is the global feature f_t; BNNeck as BoT: the ID classifier sees
  BN(f_t), the triplet loss f_t;
- ID loss: plain cross-entropy (TransReID turns label smoothing off); triplet loss: soft margin,
  log(1 + exp(d_ap - d_an)) with batch-hard mining. The paper writes squared distances; its released
  code, followed here, uses plain Euclidean distances;
- test (released code: NECK_FEAT 'before', FEAT_NORM 'yes'): the L2-normalised f_t, Euclidean distance.
The backbone is `reidlib.models.vit` (vit_base_patch16 in `paper`, vit_small_demo / vit_tiny_ci in
demo / ci, randomly initialised there; the demo ViT has a convolutional stem, without which it does not
learn in the demo budget: see reidlib/models/stem.py). `explain` gives the last block's per-head attention
of the class token over the patch grid, the maps transformer ReID papers draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reidlib.config import ConfigError, check_range
from reidlib.methods import METHODS
from reidlib.methods.base import Batch, DataInfo
from reidlib.methods.global_baseline import GlobalBaseline, GlobalLossConfig, TestFeature
from reidlib.models import backbone_kind, build_backbone


@dataclass
class ViTBaselineConfig(GlobalLossConfig):
    """TransReID-without-JPM settings (the image size comes from the data config)."""

    backbone: str = "vit_base_patch16"
    pretrained: str | None = None         # ViT weights: a file, a folder or "default" (never downloaded)
    patch_stride: int = 12                # s of the overlapping patch embedding (16: no overlap)
    sie_camera: bool = True               # camera side information embedding, Sec. 3.3
    sie_coef: float = 3.0                 # lambda
    drop_path: float = 0.1                # stochastic depth of the last block (released code)
    label_smoothing: float = 0.0
    triplet_margin: float | None = None   # soft margin
    test_feature: TestFeature = "before_bn"
    bias_lr_factor: float = 2.0           # released code: biases at 2 x the learning rate

    def validate(self) -> None:
        super().validate()
        check_range("model.patch_stride", self.patch_stride, 1, 16)
        check_range("model.sie_coef", self.sie_coef, 0.0)
        check_range("model.drop_path", self.drop_path, 0.0, 1.0)


@METHODS.register("vit_baseline")
class ViTBaseline(GlobalBaseline):
    """ViT (+SIE) -> class token -> BNNeck -> ID classifier; losses: id, triplet."""

    config_class = ViTBaselineConfig
    backbone_attribute = "vit"

    def __init__(self, cfg: ViTBaselineConfig, info: DataInfo):
        cameras = info.num_cameras if cfg.sie_camera else 0
        vit = build_backbone(cfg.backbone, pretrained=cfg.pretrained, img_size=tuple(info.image_size),
                             stride=cfg.patch_stride, num_cameras=cameras, sie_coef=cfg.sie_coef,
                             drop_path_rate=cfg.drop_path)
        if backbone_kind(vit) != "vit":
            raise ConfigError(f"model.backbone={cfg.backbone!r} is not a ViT; use vit_base_patch16, "
                              "vit_small_demo or vit_tiny_ci")
        super().__init__(cfg, info, {"main": vit.embed_dim})
        self.vit = vit

    def _cams(self, camids: Tensor | None) -> Tensor | None:
        return camids if self.vit.sie_embed is not None else None

    def features(self, batch: Batch) -> dict[str, Tensor]:
        return {"main": self.vit(batch.images, self._cams(batch.camids))[:, 0]}  # class token f_t [N, D]

    @torch.no_grad()
    def block_tokens(self, batch: Batch) -> list[Tensor]:
        """Every block's raw output [N, 1+L, D] (reidlib.attention.similarity_gap: DPM's Fig. 3(b))."""
        return self.vit(batch.images, self._cams(batch.camids), return_all=True)

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """head_attention [N, heads, gh, gw]: the last block's attention from the class token to each
        patch (softmax over all tokens, so a head's map sums to 1 minus its self-attention)."""
        _, attn = self.vit(batch.images, self._cams(batch.camids), return_attention=True)  # [N, H, 1+L, 1+L]
        cls_to_patches = attn[:, :, 0, self.vit.num_prefix_tokens:]          # [N, heads, L]
        return {"head_attention": cls_to_patches.reshape(*cls_to_patches.shape[:2], *self.vit.grid_size)}


__all__ = ["ViTBaseline", "ViTBaselineConfig"]
