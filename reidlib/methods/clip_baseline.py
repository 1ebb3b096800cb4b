"""The CLIP baseline: CLIP's image encoder fine-tuned for ReID with BNNeck heads, no prompts (Li et al.,
"CLIP-ReID: Exploiting Vision-Language Model for Image Re-Identification without Concrete Text Labels",
AAAI 2023: its "Baseline", i.e. the second training stage without the image-to-text loss).

As the released code (github.com/Syliz517/CLIP-ReID, model/make_model.py, loss/make_loss.py) builds it:
- the CLIP ViT-B/16 image encoder at 256 x 128 (position embeddings resized to the 16 x 8 grid);
- two global features of the class token: f (after the last block and ln_post, width 768) and
  f_proj = f W_proj (the 512-d joint-space feature); each has a BNNeck and a bias-free ID classifier;
- ID loss: label-smoothed cross-entropy on both classifiers; triplet loss (margin 0.3, batch-hard) on
  f, f_proj and on the class token after the penultimate block (pre-LN);
- test: [f, f_proj] concatenated before the BNNecks, L2-normalised, Euclidean distance.
Camera SIE is off in the released person-ReID configs (`sie_camera` turns it on).

The backbone is `reidlib.models.clip`: clip_vit_b16 with OpenAI's weights from a local file in `paper`;
clip_small / clip_tiny_ci in demo / ci are randomly initialised (the demo one with a convolutional stem,
reidlib/models/stem.py), so they show the code path and the training dynamics, not CLIP's pre-training.
The text tower (frozen) and the temperature are built but unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reidlib.config import ConfigError, check_range
from reidlib.methods import METHODS
from reidlib.methods.base import Batch, DataInfo
from reidlib.methods.global_baseline import GlobalBaseline, GlobalLossConfig, TestFeature
from reidlib.models import backbone_family, build_backbone


@dataclass
class CLIPBaselineConfig(GlobalLossConfig):
    """CLIP-ReID baseline settings (the image size comes from the data config)."""

    backbone: str = "clip_vit_b16"
    pretrained: str | None = None         # CLIP weights: a file, a folder or "default" (never downloaded)
    quick_gelu: bool = True               # OpenAI's weights were trained with QuickGELU
    sie_camera: bool = False
    sie_coef: float = 1.0
    penultimate_triplet: bool = True      # triplet loss also on the penultimate block's class token
    test_feature: TestFeature = "before_bn"
    bias_lr_factor: float = 2.0           # released code: biases at 2 x the learning rate

    def validate(self) -> None:
        super().validate()
        check_range("model.sie_coef", self.sie_coef, 0.0)


def build_clip_encoder(cfg: CLIPBaselineConfig, info: DataInfo):
    """The CLIP backbone of `cfg` sized by `info` (camera SIE when `sie_camera`), its image-text
    temperature frozen (unused for ReID); a backbone that is not CLIP is refused before it is built."""
    if backbone_family(cfg.backbone) != "clip":
        raise ConfigError(f"model.backbone={cfg.backbone!r} is not a CLIP model; use clip_vit_b16, "
                          "clip_small_hybrid or clip_tiny_ci")
    cameras = info.num_cameras if cfg.sie_camera else 0
    clip = build_backbone(cfg.backbone, pretrained=cfg.pretrained, img_size=tuple(info.image_size),
                          quick_gelu=cfg.quick_gelu, num_cameras=cameras, sie_coef=cfg.sie_coef)
    clip.logit_scale.requires_grad_(False)
    return clip


@METHODS.register("clip_baseline")
class CLIPBaseline(GlobalBaseline):
    """CLIP image encoder -> (f, f_proj) -> two BNNecks -> ID classifiers; losses: id, id_proj,
    triplet, triplet_proj (and triplet_penultimate)."""

    config_class = CLIPBaselineConfig
    backbone_attribute = "clip"

    def __init__(self, cfg: CLIPBaselineConfig, info: DataInfo):
        clip = build_clip_encoder(cfg, info)
        if cfg.penultimate_triplet and clip.num_blocks < 2:
            raise ConfigError("model.penultimate_triplet needs a CLIP encoder with at least 2 blocks")
        super().__init__(cfg, info, {"main": clip.width, "proj": clip.embed_dim})
        self.clip = clip

    def features(self, batch: Batch) -> dict[str, Tensor]:
        cams = batch.camids if self.clip.sie_embed is not None else None
        blocks = self.clip.forward_visual(batch.images, cams, return_all=True)  # [N, 1+L, Dv] before ln_post
        cls = self.clip.model.visual.ln_post(blocks[-1][:, 0])           # f [N, Dv]
        feats = {"main": cls, "proj": self.clip.project(cls)}            # f_proj [N, E]
        if self.cfg.penultimate_triplet:
            feats["penultimate"] = blocks[-2][:, 0]                       # [N, Dv], triplet only
        return feats

    @torch.no_grad()
    def explain(self, batch: Batch) -> dict[str, Tensor]:
        """activation [N, gh, gw]: channel L2 norm of the last block's patch tokens (after ln_post)."""
        cams = batch.camids if self.clip.sie_embed is not None else None
        _, patches = self.clip.encode_image_tokens(batch.images, cams)   # [N, L, Dv]
        return {"activation": self.clip.spatial(patches).norm(dim=1)}


__all__ = ["CLIPBaseline", "CLIPBaselineConfig", "build_clip_encoder"]
