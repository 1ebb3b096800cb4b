from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import reidlib.data
from reidlib.config import ConfigError, DataConfig, replace
from reidlib.data import loader as L
from reidlib.data.masks import MissingMasksError
from reidlib.data.records import Record, ReidDataset
from reidlib.data.transforms import build_transforms

H, W = 16, 8


def fake_dataset(root, train_pids=(0, 1, 2, 3), per_pid=3, masks=True, suffix=".jpg") -> ReidDataset:
    """Tiny images in Market-1501's layout, with label-map masks under <root>/masks/parsing/."""
    rng = np.random.default_rng(0)
    splits = {}
    layout = (("bounding_box_train", train_pids), ("query", (10,)), ("bounding_box_test", (10, 11)))
    for split, pids in layout:
        (root / split).mkdir(parents=True)
        (root / "masks" / "parsing" / split).mkdir(parents=True)
        records = []
        for pid in pids:
            for i in range(per_pid):
                stem = f"{pid:04d}_c{i % 2 + 1}s1_{i:06d}"
                path = root / split / (stem + suffix)
                Image.fromarray(rng.integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(path)
                if masks:
                    labels = np.zeros((12, 6), np.uint8)
                    labels[:3] = 1    # head
                    labels[3:8] = 2   # torso
                    labels[8:] = 5    # legs
                    Image.fromarray(labels, mode="L").save(root / "masks" / "parsing" / split / f"{stem}.png")
                records.append(Record(str(path), pid, i % 2))
        splits[split] = records
    return ReidDataset("fake", str(root), splits["bounding_box_train"], splits["query"],
                       splits["bounding_box_test"])


def cfg(**changes) -> DataConfig:
    base = dict(height=H, width=W, batch_p=2, batch_k=2, test_batch_size=4, erasing_p=0.5, pad=2)
    return DataConfig(**{**base, **changes})


def test_item_shapes_and_dtypes(tmp_path):
    data = fake_dataset(tmp_path)
    ds = L.ReidImageDataset(data.train, build_transforms(cfg(masks="parsing"), train=True), "parsing", "five",
                            root=data.root)
    item = ds[4]
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (6, H, W) and item["mask"].dtype == torch.float32
    for key, want in (("pid", 1), ("camid", 1), ("index", 4)):
        assert item[key].dtype == torch.int64 and item[key].item() == want
    assert 0 <= item["mask"].min() and item["mask"].max() <= 1
    plain = L.ReidImageDataset(data.train, build_transforms(cfg(), train=False))
    assert "mask" not in plain[0]


def test_train_loader_batches(tmp_path):
    data = fake_dataset(tmp_path)
    loader = L.build_train_loader(data, cfg(masks="parsing", mask_grouping="eight"), seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    batch = batches[0]
    assert batch["image"].shape == (4, 3, H, W) and batch["mask"].shape == (4, 9, H, W)
    pids = batch["pid"].tolist()
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]  # P=2 identities x K=2
    assert batch["pid"].dtype == batch["camid"].dtype == batch["index"].dtype == torch.int64


def _epoch_batches(data, config, seed, epochs, torch_seed=0):
    """First batch of each epoch in `epochs`, from a fresh loader."""
    torch.manual_seed(torch_seed)
    loader = L.build_train_loader(data, config, seed=seed)
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append(next(iter(loader)))
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_train_loader_is_deterministic_given_the_seed(tmp_path, workers):
    data = fake_dataset(tmp_path)
    config = cfg(workers=workers)
    a, b = _epoch_batches(data, config, 3, (0, 1)), _epoch_batches(data, config, 3, (0, 1))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["image"], y["image"])
    assert not torch.equal(a[0]["index"], a[1]["index"]) or not torch.equal(a[0]["image"], a[1]["image"])


@pytest.mark.parametrize("workers", [0, 1])
def test_preloaded_images_give_the_same_batches_as_reading_each_time(tmp_path, workers):
    data = fake_dataset(tmp_path)
    config = cfg(masks="parsing", workers=workers)
    streamed, preloaded = (_epoch_batches(data, replace(config, preload=p), 3, (0, 1)) for p in (False, True))
    for x, y in zip(streamed, preloaded, strict=True):
        for key in ("index", "image", "mask"):
            assert torch.equal(x[key], y[key])


