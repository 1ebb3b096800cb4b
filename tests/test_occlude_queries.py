"""synthocc.occlude_queries: SynthOcc's occluders over a real data set's queries, with SynthOcc's metadata,
so that reidlib.robustness bins them. A hand-made "real" data set: noise photographs of a labelled body."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidlib.data import synthocc
from reidlib.data.records import Record, ReidDataset
from reidlib.data.synth.paste import occlude_photo
from reidlib.data.synth.render import PART_NAMES, passers_by
from reidlib.robustness import per_query_metrics, robustness_table

QUERIES = 8
H, W = 128, 64


def body_labels() -> np.ndarray:
    """[H, W] parsing labels of a standing figure, every part of PART_NAMES present."""
    lab = np.zeros((H, W), np.uint8)
    for label, (rows, cols) in enumerate([((6, 24), (24, 40)), ((24, 66), (16, 48)), ((26, 60), (10, 16)),
                                          ((26, 60), (48, 54)), ((66, 112), (18, 31)), ((66, 112), (33, 46)),
                                          ((112, 120), (16, 31)), ((112, 120), (33, 48))], start=1):
        lab[slice(*rows), slice(*cols)] = label
    return lab


def real_dataset(root: Path, masks: bool) -> ReidDataset:
    """Queries query/<pid>_c1.png (lossless, so pixel checks are exact), parsing maps where `masks`."""
    rng = np.random.default_rng(0)
    records = []
    for pid in range(QUERIES):
        path = root / "query" / f"{pid:04d}_c1.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
        if masks:
            mask = root / "masks" / "parsing" / "query" / path.name
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(body_labels()).save(mask)
        records.append(Record(str(path), pid, 0))
    return ReidDataset("toy", str(root), [], records, [Record(str(records[0].path), 0, 1)])


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture
def with_masks(tmp_path):
    data = real_dataset(tmp_path / "real", masks=True)
    return data, synthocc.occlude_queries(data, tmp_path / "occluded", seed=1), tmp_path / "occluded"


def test_occluded_fraction_and_part_visibility_are_the_pixels_covered(with_masks):
    data, occluded, out = with_masks
    meta = synthocc.read_metadata(out).set_index("filename")
    before = body_labels()
    for rec in occluded.query:
        after = read(rec.mask_path)
        row = meta.loc[Path(rec.path).name]
        covered = (before > 0) & (after == 0)
        assert row["occluded_fraction"] == pytest.approx(covered.sum() / (before > 0).sum(), abs=5e-5)
        for label, part in enumerate(PART_NAMES, start=1):
            assert row[f"area_{part}"] == (before == label).sum()
            assert row[f"vis_{part}"] == pytest.approx((after == label).sum() / (before == label).sum(),
                                                       abs=5e-5)
        # the occluder is drawn where it covers: nearly every covered pixel changed colour
        original = read(Path(data.root) / "query" / Path(rec.path).name)
        changed = (read(rec.path) != original).any(axis=-1)
        assert changed[covered].mean() > 0.95
        assert not changed[~covered & (before == 0)].all()  # and the rest of the photo is kept
    assert set(meta.occluder) - {"none"} and (meta.occluded_fraction > 0).all()


def test_returns_the_data_set_with_the_occluded_queries_and_writes_synthocc_metadata(with_masks):
    data, occluded, out = with_masks
    assert [Path(r.path).parent for r in occluded.query] == [out / "query"] * QUERIES
    assert [(r.pid, r.camid) for r in occluded.query] == [(r.pid, r.camid) for r in data.query]
    assert occluded.gallery == data.gallery
    meta = synthocc.read_metadata(out)
    assert list(meta.columns[:11]) == ["split", "filename", "pid", "camid", "scene", "viewpoint", "occluder",
                                       "position", "target_fraction", "occluded_fraction", "family"]
    assert [c for c in meta.columns if c.startswith(("vis_", "area_"))] == (
        [f"vis_{p}" for p in PART_NAMES] + [f"area_{p}" for p in PART_NAMES])
    assert (out / synthocc.OCCLUDED_QUERIES_META).is_file()


def test_without_parsing_masks_the_fraction_is_over_the_whole_crop_and_parts_are_empty(tmp_path):
    data = real_dataset(tmp_path / "real", masks=False)
    occluded = synthocc.occlude_queries(data, tmp_path / "occluded", seed=1)
    meta = synthocc.read_metadata(tmp_path / "occluded")
    assert meta.filter(like="vis_").isna().all(axis=None) and meta.filter(like="area_").isna().all(axis=None)
    assert not (tmp_path / "occluded" / "masks").exists() and occluded.query[0].mask_path is None
    # the same random stream redraws query 0: its written fraction is the share of the crop covered
    opts = synthocc.resolve_options("ci")
    image = read(data.query[0].path)
    _, after, fields, _ = occlude_photo(image, None, np.random.default_rng([1, synthocc.OCCLUDE_STREAM, 0]),
                                        opts, passers_by(1))
    assert meta.loc[0, "occluded_fraction"] == pytest.approx((after == 0).mean(), abs=5e-5)
    assert meta.loc[0, "occluder"] == fields["occluder"]


def test_deterministic_in_the_seed_and_restricted_to_the_kinds_asked_for(tmp_path):
    data = real_dataset(tmp_path / "real", masks=True)
    runs = {name: tmp_path / name for name in ("a", "b", "other seed")}
    for name, out in runs.items():
        synthocc.occlude_queries(data, out, seed=2 if name == "other seed" else 1)

    def files(out):
        return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    assert files(runs["a"]) == files(runs["b"])
    assert files(runs["a"]) != files(runs["other seed"])
    synthocc.occlude_queries(data, tmp_path / "walkers", seed=1, kinds=("pedestrian",), fraction_range=0.3)
    meta = synthocc.read_metadata(tmp_path / "walkers")
    assert set(meta.occluder) == {"pedestrian"} and set(meta.target_fraction) == {0.3}


def test_robustness_table_bins_the_occluded_real_queries(with_masks):
    _, occluded, out = with_masks
    meta = synthocc.read_metadata(out).set_index("filename")
    names = [Path(r.path).name for r in occluded.query]
    pids = [r.pid for r in occluded.query]  # a gallery of one match per query, in another camera
    per_query = per_query_metrics(np.zeros((QUERIES, QUERIES)), pids, pids, [0] * QUERIES, [1] * QUERIES,
                                  names=names)
    assert robustness_table(per_query, meta, "occluded fraction")["queries"].sum() == QUERIES
    assert robustness_table(per_query, meta, "occluder")["queries"].sum() == QUERIES
    assert robustness_table(per_query, meta, "hidden part")["queries"].sum() >= QUERIES


def test_refuses_to_write_over_the_original_queries(tmp_path):
    data = real_dataset(tmp_path / "real", masks=False)
    with pytest.raises(ValueError, match="holds the original queries"):
        synthocc.occlude_queries(data, tmp_path / "real")
