"""From a DataConfig to batches: the image data set, the P x K training loader and the test loader.

A batch is a dict: `image` [B, 3, H, W] float32, `pid`, `camid`, `index` [B] int64, and `mask`
[B, K+1, H, W] float32 (background first) when part masks are loaded.

Reproducibility: call `loader.set_epoch(epoch)` at the start of each epoch. The P x K order is a
function of (seed, epoch); augmentation draws from torch's RNG, which in worker processes is seeded
from (seed, rank, epoch, worker id), and with `workers: 0` is the main process's RNG, which the caller
seeds (and checkpoints, for a bit-exact resume).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reidlib.config import ConfigError, DataConfig
from reidlib.data.images import read_image
from reidlib.data.masks import check_masks, get_grouping, load_part_masks, locate_mask
from reidlib.data.records import Record, ReidDataset
from reidlib.data.sampler import RandomIdentitySampler
from reidlib.data.transforms import ReidTransform, build_transforms, to_uint8_image
from reidlib.seed import seed_worker

SYNTHOCC_SEED = 0  # the SynthOcc set every config reads when data.root is null
# Decoded images kept per process: a notebook trains and evaluates a dozen runs on the same files, and
# decoding them again was ~2 s of each short QPM ablation row (SynthOcc demo: 2.8k images, ~25 MB).
DECODED_IMAGES_KEPT = 4096


@functools.lru_cache(maxsize=DECODED_IMAGES_KEPT)
def _decoded(path: str, mtime_ns: int, size: int) -> torch.Tensor:
    """[3, h, w] uint8 of one version of a file (mtime and size are in the key, so an edited file is read
    again). Callers must not modify the tensor in place (the transforms make new ones)."""
    return to_uint8_image(read_image(path))


def decode_image(path: str | Path) -> torch.Tensor:
    stat = os.stat(path)
    return _decoded(str(path), stat.st_mtime_ns, stat.st_size)


class ReidImageDataset(Dataset):
    """Records -> dicts of tensors. `root` is the data set root under which `masks/<source>/` lives
    (see `reidlib.data.masks`); it is only needed when masks are loaded.

    preload: decode every image (uint8) and part mask once, up front, instead of in every epoch: decoding
    is about a quarter of a small model's training step on a CPU (SynthOcc demo: 44 MB of images). A
    corrupt file then fails at once, before training starts."""

    def __init__(self, records: Sequence[Record], transform: ReidTransform, mask_source: str | None = None,
                 grouping: str = "five", root: str | Path | None = None, preload: bool = False):
        self.records = list(records)
        self.transform = transform
        self.mask_source = mask_source
        self.grouping = grouping
        self.root = root
        if mask_source is not None:
            get_grouping(grouping, mask_source)  # fail now, not inside a worker
        self.cache = [self._decode(r) for r in self.records] if preload else None

    def _decode(self, record: Record) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = decode_image(record.path)                                    # [3, h, w] uint8
        if self.mask_source is None:
            return image, None
        path = locate_mask(record, self.root, self.mask_source)
        mask = load_part_masks(path, self.mask_source, self.grouping)        # [K+1, h, w]
        return image, torch.as_tensor(mask)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        image, mask = self.cache[index] if self.cache is not None else self._decode(record)
        image, mask = self.transform(image, mask)
        item = {
            "image": image,                                          # [3, H, W]
            "pid": torch.tensor(record.pid, dtype=torch.int64),
            "camid": torch.tensor(record.camid, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if mask is not None:
            item["mask"] = mask                                      # [K+1, H, W]
        return item


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class TrainLoader(DataLoader):
    """A DataLoader whose `set_epoch(e)` fixes the P x K order and the workers' augmentation seeds as
    functions of (seed, rank, e) alone: a resumed run replays the epochs an uninterrupted run sees, and
    ranks draw different augmentations. Call it at the start of every epoch."""

    def __init__(self, *args, seed: int, rank: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed, self.rank = seed, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(_derived_seed(self.seed, self.rank, epoch))


def build_train_loader(dataset: ReidDataset, cfg: DataConfig, seed: int, rank: int = 0,
                       world_size: int = 1) -> TrainLoader:
    """P x K batches of `dataset.train` with the training augmentations (one rank's share under DDP)."""
    sampler = RandomIdentitySampler([r.pid for r in dataset.train], cfg.batch_p, cfg.batch_k, seed=seed,
                                    num_replicas=world_size, rank=rank)
    images = ReidImageDataset(dataset.train, build_transforms(cfg, train=True), cfg.masks,
                              cfg.mask_grouping, root=dataset.root, preload=cfg.preload)
    # Workers are restarted every epoch (not persistent) so that each epoch's worker seeds come from
    # the generator as set_epoch left it.
    return TrainLoader(
        images, batch_size=cfg.batch_p * cfg.batch_k, sampler=sampler, drop_last=True,
        num_workers=cfg.workers, worker_init_fn=seed_worker, generator=torch.Generator(),
        seed=seed, rank=rank,
    )


def build_test_loader(records: Sequence[Record], cfg: DataConfig, root: str | Path | None = None,
                      with_masks: bool = False) -> DataLoader:
    """Records in their order, resized and normalised only; part masks too when `with_masks`
    (then `root` is the data set root and cfg.masks the source)."""
    if with_masks and cfg.masks is None:
        raise ConfigError("test masks requested but data.masks is null; set it to 'parsing' or 'pifpaf'")
    images = ReidImageDataset(records, build_transforms(cfg, train=False), cfg.masks if with_masks else None,
                              cfg.mask_grouping, root=root)
    return DataLoader(images, batch_size=cfg.test_batch_size, shuffle=False, drop_last=False,
                      num_workers=cfg.workers, worker_init_fn=seed_worker)


def load_from_config(cfg: DataConfig, mask_splits: Sequence[str] = ("train",)) -> ReidDataset:
    """The data set a DataConfig names; SynthOcc is generated into its cache on first use.

    With `cfg.masks` set, every record of `mask_splits` must have a mask file (checked up front:
    MissingMasksError names the first missing path). Training is where the methods use masks;
    pass ("train", "query", "gallery") when test-time masks are needed too.
    """
    from reidlib.data import DATASETS, load_dataset

    DATASETS.get(cfg.dataset, where="data.dataset")  # an unknown name first: data.root is not the problem
    if cfg.root is None:
        if cfg.dataset != "synthocc":
            raise ConfigError(f"data.root is not set: data set {cfg.dataset!r} is read from disk; set "
                              f"data.root to its folder (`reidlib datasets list` shows the layouts), or use "
                              f"data.dataset: synthocc, which is generated when data.root is null")
        from reidlib.data import synthocc

        root = synthocc.ensure(size=cfg.synth_size, seed=SYNTHOCC_SEED)
        dataset = load_dataset("synthocc", root, on_corrupt=cfg.on_corrupt, protocol=cfg.protocol)
    else:
        options = {"protocol": cfg.protocol} if cfg.dataset == "synthocc" else {}
        dataset = load_dataset(cfg.dataset, cfg.root, on_corrupt=cfg.on_corrupt, **options)
    if cfg.masks is not None:
        for split in mask_splits:
            check_masks(dataset.split(split), dataset.root, cfg.masks)
    return dataset


__all__ = [
    "SYNTHOCC_SEED", "ReidImageDataset", "TrainLoader", "build_train_loader", "build_test_loader",
    "load_from_config",
]
