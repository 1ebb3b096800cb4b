"""A convolutional stem for transformers trained from random init (the demo profile's small ViT/CLIP).

Xiao et al., "Early Convolutions Help Transformers See Better" (NeurIPS 2021), replace ViT's 16 x 16
patchify convolution by a few stride-2 3 x 3 convolutions with BatchNorm and ReLU and a final 1 x 1
projection; the token grid is unchanged (H/16 x W/16) but optimisation becomes fast and stable. That is
what a ViT needs to learn anything in the demo budget: on the SynthOcc demo the ViT baseline with the
patchify stem stays at chance (mAP 1.7%, its class token collapses to one vector), with this stem it
reaches about 12% (README, "Demo profile"). The paper profile keeps the pretrained models' own patch
embedding.
"""

from __future__ import annotations

from torch import Tensor, nn

STEM_STRIDE = 16  # four stride-2 layers: the grid of non-overlapping 16 x 16 patches
STEMS = ("patchify", "conv")


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


def check_stem(stem: str, img_size: tuple[int, int], patch_size: int, stride: int) -> None:
    """The conv stem has a fixed stride of 16 and no overlap: it needs 16 x 16 patches at stride 16 and an
    image size divisible by 16 (so its grid is the patchify grid)."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if stem == "conv" and (patch_size != STEM_STRIDE or stride != STEM_STRIDE
                           or any(s % STEM_STRIDE for s in img_size)):
        raise ValueError(
            f"the conv stem makes non-overlapping 16 x 16 tokens: it needs patch size and stride 16 (got "
            f"{patch_size}, {stride}; set model.patch_stride: 16) and an image size divisible by 16 (got "
            f"{tuple(img_size)}); or use the patchify stem"
        )


__all__ = ["ConvStem", "STEMS", "check_stem"]