def test_decoded_images_are_kept_until_the_file_changes(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(path)
    first = L.decode_image(path)
    assert L.decode_image(path) is first                       # the same file: not decoded again
    Image.fromarray(np.full((8, 4, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))                                  # a new version, even within one mtime tick
    again = L.decode_image(path)
    assert again is not first and int(again.max()) == 200


def test_resumed_epoch_matches_the_uninterrupted_one(tmp_path):
    # in worker processes augmentation depends on (seed, rank, epoch) only, not on earlier epochs
    data = fake_dataset(tmp_path)
    config = cfg(workers=1, color_jitter=0.3)
    (_, straight), (resumed,) = _epoch_batches(data, config, 5, (0, 1)), _epoch_batches(data, config, 5, (1,))
    assert torch.equal(straight["index"], resumed["index"])
    assert torch.equal(straight["image"], resumed["image"])


def test_ranks_share_out_identities(tmp_path):
    data = fake_dataset(tmp_path, train_pids=(0, 1, 2, 3, 4, 5))
    loaders = [L.build_train_loader(data, cfg(), seed=0, rank=r, world_size=2) for r in (0, 1)]
    assert len(loaders[0]) == len(loaders[1])
    for b0, b1 in zip(*loaders, strict=True):
        assert not set(b0["pid"].tolist()) & set(b1["pid"].tolist())


def test_test_loader_keeps_order_and_does_not_augment(tmp_path):
    data = fake_dataset(tmp_path)
    loader = L.build_test_loader(data.gallery, cfg(flip_p=1.0, erasing_p=1.0))
    first = [b["image"] for b in loader]
    second = [b["image"] for b in loader]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert torch.cat([b["index"] for b in loader]).tolist() == list(range(len(data.gallery)))
    with_masks = L.build_test_loader(data.query, cfg(masks="parsing"), root=data.root, with_masks=True)
    assert next(iter(with_masks))["mask"].shape == (3, 6, H, W)


def test_missing_mask_inside_a_worker_stays_a_missing_masks_error(tmp_path):
    # what a DataLoader worker does with an exception: wrap it, re-raise it in the main process as
    # type(exc)(message) (a real worker would cost seconds of shutdown time after the error)
    from torch._utils import ExceptionWrapper

    data = fake_dataset(tmp_path, masks=False)
    images = L.ReidImageDataset(data.query, build_transforms(cfg(), train=False), "parsing", root=data.root)
    expected = tmp_path / "masks" / "parsing" / "query" / "0010_c1s1_000000.png"
    try:
        images[0]
    except MissingMasksError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(MissingMasksError, match=str(expected)):
        wrapped.reraise()


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """Stand-ins for load_dataset and synthocc.ensure that record how they were called."""
    calls = {}
    data = fake_dataset(tmp_path / "synth")

    def load_dataset(name, root, **options):
        calls["load"] = (name, str(root), options)
        return data

    def ensure(size, seed):
        calls["ensure"] = (size, seed)
        return tmp_path / "synth"

    monkeypatch.setattr(reidlib.data, "load_dataset", load_dataset, raising=False)
    fake_synth = types.ModuleType("reidlib.data.synthocc")
    fake_synth.ensure = ensure
    monkeypatch.setitem(sys.modules, "reidlib.data.synthocc", fake_synth)
    monkeypatch.setattr(reidlib.data, "synthocc", fake_synth, raising=False)
    return calls, data


def test_load_from_config_generates_synthocc_when_root_is_null(fake_registry):
    calls, data = fake_registry
    out = L.load_from_config(cfg(synth_size="ci", protocol="holistic", masks="parsing"))
    assert out is data
    assert calls["ensure"] == ("ci", 0)
    assert calls["load"] == ("synthocc", data.root, {"on_corrupt": "error", "protocol": "holistic"})


def test_load_from_config_reads_real_data_with_the_corrupt_policy(fake_registry, tmp_path):
    calls, _ = fake_registry
    L.load_from_config(cfg(dataset="market1501", root=str(tmp_path), on_corrupt="skip"))
    assert calls["load"] == ("market1501", str(tmp_path), {"on_corrupt": "skip"})
    with pytest.raises(ConfigError, match="data.root is not set.*market1501"):
        L.load_from_config(cfg(dataset="market1501"))


def test_load_from_config_checks_masks_up_front(fake_registry, tmp_path):
    _, data = fake_registry
    missing = data.train[2].path.replace("bounding_box_train", "masks/parsing/bounding_box_train")
    missing = missing[:-len(".jpg")] + ".png"
    (tmp_path / missing).unlink()
    with pytest.raises(MissingMasksError, match=rf"1 of 12 images.*{missing}"):
        L.load_from_config(cfg(masks="parsing"))
    L.load_from_config(cfg())  # no masks requested: no check
