from __future__ import annotations

import torch

from reidlib.config import DataConfig
from reidlib.data import transforms as T

H, W = 16, 8


def marked(row: int, col: int, parts: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A black image with one white pixel, and masks whose part 1 is that pixel (background elsewhere)."""
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    image[:, row, col] = 255
    mask = torch.zeros(parts + 1, H, W)
    mask[0] = 1.0
    mask[0, row, col] = 0.0
    mask[1, row, col] = 1.0
    return image, mask


def where(plane: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(p) for p in (plane > plane.min() + 1e-6).nonzero().tolist()]


def cfg(**changes) -> DataConfig:
    base = dict(height=H, width=W, flip_p=0.5, pad=3, erasing_p=0.0, color_jitter=0.0)
    return DataConfig(**{**base, **changes})


def test_flip_moves_image_and_mask_together():
    image, mask = marked(5, 1)
    out_image, out_mask = T.ReidTransform([T.RandomHorizontalFlip(1.0)])(image, mask)
    assert where(out_image[0]) == [(5, W - 2)] and where(out_mask[1]) == [(5, W - 2)]
    assert out_mask[0, 5, W - 2] == 0 and out_mask[0, 5, 1] == 1


def test_pad_crop_moves_image_and_mask_together_and_pads_with_background():
    moved = set()
    for seed in range(8):
        torch.manual_seed(seed)
        image, mask = marked(8, 4)
        out_image, out_mask = T.ReidTransform([T.RandomPadCrop(3)])(image, mask)
        spot = where(out_image[0])
        assert spot == where(out_mask[1]), f"seed {seed}: image and mask disagree"
        moved.update(spot)
        # the one marked pixel is the only non-background one: padding became background
        assert out_mask[0].sum() == H * W - 1
    assert len(moved) > 1  # the crop offset is random


def test_full_training_pipeline_keeps_alignment():
    transform = T.build_transforms(cfg(masks="parsing"), train=True)
    for seed in range(10):
        torch.manual_seed(seed)
        image, mask = marked(3, 6)
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, H, W) and out_image.dtype == torch.float32
        assert out_mask.shape == (3, H, W) and out_mask.dtype == torch.float32
        assert where(out_image[0]) == where(out_mask[1])


def test_flip_swaps_left_and_right_part_channels():
    # "eight": 1 head, 2 left_arm, 3 right_arm, ...; a left arm drawn at column 1 becomes a right arm at W-2
    image, mask = marked(6, 1, parts=8)
    mask[[1, 2]] = mask[[2, 1]]  # the marker is in channel 2 (left_arm)
    flip = T.build_transforms(cfg(masks="parsing", mask_grouping="eight", flip_p=1.0, pad=0), train=True)
    _, out = flip(image, mask)
    assert where(out[3]) == [(6, W - 2)] and out[2].sum() == 0
    keep = T.build_transforms(cfg(masks="parsing", mask_grouping="eight", flip_p=1.0, pad=0,
                                  flip_swap_sides=False), train=True)
    _, out = keep(image, mask)
    assert where(out[2]) == [(6, W - 2)] and out[3].sum() == 0


def _erase(erase_masks: bool):
    torch.manual_seed(3)
    image = torch.randint(1, 256, (3, H, W), dtype=torch.uint8)  # no pixel is at the mean colour
    mask = torch.zeros(2, H, W)
    mask[1] = 1.0  # the body covers everything
    before, _ = T.ReidTransform([T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])(image, mask)
    op = T.RandomErasing(1.0, erase_masks=erase_masks)
    after, out_mask = T.ReidTransform([T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD), op])(image, mask)
    erased = (after != before).any(dim=0)
    return after, out_mask, erased


def test_erasing_marks_the_box_as_background_by_default():
    after, mask, erased = _erase(erase_masks=True)
    assert 0 < erased.sum() < H * W
    assert (after[:, erased] == 0).all()  # the mean colour after normalisation
    assert (mask[1][erased] == 0).all() and (mask[0][erased] == 1).all()
    assert (mask[1][~erased] == 1).all() and (mask[0][~erased] == 0).all()


def test_erasing_can_leave_masks_untouched():
    _, mask, erased = _erase(erase_masks=False)
    assert erased.any()
    assert (mask[1] == 1).all() and (mask[0] == 0).all()


def test_random_transforms_are_deterministic_under_torch_seed():
    transform = T.build_transforms(cfg(masks="pifpaf", erasing_p=0.5, color_jitter=0.3), train=True)
    image = torch.randint(0, 256, (3, 20, 10), dtype=torch.uint8)
    mask = torch.rand(6, 5, 4)

    def run(seed):
        torch.manual_seed(seed)
        return [transform(image, mask) for _ in range(4)]

    first, again, other = run(0), run(0), run(1)
    for (i1, m1), (i2, m2) in zip(first, again, strict=True):
        assert torch.equal(i1, i2) and torch.equal(m1, m2)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_test_transform_is_resize_and_normalise_only():
    transform = T.build_transforms(cfg(), train=False)
    assert [type(op) for op in transform.ops] == [T.Resize, T.Normalize]
    mean = torch.tensor(T.IMAGENET_MEAN)
    image = (mean * 255).round().to(torch.uint8)[:, None, None].expand(3, 32, 16).contiguous()
    out, none = transform(image)
    assert none is None and out.shape == (3, H, W)
    assert out.abs().max() < 0.01  # the mean colour normalises to ~0


def test_clip_normalisation_is_configurable():
    clip = T.build_transforms(cfg(norm_mean=T.CLIP_MEAN, norm_std=T.CLIP_STD), train=False)
    image = torch.full((3, H, W), 255, dtype=torch.uint8)
    out, _ = clip(image)
    want = (1 - torch.tensor(T.CLIP_MEAN)) / torch.tensor(T.CLIP_STD)
    torch.testing.assert_close(out[:, 0, 0], want)


def test_masks_are_resized_bilinearly_to_the_image_size():
    transform = T.build_transforms(cfg(), train=False)
    image = torch.zeros(3, 32, 16, dtype=torch.uint8)
    mask = torch.zeros(2, 4, 2)  # low-resolution masks, as PifPaf fields are
    mask[1, :2] = 1.0            # top half is the part
    mask[0] = 1 - mask[1]
    _, out = transform(image, mask)
    assert out.shape == (2, H, W)
    assert out[1, 0].eq(1).all() and out[1, -1].eq(0).all()
    soft = out[1, :, 0]
    assert ((soft > 0) & (soft < 1)).any()  # bilinear: a soft edge, not a nearest-neighbour step
    torch.testing.assert_close(out[0], 1 - out[1])


def test_build_transforms_follows_the_config():
    ops = T.build_transforms(cfg(erasing_p=0.5, color_jitter=0.2), train=True).ops
    assert [type(op) for op in ops] == [T.Resize, T.RandomHorizontalFlip, T.RandomPadCrop, T.ColorJitter,
                                        T.Normalize, T.RandomErasing]
    ops = T.build_transforms(cfg(flip_p=0.0, pad=0), train=True).ops
    assert [type(op) for op in ops] == [T.Resize, T.Normalize]
