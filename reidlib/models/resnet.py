"""Convolutional backbones returning feature maps: ResNet-50 (last stride 1, optional IBN-a), small timm
ResNets for the ci/demo profiles, and HRNet-W32.

Every CNN backbone has `forward(x [N, 3, H, W]) -> [N, C, h, w]`, `forward_stages(x) -> list of maps`,
`out_channels` (C), `stage_channels` and `stride` (H / h).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from reidlib.models.weights import PretrainedSpec, load_pretrained

# File names searched when `pretrained` is a directory (torchvision / IBN-Net / timm releases).
RESNET50_FILES = ("resnet50-*.pth", "resnet50.pth")
RESNET50_IBN_FILES = ("resnet50_ibn_a*.pth",)
HRNET_W32_FILES = ("hrnet_w32*.safetensors", "hrnet_w32*.pth", "hrnetv2_w32*.pth")
# Keys of ImageNet classification heads, never part of a ReID backbone.
RESNET_HEAD_KEYS = ("fc.",)
HRNET_HEAD_KEYS = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class IBN(nn.Module):
    """IBN-a normalisation (Pan et al., ECCV 2018): InstanceNorm on the first `ratio` of the channels
    (appearance invariance), BatchNorm on the rest (content discrimination).

    Sub-module names `IN` / `BN` match the IBN-Net release so its `resnet50_ibn_a` weights load."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * ratio)
        if not 0 < self.half < channels:
            raise ValueError(f"IBN ratio {ratio} leaves no IN or no BN channel out of {channels}")
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: Tensor) -> Tensor:  # [N, C, H, W]
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class ResNetBackbone(nn.Module):
    """Stem and four residual stages of a torchvision or timm ResNet; no pooling, no classifier.

    Attribute names (conv1, bn1, layer1..4) keep those of the source so ImageNet checkpoints load."""

    def __init__(self, net: nn.Module, last_stride: int = 1, ibn: bool = False, ibn_ratio: float = 0.5):
        super().__init__()
        self.conv1, self.bn1, self.maxpool = net.conv1, net.bn1, net.maxpool
        self.act = net.relu if hasattr(net, "relu") else net.act1  # torchvision: relu, timm: act1
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        set_last_stride(self, last_stride)
        if ibn:  # IBN-a: layers 1-3 only; layer 4 stays BN (its features must stay discriminative)
            for layer in self.layers[:3]:
                for block in layer:
                    block.bn1 = IBN(block.bn1.num_features, ibn_ratio)
        self.stage_channels = [_block_out_channels(layer[-1]) for layer in self.layers]
        self.out_channels = self.feature_dim = self.stage_channels[-1]
        self.stride = _conv_stride(self.conv1) * _pool_stride(self.maxpool)
        for layer in self.layers:
            self.stride *= _block_stride(layer[0])

    @property
    def layers(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.act(self.bn1(self.conv1(x))))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Output of each of the four stages, [N, C_i, H / s_i, W / s_i]."""
        x = self.forward_stem(x)
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tensor:  # [N, 3, H, W] -> [N, C, H / stride, W / stride]
        return self.forward_stages(x)[-1]


def set_last_stride(backbone: ResNetBackbone, stride: int) -> None:
    """Set the stride of layer4's first block (main path and shortcut); stride 1 doubles the final map
    resolution (BoT's "last stride" trick) without dilation, so ImageNet weights still fit."""
    for m in backbone.layer4[0].modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (stride, stride)
        if isinstance(m, nn.AvgPool2d) and m.stride not in (1, (1, 1)):  # timm avg_down shortcuts
            m.stride = stride


def _block_out_channels(block: nn.Module) -> int:
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2  # Bottleneck / BasicBlock
    return last_bn.num_features


def _conv_stride(conv: nn.Conv2d) -> int:
    return conv.stride[0]


def _pool_stride(pool: nn.Module) -> int:
    stride = getattr(pool, "stride", 1)
    return stride[0] if isinstance(stride, tuple) else stride


def _block_stride(block: nn.Module) -> int:
    return max(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))


