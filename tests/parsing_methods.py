"""Shared by the tests of the parsing-supervised methods (BPBreID, PAB-ReID, BPSEMA-ReID): seeded
generators, one-hot parsing labels and batches as the loader gives them, one thread for tiny tensors, and a
short ci-profile engine run of the method alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidlib.config import RunConfig, replace
from reidlib.methods.base import Batch

IMAGE = (96, 48)  # resnet_tiny has stride 16: a 6 x 3 feature map


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on a machine whose cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_masks(n: int, num_parts: int, size: tuple[int, int] = IMAGE, seed: int = 0) -> torch.Tensor:
    """One-hot parsing labels [N, K+1, H, W] (background first), as the loader gives them."""
    labels = torch.randint(num_parts + 1, (n, *size), generator=gen(seed))
    return F.one_hot(labels, num_parts + 1).permute(0, 3, 1, 2).float()


def batch(images: torch.Tensor, pids: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> Batch:
    return Batch(images=images, camids=torch.zeros(len(images), dtype=torch.long), pids=pids, masks=masks)


def training_batch(num_parts: int, n_ids: int = 4, per_id: int = 2, seed: int = 0) -> Batch:
    """n_ids identities x per_id random images with random parsing labels of K parts."""
    images = torch.randn(n_ids * per_id, 3, *IMAGE, generator=gen(seed))
    pids = torch.arange(n_ids).repeat_interleave(per_id)
    return batch(images, pids, random_masks(len(images), num_parts, seed=seed + 1))


def ci_engine_run(method: str, runs_dir):
    """The method's ci profile through the engine on SynthOcc ci: 3 steps of 4 x 2 images, no
    augmentation, and no BoT trunk (the method alone; the notebooks' ci runs cover the trunk)."""
    from reidlib.engine import train

    cfg = replace(RunConfig.from_profile(method, "ci"),
                  data={"batch_p": 4, "batch_k": 2, "erasing_p": 0.0, "pad": 0},
                  train={"epochs": 1, "milestones": [], "max_iters_per_epoch": 3}, init_from=None)
    return train(cfg, runs_dir=runs_dir, progress="off")
