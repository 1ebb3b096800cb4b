"""Image augmentations applied to an image and its part masks together.

Train: resize -> random horizontal flip -> pad-and-random-crop -> colour jitter -> normalise -> random
erasing (torchreid / TransReID / BoT order). Test: resize -> normalise.

Geometric ops move image and masks with the same random draw; photometric ops touch the image only.
Masks travel as their K part channels; the background channel is recomputed at the end as
1 - max_k part_k (what `reidlib.data.masks` defines), so padding and erasing, which zero the parts,
turn into background without special cases.

Why not torchvision.transforms.v2 with `tv_tensors.Mask`: v2 resizes masks with nearest neighbour (our
masks are soft) and its RandomErasing passes masks through, so the joint ops here are a few lines over
`torchvision.transforms.v2.functional`. All randomness comes from torch's global RNG (per DataLoader
worker, seeded from the loader's generator), so seeding torch makes augmentation reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from reidlib.config import DataConfig
from reidlib.data.masks import get_grouping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # open_clip OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN = HALF_STD = (0.5, 0.5, 0.5)              # TransReID's ViT configs

# Random erasing box sampling as in torchreid / TransReID (Zhong et al., 2020): area fraction and aspect
# ratio drawn uniformly, up to ERASING_ATTEMPTS tries for a box that fits.
ERASING_AREA = (0.02, 0.4)
ERASING_ASPECT = (0.3, 1 / 0.3)
ERASING_ATTEMPTS = 100

Pair = tuple[Tensor, Tensor | None]  # image [3, H, W], parts [K, H, W] or None


class Resize:
    """Image bilinear (antialiased); masks bilinear too, to the same size, so soft masks stay soft."""

    def __init__(self, height: int, width: int):
        self.size = [height, width]

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        if list(image.shape[-2:]) != self.size:
            image = TF.resize(image, self.size, antialias=True)
        if parts is not None and list(parts.shape[-2:]) != self.size:
            parts = TF.resize(parts, self.size, antialias=True).clamp_(0.0, 1.0)
        return image, parts

    def __repr__(self) -> str:
        return f"Resize({self.size[0]}x{self.size[1]})"


class RandomHorizontalFlip:
    """Flip both with probability p; `swap` lists part-channel pairs (left_arm, right_arm) that trade
    places, since a mirrored person's left arm is a right arm (as flip augmentation in pose estimation
    and human parsing does; BPBreID flips without swapping: pass swap=())."""

    def __init__(self, p: float, swap: Sequence[tuple[int, int]] = ()):
        self.p, self.swap = p, [tuple(pair) for pair in swap]

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        if torch.rand(()) >= self.p:
            return image, parts
        image = TF.horizontal_flip(image)
        if parts is not None:
            order = list(range(parts.shape[0]))
            for a, b in self.swap:
                order[a], order[b] = b, a
            parts = TF.horizontal_flip(parts)[order]
        return image, parts

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p}, swap={self.swap})"


class RandomPadCrop:
    """Zero-pad by `pad` pixels on every side, then crop the original size at a random offset."""

    def __init__(self, pad: int):
        self.pad = pad

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        height, width = image.shape[-2:]
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        image = TF.crop(TF.pad(image, [self.pad], fill=0), top, left, height, width)
        if parts is not None:  # padded pixels hold no part: background after the final recomputation
            parts = TF.crop(TF.pad(parts, [self.pad], fill=0.0), top, left, height, width)
        return image, parts

    def __repr__(self) -> str:
        return f"RandomPadCrop(pad={self.pad})"


class ColorJitter:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s]; image only."""

    def __init__(self, strength: float):
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        return self.jitter(image), parts

    def __repr__(self) -> str:
        return repr(self.jitter)


