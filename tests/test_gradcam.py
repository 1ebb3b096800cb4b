"""Grad-CAM of a method's descriptor: maps for CNN, ViT and CLIP methods, a toy whose answer is known, and the
method left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidlib import methods
from reidlib.config import profile_config
from reidlib.data.masks import get_grouping
from reidlib.gradcam import descriptor, gradcam, target_layers
from reidlib.methods.base import Batch, DataInfo, Embedding, ReIDMethod


def build_ci(name: str) -> tuple[ReIDMethod, DataInfo]:
    """Method `name` as its ci profile builds it (random init), sized to the ci images."""
    cfg = profile_config(name, "ci")
    data = cfg["data"]
    parts = tuple(get_grouping(data["mask_grouping"], data["masks"]).parts) if data.get("masks") else ()
    size = (data["height"], data["width"])
    info = DataInfo(num_classes=4, num_cameras=2, image_size=size, part_names=parts)
    return methods.build(cfg.get("method", name), cfg["model"], info).eval(), info


def random_batch(info: DataInfo, n: int = 2) -> Batch:
    return Batch(images=torch.randn(n, 3, *info.image_size), camids=torch.arange(n) % 2)


def like_trained(model: nn.Module) -> nn.Module:
    """Non-zero BN shifts, as training leaves them: a blank image then has a descriptor of its own (at random
    init a bias-free CNN maps it to zero, and the self-similarity map is zero: test_vanished_...)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.bias, std=0.5)
    return model


@pytest.mark.parametrize("name, layer", [("bot", "ResNetBackbone"), ("vit_baseline", "LayerNorm"),
                                         ("clip_baseline", "LayerNorm")])
def test_maps_cover_the_image_in_unit_range_for_each_backbone_kind(name, layer):
    torch.manual_seed(0)
    method, info = build_ci(name)
    like_trained(method)
    batch = random_batch(info)
    assert type(target_layers(method)[0]).__name__ == layer
    own = gradcam(method, batch)                                  # each image against itself
    query = descriptor(method, batch)[0]                          # [D]
    against_query = gradcam(method, batch, reference=query)      # every image against image 0
    for maps in (own, against_query[1:]):
        assert maps.shape[1:] == info.image_size and maps.dtype == torch.float32
        assert maps.min() >= 0 and maps.max() <= 1
        assert torch.allclose(maps.flatten(1).amax(1), torch.ones(len(maps)), atol=1e-4)  # min-max scaled


def test_target_layers_per_backbone_kind():
    vit, _ = build_ci("vit_baseline")
    clip, _ = build_ci("clip_baseline")
    bot, _ = build_ci("bot")
    assert target_layers(vit) == [vit.vit.blocks[-1].norm1]
    assert target_layers(clip) == [clip.clip.model.visual.transformer.resblocks[-1].ln_1]
    assert target_layers(bot) == [bot.backbone]


def test_the_method_is_left_as_it_was():
    torch.manual_seed(0)
    method, info = build_ci("qpm")                                # parts with quality weights
    method.train()
    method.backbone.requires_grad_(False)                         # a frozen part stays frozen
    first = next(method.part_embed.parameters())
    kept = torch.ones_like(first)
    first.grad = kept                                             # a gradient the caller had stays
    state = {k: v.clone() for k, v in method.state_dict().items()}
    flags = {n: p.requires_grad for n, p in method.named_parameters()}
    gradcam(method, random_batch(info))
    assert all(torch.equal(state[k], v) for k, v in method.state_dict().items())  # BN statistics included
    assert flags == {n: p.requires_grad for n, p in method.named_parameters()}
    assert first.grad is kept
    assert all(p.grad is None for p in method.parameters() if p is not first)
    assert method.training and method.backbone.training


# ------------------------------------------------------------------------------ a toy with a known answer
class ColourMethod(ReIDMethod):
    """Channel 0 fires on red pixels, channel 1 on green ones, channel 2 (with `background`) everywhere;
    descriptor: their global average. Stride 1, so the map is the image's size."""

    def __init__(self, background: bool = True):
        super().__init__(None, DataInfo(num_classes=2, image_size=(12, 8)))
        conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0]])[:, :, None, None])
            conv.bias.copy_(torch.tensor([0.0, 0.0, 0.2 if background else 0.0]))
        self.backbone = nn.Sequential(conv, nn.ReLU())  # ends in a ReLU as CNN backbones do

    @torch.no_grad()
    def embed(self, batch):
        return Embedding(global_feat=self.backbone(batch.images).mean((2, 3)))


RED, GREEN = (slice(1, 4), slice(1, 4)), (slice(7, 11), slice(3, 7))


def colour_batch() -> Batch:
    images = torch.zeros(1, 3, 12, 8)
    images[0, 0, RED[0], RED[1]] = 2.0
    images[0, 1, GREEN[0], GREEN[1]] = 2.0
    return Batch(images=images, camids=torch.zeros(1, dtype=torch.long))


def region(*where) -> torch.Tensor:
    mask = torch.zeros(12, 8, dtype=torch.bool)
    for rows, cols in where:
        mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("channel, shown", [(0, RED), (1, GREEN)])
def test_the_map_is_the_region_the_reference_looks_for(channel, shown):
    reference = torch.nn.functional.one_hot(torch.tensor(channel), 3).float()  # "red" or "green"
    maps = gradcam(ColourMethod(), colour_batch(), reference=reference)[0]     # [12, 8]
    inside = region(shown)
    assert torch.allclose(maps[inside], torch.ones(())) and torch.all(maps[~inside] == 0)
    # [N, D]: a row per image, here the one row
    assert torch.equal(gradcam(ColourMethod(), colour_batch(), reference=reference[None])[0], maps)


def test_self_similarity_shows_the_objects_not_the_background():
    maps = gradcam(ColourMethod(), colour_batch())[0]
    objects = region(RED, GREEN)
    assert torch.all(maps[objects] > 0.1) and torch.all(maps[~objects] == 0)
    assert torch.allclose(maps[region(GREEN)], torch.ones(()))   # the larger object tells it most from blank


def test_vanished_gradients_give_a_zero_map():
    # no background channel: a blank image has a zero descriptor, and the image's unit descriptor against
    # itself has no gradient; Grad-CAM's min-max scaling would show rounding noise
    assert torch.all(gradcam(ColourMethod(background=False), colour_batch()) == 0)


class NoGradInside(ColourMethod):
    def embed(self, batch):
        with torch.no_grad():
            return super().embed(batch)


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match="without gradients"):
        gradcam(NoGradInside(), colour_batch())
    with pytest.raises(ValueError, match="does not match the method's descriptor"):
        gradcam(ColourMethod(), colour_batch(), reference=torch.ones(5))
    with pytest.raises(ValueError, match="pass \\[D\\] or \\[N, D\\] with N=1"):
        gradcam(ColourMethod(), colour_batch(), reference=torch.ones(2, 3))
