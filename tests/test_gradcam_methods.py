"""Grad-CAM runs on every registered method as its ci profile builds it: one hooked target layer, maps in
[0, 1] at the image size, zero only for an image whose descriptor is zero (no visible part)."""

from __future__ import annotations

import pytest
import torch
from test_gradcam import build_ci, random_batch

from reidlib import methods
from reidlib.gradcam import descriptor, gradcam

REGISTERED = [name for name in methods.names() if not name.startswith("tiny")]


@pytest.mark.parametrize("name", REGISTERED)
def test_every_method_gets_a_map_against_a_query(name):
    torch.manual_seed(0)
    method, info = build_ci(name)
    batch = random_batch(info)
    own = descriptor(method, batch)                               # [2, D]
    maps = gradcam(method, batch, reference=own[0])               # image 1 against image 0
    assert maps.shape == (2, *info.image_size) and maps.min() >= 0 and maps.max() <= 1
    shown = bool(maps[1].max() > 0.99)
    assert shown == bool(own[1].abs().max() > 0), f"{name}: a map iff the image has a descriptor"