class Normalize:
    """uint8 [0, 255] -> float32 (x / 255 - mean) / std; image only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        image = TF.to_dtype(image, torch.float32, scale=True)
        return TF.normalize(image, self.mean, self.std), parts

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomErasing:
    """With probability p, blank one random box of the normalised image (value 0, i.e. the mean colour).

    erase_masks=True also clears the parts inside the box, so the masks read "background" where the body
    is now hidden: an erased box is a synthetic occluder and the masks describe what is visible. This is
    also what BPBreID's own pipeline does (CoarseDropout with mask_fill_value=0 on the PifPaf fields).
    erase_masks=False leaves the masks untouched (the body is still there under the box).
    """

    def __init__(self, p: float, erase_masks: bool = True, area: tuple[float, float] = ERASING_AREA,
                 aspect: tuple[float, float] = ERASING_ASPECT, attempts: int = ERASING_ATTEMPTS):
        self.p, self.erase_masks = p, erase_masks
        self.area, self.aspect, self.attempts = area, aspect, attempts

    def sample_box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(top, left, box_height, box_width) of a box that fits, or None after `attempts` misses."""
        for _ in range(self.attempts):
            u_area, u_aspect = torch.rand(2).tolist()
            target = (self.area[0] + (self.area[1] - self.area[0]) * u_area) * height * width
            aspect = self.aspect[0] + (self.aspect[1] - self.aspect[0]) * u_aspect
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        return None

    def __call__(self, image: Tensor, parts: Tensor | None) -> Pair:
        if torch.rand(()) >= self.p:
            return image, parts
        box = self.sample_box(*image.shape[-2:])
        if box is None:
            return image, parts
        top, left, h, w = box
        image = image.clone()
        image[:, top:top + h, left:left + w] = 0.0
        if parts is not None and self.erase_masks:
            parts = parts.clone()
            parts[:, top:top + h, left:left + w] = 0.0
        return image, parts

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, erase_masks={self.erase_masks})"


def to_uint8_image(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """PIL image, HWC uint8 array or CHW uint8 tensor -> CHW uint8 tensor with 3 channels."""
    if isinstance(image, Image.Image):
        image = TF.pil_to_tensor(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] image array, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image (PIL, [H, W, 3] uint8 array or [3, H, W] uint8 tensor), "
                         f"got {type(image).__name__} {getattr(image, 'shape', '')}")
    return image


class ReidTransform:
    """A sequence of joint ops. Call with (image, mask or None) -> (image [3, H, W] float32,
    mask [K+1, H, W] float32 or None); `mask` is what `reidlib.data.masks.load_part_masks` returns."""

    def __init__(self, ops: Sequence):
        self.ops = list(ops)

    def __call__(self, image, mask: np.ndarray | Tensor | None = None) -> Pair:
        image = to_uint8_image(image)
        parts = None
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.float32)
            if mask.ndim != 3 or mask.shape[0] < 2:
                raise ValueError(f"expected part masks [K+1, h, w] with the background first, "
                                 f"got {tuple(mask.shape)}")
            parts = mask[1:]  # [K, h, w]
        for op in self.ops:
            image, parts = op(image, parts)
        if parts is None:
            return image, None
        background = 1.0 - parts.amax(dim=0, keepdim=True)  # [1, H, W]
        return image, torch.cat([background, parts]).contiguous()

    def __repr__(self) -> str:
        return "ReidTransform(\n  " + ",\n  ".join(map(repr, self.ops)) + "\n)"


def build_transforms(cfg: DataConfig, train: bool) -> ReidTransform:
    """The training (augmenting) or test pipeline a DataConfig describes."""
    ops: list = [Resize(cfg.height, cfg.width)]
    if train:
        if cfg.flip_p > 0:
            ops.append(RandomHorizontalFlip(cfg.flip_p, _flip_swaps(cfg)))
        if cfg.pad > 0:
            ops.append(RandomPadCrop(cfg.pad))
        if cfg.color_jitter > 0:
            ops.append(ColorJitter(cfg.color_jitter))
    ops.append(Normalize(cfg.norm_mean, cfg.norm_std))
    if train and cfg.erasing_p > 0:
        ops.append(RandomErasing(cfg.erasing_p, erase_masks=cfg.erase_masks))
    return ReidTransform(ops)


def _flip_swaps(cfg: DataConfig) -> list[tuple[int, int]]:
    if not (cfg.masks and cfg.flip_swap_sides):
        return []
    return get_grouping(cfg.mask_grouping).flip_pairs()


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD", "HALF_MEAN", "HALF_STD",
    "Resize", "RandomHorizontalFlip", "RandomPadCrop", "ColorJitter", "Normalize", "RandomErasing",
    "ReidTransform", "to_uint8_image", "build_transforms",
]
