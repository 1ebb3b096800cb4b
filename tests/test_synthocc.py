"""SynthOcc generator: layout, ground truth, determinism, caching, atomic writes, options (ci preset)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidlib.config import ConfigError
from reidlib.data import synthocc
from reidlib.data.synth.protocols import SPLIT_DIRS, duke_stream
from reidlib.data.synth.render import World, render

SMALL = {"num_train_ids": 3, "num_test_ids": 2}  # for tests that generate several sets
NAME = re.compile(r"^(\d{4})_c(\d+)_f(\d{7})\.jpg$")
PARTS = synthocc.PART_NAMES


@pytest.fixture(scope="module")
def ci_set(tmp_path_factory) -> Path:
    return synthocc.generate(tmp_path_factory.mktemp("synth") / "set", seed=0, size="ci", progress=False)


def rows_of(root: Path, protocol: str) -> list[dict]:
    with open(root / protocol / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def label_of(root: Path, protocol: str, row: dict) -> np.ndarray:
    stem = Path(row["filename"]).stem
    return np.asarray(
        Image.open(root / protocol / "masks" / "parsing" / SPLIT_DIRS[row["split"]] / f"{stem}.png")
    )


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- layout ---------------------------------------------------------------------------------------------
def test_parsing_labels_are_the_documented_granularity():
    assert synthocc.PARSING_LABELS == (
        "background",
        "head",
        "torso",
        "left_arm",
        "right_arm",
        "left_leg",
        "right_leg",
        "left_foot",
        "right_foot",
    )


@pytest.mark.parametrize("protocol", synthocc.PROTOCOLS)
def test_layout_names_and_masks(ci_set, protocol):
    root = ci_set / protocol
    rows = rows_of(ci_set, protocol)
    listed = {(r["split"], r["filename"]) for r in rows}
    on_disk = {(split, p.name) for split, d in SPLIT_DIRS.items() for p in (root / d).iterdir()}
    assert listed == on_disk and len(listed) == len(rows)
    for r in rows:
        m = NAME.match(r["filename"])
        assert m, r["filename"]
        assert int(m[1]) == int(r["pid"]) and int(m[2]) == int(r["camid"]) >= 1
        label = label_of(ci_set, protocol, r)
        assert label.dtype == np.uint8 and label.shape == (64, 32)
        assert label.max() < len(synthocc.PARSING_LABELS)
    query = next(r for r in rows if r["split"] == "query")
    with Image.open(root / SPLIT_DIRS["query"] / query["filename"]) as img:
        assert img.size == (32, 64) and img.mode == "RGB"
    manifest = json.loads((root / "synthocc.json").read_text())
    assert manifest["version"] == synthocc.VERSION and manifest["protocol"] == protocol
    assert manifest["counts"][protocol] == {s: sum(r["split"] == s for r in rows) for s in SPLIT_DIRS}


@pytest.mark.parametrize("protocol", synthocc.PROTOCOLS)
def test_train_and_test_identities_are_disjoint(ci_set, protocol):
    rows = rows_of(ci_set, protocol)
    train = {r["pid"] for r in rows if r["split"] == "train"}
    test = {r["pid"] for r in rows if r["split"] != "train"}
    assert train and test and not train & test
    assert {r["pid"] for r in rows if r["split"] == "query"} <= {
        r["pid"] for r in rows if r["split"] == "gallery"
    }


@pytest.mark.parametrize("protocol", ["occluded_reid", "partial_reid"])
def test_reid_protocols_put_query_and_gallery_in_different_cameras(ci_set, protocol):
    rows = rows_of(ci_set, protocol)
    assert {r["camid"] for r in rows if r["split"] == "query"} == {"1"}
    assert {r["camid"] for r in rows if r["split"] == "gallery"} == {"2"}


def test_every_duke_query_has_a_gallery_match_in_another_camera(ci_set):
    rows = rows_of(ci_set, "occluded_duke")
    gallery = {(r["pid"], r["camid"]) for r in rows if r["split"] == "gallery"}
    for q in (r for r in rows if r["split"] == "query"):
        assert any(pid == q["pid"] and cam != q["camid"] for pid, cam in gallery)


def test_protocol_occlusion_shares(ci_set):
    share = {
        p: {
            s: np.mean([r["occluder"] != "none" for r in rows_of(ci_set, p) if r["split"] == s])
            for s in SPLIT_DIRS
        }
        for p in synthocc.PROTOCOLS
    }
    assert share["occluded_duke"]["query"] == 1.0
    assert 0.2 < share["occluded_duke"]["train"] < 0.8
    assert share["occluded_duke"]["gallery"] < 0.5
    assert all(v == 0.0 for v in share["holistic"].values())
    assert share["occluded_reid"]["query"] == 1.0 and share["occluded_reid"]["gallery"] == 0.0
    assert {r["occluder"] for r in rows_of(ci_set, "partial_reid") if r["split"] == "query"} == {"crop"}
    # transfer setting: both test-only protocols ship the holistic training split
    assert [r["filename"] for r in rows_of(ci_set, "occluded_reid") if r["split"] == "train"] == [
        r["filename"] for r in rows_of(ci_set, "holistic") if r["split"] == "train"
    ]


def test_set_loads_through_the_duke_layout_adapter(ci_set):
    from reidlib.data import load_dataset

    ds = load_dataset("synthocc", ci_set, protocol="occluded_reid")
    assert len(ds.query) == sum(r["split"] == "query" for r in rows_of(ci_set, "occluded_reid"))
    assert all(r.mask_path is not None for r in ds.query)


# ---- ground truth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["occluded_duke", "holistic", "occluded_reid"])
def test_label_maps_agree_with_metadata_visibility(ci_set, protocol):
    for r in rows_of(ci_set, protocol):
        counts = np.bincount(label_of(ci_set, protocol, r).ravel(), minlength=9)
        person = 0
        for k, part in enumerate(PARTS, start=1):
            area = int(r[f"area_{part}"])
            person += area
            if area == 0:
                assert r[f"vis_{part}"] == "" and counts[k] == 0
            else:
                assert counts[k] == round(float(r[f"vis_{part}"]) * area)
        assert float(r["occluded_fraction"]) == pytest.approx(1 - counts[1:].sum() / person, abs=1e-4)


def test_holistic_images_show_every_part_the_viewpoint_shows(ci_set):
    for r in rows_of(ci_set, "holistic"):
        vis = [r[f"vis_{p}"] for p in PARTS]
        assert all(v in ("1.0", "") for v in vis)
        present = {p for p in PARTS if int(r[f"area_{p}"]) > 0}
        must = set(PARTS) if r["viewpoint"] in ("front", "back") else {"head", "torso"}
        assert must <= present, (r["filename"], r["viewpoint"], present)
        assert {"left_leg", "right_leg"} & present and {"left_foot", "right_foot"} & present


def test_occluders_only_remove_labels_of_the_same_photograph(ci_set):
    """occluded_duke and holistic are one photograph with and without the occluder: wherever the occluded
    map shows a part, the holistic map shows the same part, and occluded images lose part of the body."""
    clean = {r["filename"]: r for r in rows_of(ci_set, "holistic")}
    occluded = [r for r in rows_of(ci_set, "occluded_duke") if r["occluder"] != "none"]
    assert occluded
    for r in occluded:
        occ, hol = label_of(ci_set, "occluded_duke", r), label_of(ci_set, "holistic", clean[r["filename"]])
        shown = occ > 0
        assert np.array_equal(occ[shown], hol[shown])
        assert (hol > 0).sum() > shown.sum()
        assert float(r["occluded_fraction"]) > 0
        vis = [float(r[f"vis_{p}"]) for p in PARTS if r[f"vis_{p}"]]
        assert min(vis) < 1.0 and max(vis) <= 1.0


def test_occluded_parts_depend_on_the_occluder_position():
    opts = synthocc.resolve_options("ci", query_occluded=1.0, train_occluded=1.0, gallery_occluded=1.0)
    world = World.build(0, opts)
    shots = duke_stream(0, opts)[:24]

    def mean_vis(position: str) -> dict[str, float]:
        world.opts = {**opts, "occlusion_positions": (position,)}
        rows = [render(s, world, {"occluded"})["occluded"][2] for s in shots]
        assert {r["position"] for r in rows} == {position}
        return {p: np.nanmean([r[f"vis_{p}"] for r in rows]) for p in PARTS}

    bottom, top = mean_vis("bottom"), mean_vis("top")
    assert bottom["left_foot"] < 0.5 < bottom["head"]
    assert top["head"] < 0.5 < top["left_foot"]


def test_occlusion_ratio_controls_the_hidden_fraction():
    def mean_hidden(ratio: float) -> float:
        opts = synthocc.resolve_options("ci", occlusion_ratio=ratio, train_occluded=1.0)
        world = World.build(0, opts)
        rows = [render(s, world, {"occluded"})["occluded"][2] for s in duke_stream(0, opts)[:20]]
        return float(np.mean([r["occluded_fraction"] for r in rows]))

    low, high = mean_hidden(0.2), mean_hidden(0.6)
    assert low == pytest.approx(0.2, abs=0.08) and high == pytest.approx(0.6, abs=0.1)


def test_partial_queries_are_full_size_crops_of_part_of_the_body(ci_set):
    rows = [r for r in rows_of(ci_set, "partial_reid") if r["split"] == "query"]
    for r in rows:
        assert r["position"] in ("bottom", "left", "right")
        assert 0 < float(r["occluded_fraction"]) < 1
        assert label_of(ci_set, "partial_reid", r).shape == (64, 32)
    bottom = [r for r in rows if r["position"] == "bottom"]
    assert all(float(r["vis_head"]) == 1.0 for r in bottom)


def test_families_are_look_alikes(ci_set):
    with open(ci_set / "identities.csv", newline="") as fh:
        idents = list(csv.DictReader(fh))
    assert len(idents) == 16 + 8
    looks = [
        k
        for k in idents[0]
        if k not in ("pid", "family", "height", "build", "leg_ratio", "head_size", "tint")
    ]
    by_family: dict[str, list[dict]] = {}
    for i in idents:
        by_family.setdefault(i["family"], []).append(i)
    families = [f for f in by_family.values() if len(f) > 1]
    assert families
    for members in families:
        for a in members[1:]:
            same = sum(a[k] == members[0][k] for k in looks)
            assert len(looks) - 4 <= same < len(looks)  # one body region differs
    keys = {tuple(i[k] for k in looks) for i in idents}
    assert len(keys) == len(idents)


# ---- determinism, cache, atomicity ----------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    reference = tree_digest(synthocc.generate(tmp_path / "a", seed=0, size="ci", **SMALL))
    assert tree_digest(synthocc.generate(tmp_path / "b", seed=0, size="ci", **SMALL)) == reference
    # a protocol does not depend on which other protocols are generated with it
    alone = tree_digest(
        synthocc.generate(tmp_path / "c", seed=0, size="ci", protocols=["partial_reid"], **SMALL)
    )
    assert all(alone[k] == reference[k] for k in alone if k.startswith("partial_reid/") and "json" not in k)
    other = tree_digest(
        synthocc.generate(tmp_path / "d", seed=1, size="ci", protocols=["occluded_duke"], **SMALL)
    )
    images = [k for k in other if k.endswith(".jpg")]
    assert other["occluded_duke/metadata.csv"] != reference["occluded_duke/metadata.csv"]
    assert sum(other[k] != reference.get(k) for k in images) > 0.9 * len(images)


def test_ensure_caches_by_parameters(tmp_path, monkeypatch):
    calls = []
    real = synthocc.generate

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthocc, "generate", counting)
    a = synthocc.ensure("ci", seed=0, cache_dir=tmp_path, protocols=["holistic"], **SMALL)
    b = synthocc.ensure("ci", seed=0, cache_dir=tmp_path, protocols=["holistic"], **SMALL)
    assert a == b and len(calls) == 1 and synthocc.is_complete(a)
    c = synthocc.ensure(
        "ci", seed=0, cache_dir=tmp_path, protocols=["holistic"], occlusion_ratio=0.3, **SMALL
    )
    assert c != a and len(calls) == 2
    (a / "synthocc.json").unlink()  # a damaged set is regenerated in place
    assert synthocc.ensure("ci", seed=0, cache_dir=tmp_path, protocols=["holistic"], **SMALL) == a
    assert len(calls) == 3
    monkeypatch.setenv("REIDLIB_CACHE", str(tmp_path / "env"))
    assert synthocc.default_cache_dir() == tmp_path / "env" / "synthocc"


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    saved = []
    real = synthocc._save

    def failing(*args, **kwargs):
        if len(saved) == 12:
            raise RuntimeError("disk full")
        saved.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthocc, "_save", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synthocc.generate(tmp_path / "set", size="ci", protocols=["holistic"], **SMALL)
    assert list(tmp_path.iterdir()) == []
    # a finished set survives a failed regeneration untouched
    monkeypatch.setattr(synthocc, "_save", real)
    done = synthocc.generate(tmp_path / "set", size="ci", protocols=["holistic"], **SMALL)
    before = tree_digest(done)
    saved.clear()
    monkeypatch.setattr(synthocc, "_save", failing)
    with pytest.raises(RuntimeError):
        synthocc.generate(done, size="ci", seed=3, protocols=["holistic"], **SMALL)
    assert tree_digest(done) == before and [p.name for p in tmp_path.iterdir()] == ["set"]


def test_overwrite_false_keeps_an_existing_set(tmp_path):
    first = synthocc.generate(tmp_path / "set", seed=0, size="ci", protocols=["holistic"], **SMALL)
    before = tree_digest(first)
    synthocc.generate(first, seed=5, size="ci", protocols=["holistic"], overwrite=False, **SMALL)
    assert tree_digest(first) == before and [p.name for p in tmp_path.iterdir()] == ["set"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_synthocc_set(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a SynthOcc set"):
        synthocc.generate(tmp_path / "mine", size="ci")


# ---- options --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": "huge"}, "unknown SynthOcc size 'huge'; choose one of ci, demo, paper"),
        ({"occlusion_rate": 0.3}, "unknown SynthOcc option(s) occlusion_rate"),
        ({"occlusion_ratio": 1.5}, "occlusion_ratio=(1.5, 1.5) is out of range"),
        ({"occlusion_ratio": (0.6, 0.2)}, "need 0 <= low <= high <= 1"),
        ({"train_occluded": -0.1}, "train_occluded=-0.1 is out of [0, 1]"),
        ({"occlusion_positions": ("under",)}, "choose from bottom, left, right, top or 'side'"),
        ({"occluder_kinds": ("car",), "occlusion_positions": ("top",)}, "no occluder kind fits positions"),
        ({"num_train_ids": 1}, "use at least 2"),
        ({"height": 64.5}, "expected an integer"),
        ({"train_per_id": (3, 2)}, "need 1 <= low <= high"),
    ],
)
def test_option_errors_name_the_problem(kwargs, message):
    with pytest.raises(ConfigError) as err:
        synthocc.resolve_options(**kwargs)
    assert message in str(err.value)


def test_option_shorthands():
    opts = synthocc.resolve_options("ci", occlusion_ratio=0.4, occlusion_positions="side", query_per_id=2)
    assert opts["occlusion_ratio"] == (0.4, 0.4) and opts["occlusion_positions"] == ("left", "right")
    assert opts["query_per_id"] == (2, 2)
    with pytest.raises(ConfigError, match="unknown SynthOcc protocol"):
        synthocc.resolve_protocols(["occluded_market"])


# ---- looking at it, and the command ---------------------------------------------------------------------
def test_contact_sheet_and_describe(ci_set):
    sheet = synthocc.contact_sheet(ci_set, n=6, columns=3, zoom=1)
    assert sheet.size == (3 * (64 + 4), 2 * (64 + 24 + 4))
    text = synthocc.describe(ci_set)
    assert "occluded_duke" in text and "partial_reid" in text and "100%" in text


def test_cli_synth_prints_what_it_wrote(tmp_path, capsys):
    from reidlib.cli import main

    sheet = tmp_path / "sheet.png"
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--size",
            "ci",
            "--protocols",
            "occluded_reid",
            "--occlusion-ratio",
            "0.3",
            "0.5",
            "--positions",
            "side",
            "--set",
            "num_test_ids=4",
            "--set",
            "num_train_ids=2",
            "--contact-sheet",
            str(sheet),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "occluded_reid" in out and "written to" in out and sheet.is_file()
    rows = rows_of(tmp_path / "s", "occluded_reid")
    assert {r["position"] for r in rows if r["split"] == "query"} <= {"left", "right"}
    assert len({r["pid"] for r in rows if r["split"] == "query"}) == 4
    assert main(["synth", "--out", str(tmp_path / "t"), "--size", "ci", "--set", "bogus=1"]) == 2
    assert "unknown SynthOcc option" in capsys.readouterr().err


def test_some_attributes_show_only_from_some_sides():
    """A logo is printed on the front only; a backpack covers the back and shows as straps from the front."""
    from dataclasses import replace

    from reidlib.data.synth.canvas import Canvas
    from reidlib.data.synth.identity import BAG_COLOURS, UPPER_COLOURS, colour, sample_identity
    from reidlib.data.synth.person import TORSO, Pose, draw_person

    ident = replace(sample_identity(np.random.default_rng(0)), upper_colour="white", upper_second="red",
                    upper_pattern="logo", logo_shape="square", bag="backpack", bag_colour="green",
                    hair_style="short", tint=(1.0, 1.0, 1.0))

    def torso_share(view: str, rgb) -> float:
        canvas = Canvas(128, 64, np.zeros((128, 64, 3), np.float32))
        draw_person(canvas, ident, Pose(view, 1, 0.0, 110.0, 32.0, 125.0, light=1.0))
        torso = canvas.label == TORSO
        close = np.abs(canvas.rgb - rgb).max(axis=2) < 0.12
        return float((close & torso).sum() / torso.sum())

    logo, pack = colour(UPPER_COLOURS, "red"), colour(BAG_COLOURS, "green")
    assert torso_share("front", logo) > 0.05 and torso_share("back", logo) == 0.0
    assert torso_share("back", pack) > 3 * torso_share("front", pack) > 0
