"""Backbones and heads. `build_backbone(name, pretrained=None, sha256=None, **kwargs)` is the entry point.

| name             | kind | output                                   | profile |
|------------------|------|------------------------------------------|---------|
| resnet50         | CNN  | [N, 2048, H/16, W/16] (last stride 1)    | paper   |
| hrnet_w32        | CNN  | [N, 480, H/4, W/4] (4 branches concat.)  | paper   |
| resnet_small     | CNN  | [N, 256, H/16, W/16]                     | demo    |
| resnet_tiny      | CNN  | [N, 128, H/16, W/16]                     | ci      |
| mobilenetv2      | CNN  | [N, 1280, H/16, W/16] (last stride 1)    | demo    |
| vit_base_patch16 | ViT  | tokens [N, 1+L, 768]                     | paper   |
| vit_small_demo   | ViT  | tokens [N, 1+L, 96]                      | demo    |
| vit_small_hybrid | ViT  | tokens [N, 1+L, 96] (MobileNetV2 tokens) | demo    |
| vit_tiny_ci      | ViT  | tokens [N, 1+L, 48]                      | ci      |
| clip_vit_b16     | CLIP | (cls [N, 512], patch tokens [N, L, 768]) | paper   |
| clip_small       | CLIP | (cls [N, 64], patch tokens [N, L, 96])   | demo    |
| clip_small_hybrid| CLIP | (cls [N, 64], patch tokens [N, L, 96])   | demo    |
| clip_tiny_ci     | CLIP | (cls [N, 32], patch tokens [N, L, 48])   | ci      |

`pretrained`: None (random init), a weights file, a folder holding the expected file, or True (the
folder $REIDLIB_WEIGHTS, default ~/.cache/reidlib/weights). Nothing is ever downloaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from reidlib.models import clip, mobilenet, resnet, vit
from reidlib.models.weights import LoadReport, PretrainedSpec, WeightsError, default_weights_dir
from reidlib.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")

for _name, _factory in {
    "resnet50": resnet.resnet50,
    "hrnet_w32": resnet.hrnet_w32,
    "resnet_small": resnet.resnet_small,
    "resnet_tiny": resnet.resnet_tiny,
    "mobilenetv2": mobilenet.mobilenetv2,
    "vit_base_patch16": vit.vit_base_patch16,
    "vit_small_demo": vit.vit_small_demo,
    "vit_small_hybrid": vit.vit_small_hybrid,
    "vit_tiny_ci": vit.vit_tiny_ci,
    "clip_vit_b16": clip.clip_vit_b16,
    "clip_small": clip.clip_small,
    "clip_small_hybrid": clip.clip_small_hybrid,
    "clip_tiny_ci": clip.clip_tiny_ci,
}.items():
    BACKBONES.register(_name)(_factory)


def build_backbone(
    name: str, pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs
) -> nn.Module:
    """Build backbone `name`; `kwargs` go to its factory (e.g. img_size, stride, num_cameras, ibn, depth).

    The module's `load_report` attribute is the `LoadReport` of its pretrained weights (None if random)."""
    factory = BACKBONES.get(name)
    params = inspect.signature(factory).parameters
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    options = set(params) - {"pretrained", "sha256"}
    unknown = [] if forwards else sorted(set(kwargs) - options)
    if unknown:  # e.g. BoT's last_stride on HRNet, whose output stride is fixed
        raise ValueError(f"backbone {name!r} has no option(s) {unknown} (its options: {sorted(options)}); "
                         "pick a backbone that takes them")
    return factory(pretrained=pretrained, sha256=sha256, **kwargs)


def backbone_family(name: str) -> str:
    """'cnn', 'vit' or 'clip' for backbone `name` without building it (what `backbone_kind` says of it)."""
    return {vit.__name__: "vit", clip.__name__: "clip"}.get(BACKBONES.get(name).__module__, "cnn")


def min_input_side(backbone: nn.Module, cells: int = 1) -> int:
    """The smallest image side giving `cells` feature-map cells (or patch tokens) along it: a CNN's output
    stride per cell; for a ViT or CLIP, one patch plus one patch stride per further cell."""
    patch = getattr(backbone, "patch_size", None)
    if patch is None:
        return getattr(backbone, "stride", 1) * cells  # a backbone that states no stride: no minimum
    return patch + getattr(backbone, "patch_stride", patch) * (cells - 1)


def backbone_kind(model: nn.Module) -> str:
    """'cnn', 'vit' or 'clip': how a method should read the backbone's output."""
    if isinstance(model, vit.ReIDViT):
        return "vit"
    if isinstance(model, clip.CLIPBackbone):
        return "clip"
    return "cnn"


__all__ = [
    "BACKBONES",
    "LoadReport",
    "WeightsError",
    "backbone_family",
    "backbone_kind",
    "build_backbone",
    "default_weights_dir",
    "min_input_side",
]