def resnet50(
    pretrained: PretrainedSpec = None,
    sha256: str | None = None,
    last_stride: int = 1,
    ibn: bool = False,
    img_size: tuple[int, int] | None = None,
) -> ResNetBackbone:
    """torchvision ResNet-50 (v1.5), last stride 1 by default: 2048 x 16 x 8 at 256 x 128.

    img_size is accepted (and unused) so every backbone can be built with the same arguments.

    pretrained: torchvision's `resnet50-0676ba61.pth` (or IBN-Net's `resnet50_ibn_a-d9d0bb7b.pth` with
    ibn=True)."""
    model = ResNetBackbone(torchvision.models.resnet50(weights=None), last_stride, ibn=ibn)
    files = RESNET50_IBN_FILES if ibn else RESNET50_FILES
    model.load_report = load_pretrained(model, pretrained, files, sha256, drop_prefixes=RESNET_HEAD_KEYS)
    return model


# Widths of the narrow timm ResNets used by the ci / demo profiles (stem, then one per stage).
SMALL_CHANNELS = (32, 64, 128, 256)
TINY_CHANNELS = (16, 32, 64, 128)
DEPTH_TO_LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2)}


def timm_resnet(
    channels: tuple[int, ...],
    depth: int = 10,
    stem_width: int | None = None,
    last_stride: int = 1,
    ibn: bool = False,
    pretrained: PretrainedSpec = None,
    sha256: str | None = None,
    img_size: tuple[int, int] | None = None,
) -> ResNetBackbone:
    """A narrow BasicBlock ResNet (timm) with the same stem / 4-stage / last-stride-1 structure as
    ResNet-50. depth 10 = one block per stage, 18 = two."""
    from timm.models.resnet import BasicBlock, ResNet

    if depth not in DEPTH_TO_LAYERS:
        raise ValueError(f"depth {depth} not supported; use one of {sorted(DEPTH_TO_LAYERS)}")
    net = ResNet(
        block=BasicBlock,
        layers=DEPTH_TO_LAYERS[depth],
        channels=channels,
        stem_width=stem_width or channels[0],
        num_classes=0,
    )
    model = ResNetBackbone(net, last_stride, ibn=ibn)
    model.load_report = load_pretrained(model, pretrained, (), sha256, drop_prefixes=RESNET_HEAD_KEYS)
    return model


def resnet_small(
    pretrained: PretrainedSpec = None, sha256: str | None = None, depth: int = 10, **kwargs
) -> ResNetBackbone:
    """demo profile: BasicBlock ResNet, channels 32-256, depth 10 or 18, last stride 1 (stride 16)."""
    return timm_resnet(SMALL_CHANNELS, depth=depth, pretrained=pretrained, sha256=sha256, **kwargs)


def resnet_tiny(
    pretrained: PretrainedSpec = None, sha256: str | None = None, depth: int = 10, **kwargs
) -> ResNetBackbone:
    """ci profile: BasicBlock ResNet, channels 16-128, last stride 1 (stride 16)."""
    return timm_resnet(TINY_CHANNELS, depth=depth, pretrained=pretrained, sha256=sha256, **kwargs)


class HRNetBackbone(nn.Module):
    """timm HRNet-W32; the four branch outputs (strides 4, 8, 16, 32) are upsampled bilinearly to the
    highest resolution and concatenated (32 + 64 + 128 + 256 = 480 channels, stride 4), the usual
    HRNet representation for dense tasks and the one BPBReID feeds its part heads."""

    def __init__(self, name: str = "hrnet_w32"):
        super().__init__()
        import timm

        # feature_location="" gives the raw branch outputs (not the classification "incre" modules).
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
        )
        self.stage_channels = list(self.body.feature_info.channels())
        self.out_channels = self.feature_dim = sum(self.stage_channels)
        self.stride = self.body.feature_info.reduction()[0]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The four branch outputs, [N, C_i, H / s_i, W / s_i] with s_i = 4, 8, 16, 32."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:  # [N, 3, H, W] -> [N, 480, H / 4, W / 4]
        maps = self.forward_stages(x)
        size = maps[0].shape[-2:]
        up = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return torch.cat([maps[0], *up], dim=1)


def hrnet_w32(
    pretrained: PretrainedSpec = None, sha256: str | None = None, img_size: tuple[int, int] | None = None
) -> HRNetBackbone:
    """HRNet-W32 (timm); pretrained: timm's `hrnet_w32` ImageNet weights (safetensors or .pth)."""
    model = HRNetBackbone("hrnet_w32")

    def add_prefix(state: dict[str, Tensor], report) -> dict[str, Tensor]:
        return {f"body.{k}": v for k, v in state.items()}

    model.load_report = load_pretrained(
        model, pretrained, HRNET_W32_FILES, sha256, drop_prefixes=HRNET_HEAD_KEYS, adapt=add_prefix
    )
    return model
