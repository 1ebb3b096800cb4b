"""Convolutional stems for the demo profile's small ViT / CLIP, in place of the 16 x 16 patchify conv.

`conv`: trained from random init.

Xiao et al., "Early Convolutions Help Transformers See Better" (NeurIPS 2021), replace ViT's 16 x 16
patchify convolution by a few stride-2 3 x 3 convolutions with BatchNorm and ReLU and a final 1 x 1
projection; the token grid is unchanged (H/16 x W/16) but optimisation becomes fast and stable. That is
what a ViT needs to learn anything in the demo budget: on the SynthOcc demo the ViT baseline with the
patchify stem stays at chance (mAP 1.7%, its class token collapses to one vector), with this stem it
reaches about 12% (README, "Demo profile"). The paper profile keeps the pretrained models' own patch
embedding.

`hybrid`: the ViT paper's hybrid architecture (Dosovitskiy et al., ICLR 2021, Sec. 3.1: "the input
sequence can be formed from feature maps of a CNN"): the tokens are the H/16 x W/16 map of MobileNetV2's
ImageNet layers up to stride 16 (96 channels; the one ImageNet model available offline, see
reidlib/models/mobilenet.py), projected to the width by a 1 x 1 conv.
"""

from __future__ import annotations

from torch import Tensor, nn

STEM_STRIDE = 16  # four stride-2 layers: the grid of non-overlapping 16 x 16 patches
STEMS = ("patchify", "conv", "hybrid")


class ConvStem(nn.Module):
    """[N, C_in, H, W] -> [N, dim, H/16, W/16]: four conv3x3(stride 2)-BN-ReLU layers of widths
    dim/4, dim/2, dim, 2*dim (Xiao et al.'s doubling widths), then a 1 x 1 conv to `dim`."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        widths = [in_chans] + [max(dim * 2**i // 4, 1) for i in range(4)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.proj = nn.Conv2d(widths[-1], dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.layers(x))


class HybridStem(nn.Module):
    """[N, 3, H, W] -> [N, dim, H/16, W/16]: MobileNetV2's ImageNet features up to stride 16, then 1 x 1."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        from reidlib.models.mobilenet import STAGE_ENDS, mobilenetv2

        if in_chans != 3:
            raise ValueError(f"the hybrid stem's ImageNet CNN takes RGB images, not {in_chans} channels")
        net = mobilenetv2(pretrained="default")
        self.cnn = net.features[:STAGE_ENDS[3]]                          # stride 16, 96 channels
        self.proj = nn.Conv2d(net.stage_channels[3], dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.cnn(x))


def build_stem(stem: str, in_chans: int, dim: int) -> nn.Module:
    """The `conv` or `hybrid` stem module (the patchify stem is the backbone's own conv)."""
    return {"conv": ConvStem, "hybrid": HybridStem}[stem](in_chans, dim)


def check_stem(stem: str, img_size: tuple[int, int], patch_size: int, stride: int) -> None:
    """The conv stem has a fixed stride of 16 and no overlap: it needs 16 x 16 patches at stride 16 and an
    image size divisible by 16 (so its grid is the patchify grid)."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if stem != "patchify" and (patch_size != STEM_STRIDE or stride != STEM_STRIDE
                           or any(s % STEM_STRIDE for s in img_size)):
        raise ValueError(
            f"the {stem} stem makes non-overlapping 16 x 16 tokens: it needs patch size and stride 16 (got "
            f"{patch_size}, {stride}; set model.patch_stride: 16) and an image size divisible by 16 (got "
            f"{tuple(img_size)}); or use the patchify stem"
        )


__all__ = ["ConvStem", "HybridStem", "STEMS", "build_stem", "check_stem"]
