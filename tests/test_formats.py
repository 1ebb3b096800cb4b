"""Real data set adapters on tiny fake trees in each community layout (reidlib.data.formats, images)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
from PIL import Image

from reidlib.cli import main
from reidlib.data import DATASETS, load_dataset
from reidlib.data.formats import (
    CorruptImageError,
    DatasetLayoutError,
    describe_datasets,
    guess_dataset,
    parsing_mask_path,
)
from reidlib.data.images import find_corrupt, read_image


def _encode(fmt: str, size=(4, 8)) -> bytes:  # PIL size is (W, H): 8x4 pixels (H x W)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, fmt)
    return buf.getvalue()


JPEG, TIFF, PNG = _encode("JPEG"), _encode("TIFF"), _encode("PNG")


def _write(root: Path, files: dict[str, list[str]], data: bytes = JPEG) -> Path:
    for folder, names in files.items():
        for name in names:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def _pids(records):
    return sorted(r.pid for r in records)


def _cams(records):
    return sorted({r.camid for r in records})


# Market-1501: 3 training ids (raw 2, 7, 10); gallery holds a distractor (0) and a junk image (-1).
MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c1s1_001051_01.jpg",
                           "0010_c3s1_001051_01.jpg"],
    "query": ["0002_c1s1_001451_00.jpg", "0007_c2s1_001051_00.jpg"],
    "bounding_box_test": ["0002_c3s1_000451_01.jpg", "0007_c6s1_000451_01.jpg", "0000_c1s1_000001_01.jpg",
                          "-1_c1s1_000002_01.jpg"],
}
DUKE = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051781.jpg", "0001_c1_f0046000.jpg"],
    "query": ["0005_c2_f0046999.jpg"],
    "bounding_box_test": ["0005_c8_f0046111.jpg", "0009_c3_f0046222.jpg"],
}


def market_tree(root: Path, where: str = "Market-1501-v15.09.15") -> Path:
    _write(root / where, MARKET)
    (root / where / "bounding_box_train" / "Thumbs.db").write_bytes(b"junk")  # not an image: ignored
    (root / where / "query" / "._0002_c1s1_001451_00.jpg").write_bytes(b"")  # macOS metadata: ignored
    return root


@pytest.mark.parametrize("where", ["Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501",
                                   "MARKET1501", ""])
def test_market_layouts_counts_relabel_junk_distractors(tmp_path, where):
    ds = load_dataset("market1501", market_tree(tmp_path, where))
    assert Path(ds.root) == (tmp_path / where).absolute() if where else tmp_path
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [4, 2, 3]
    assert _pids(ds.train) == [0, 0, 1, 2]  # sorted raw 2, 7, 10 -> 0, 1, 2
    assert _cams(ds.train) == [0, 1, 2]
    assert _pids(ds.gallery) == [0, 2, 7]  # distractor kept, junk dropped, raw ids
    assert _cams(ds.gallery) == [0, 2, 5]
    assert all(r.mask_path is None for r in ds.train + ds.query + ds.gallery)
    assert "distractors" in ds.camera_note and ds.skipped == {}


@pytest.mark.parametrize(("name", "where"), [("dukemtmc", "DukeMTMC-reID"),
                                             ("dukemtmc", "dukemtmc-reid/DukeMTMC-reID"),
                                             ("occluded_duke", "Occluded_Duke")])
def test_duke_layouts(tmp_path, name, where):
    _write(tmp_path / where, DUKE)
    ds = load_dataset(name, tmp_path)
    assert ds.name == name
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [3, 1, 2]
    assert _pids(ds.train) == [0, 1, 1] and _cams(ds.train) == [0, 1, 4]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(5, 7), (9, 2)]


def test_occluded_reid_tif_per_id_folders_and_cameras(tmp_path):
    files = {"Occluded_REID/occluded_body_images/001": ["001_01.tif", "001_02.tif"],
             "Occluded_REID/occluded_body_images/002": ["002_01.tif"],
             "Occluded_REID/whole_body_images/001": ["001_01.tif"],
             "Occluded_REID/whole_body_images/002": ["002_01.tif", "002_02.tif"]}
    ds = load_dataset("occluded_reid", _write(tmp_path, files, TIFF), verify_images=True)
    assert ds.train == [] and _pids(ds.query) == [1, 1, 2] and _pids(ds.gallery) == [1, 2, 2]
    assert _cams(ds.query) == [0] and _cams(ds.gallery) == [1]  # different cameras: true matches survive
    assert "camid 0" in ds.camera_note and ds.skipped == {"train": 0, "query": 0, "gallery": 0}


@pytest.mark.parametrize("where", ["Partial_REID", "Partial-REID_Dataset"])
def test_partial_reid(tmp_path, where):
    files = {f"{where}/partial_body_images": ["001_01.jpg", "002_01.jpg", "002_02.jpg"],
             f"{where}/whole_body_images": ["001_01.jpg", "002_01.jpg"],
             f"{where}/occluded_body_images": ["001_01.jpg"]}  # not part of the protocol
    ds = load_dataset("partial_reid", _write(tmp_path, files))
    assert (_pids(ds.query), _pids(ds.gallery)) == ([1, 2, 2], [1, 2])
    assert (_cams(ds.query), _cams(ds.gallery)) == ([0], [1])


@pytest.mark.parametrize(("query", "gallery"), [("Probe", "Gallery"),
                                                ("partial_body_images", "whole_body_images")])
def test_partial_ilids_both_layouts(tmp_path, query, gallery):
    files = {f"Partial_iLIDS/{query}": ["001.jpg", "002.jpg"],
             f"Partial_iLIDS/{gallery}": ["001.jpg", "002.jpg"]}
    ds = load_dataset("partial_ilids", _write(tmp_path, files))
    assert [(r.pid, r.camid) for r in ds.query + ds.gallery] == [(1, 0), (2, 0), (1, 1), (2, 1)]


def test_p_dukemtmc(tmp_path):
    base = "P-DukeMTMC-reID"
    files = {f"{base}/train/occluded_body_images/0005": ["0005_c2_f0046985.jpg"],
             f"{base}/train/whole_body_images/0005": ["0005_c5_f0051781.jpg"],
             f"{base}/train/whole_body_images/0011": ["0011_c1_f0000001.jpg"],
             f"{base}/test/occluded_body_images/0020": ["0020_c1_f0000002.jpg"],
             f"{base}/test/whole_body_images/0020": ["0020_c3_f0000003.jpg", "0020_c4_f0000004.jpg"]}
    ds = load_dataset("p_dukemtmc", _write(tmp_path, files))
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 1), (1, 1)]
    assert [(r.pid, r.camid) for r in ds.query] == [(20, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(20, 1), (20, 1)]


def msmt_tree(root: Path, folder: str, train: str, test: str) -> Path:
    data = root / folder
    lists = {"train": (train, ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                               "0001/0001_001_15_0303noon_0001_1.jpg 1"]),
             "val": (train, ["0000/0000_002_03_0303morning_0020_0.jpg 0"]),
             "query": (test, ["0000/0000_000_02_0303morning_0001_0.jpg 0"]),
             "gallery": (test, ["0000/0000_001_04_0303morning_0002_0.jpg 0",
                                "0003/0003_000_05_0303morning_0003_0.jpg 3"])}
    for split, (image_dir, lines) in lists.items():
        _write(data / image_dir, {"": [line.split()[0] for line in lines]})
        (data / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(("folder", "train", "test", "version"), [
    ("msmt17/MSMT17_V1", "train", "test", 1),   # torchreid / BPBreID
    ("MSMT17", "train", "test", 1),             # TransReID
    ("msmt17/MSMT17_V2", "mask_train_v2", "mask_test_v2", 2),
])
def test_msmt17_versions(tmp_path, folder, train, test, version):
    msmt_tree(tmp_path, folder, train, test)
    root = tmp_path / folder.split("/")[0]
    for options in ({}, {"version": version}):
        ds = load_dataset("msmt17", root, **options)
        assert [len(ds.train), len(ds.query), len(ds.gallery)] == [3, 1, 2]  # train = list_train + list_val
        assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 2), (1, 14)]
        assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 3), (3, 4)]
        assert Path(ds.train[0].path).parent.parent.name == train
    assert len(load_dataset("msmt17", root, include_val=False).train) == 2  # torchreid's protocol


def test_msmt17_both_versions_need_a_choice(tmp_path):
    msmt_tree(tmp_path, "msmt17/MSMT17_V1", "train", "test")
    msmt_tree(tmp_path, "msmt17/MSMT17_V2", "mask_train_v2", "mask_test_v2")
    with pytest.raises(DatasetLayoutError, match="version=1 or version=2"):
        load_dataset("msmt17", tmp_path / "msmt17")
    ds = load_dataset("msmt17", tmp_path / "msmt17", version="V2")
    assert ds.root.endswith("MSMT17_V2")
    with pytest.raises(ValueError, match="version must be 1, 2"):
        load_dataset("msmt17", tmp_path, version=3)


def test_msmt17_bad_list_line(tmp_path):
    msmt_tree(tmp_path, "MSMT17_V1", "train", "test")
    (tmp_path / "MSMT17_V1" / "list_query.txt").write_text("0000/0000_000_02_x.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"list_query.txt, line 1: expected"):
        load_dataset("msmt17", tmp_path)


def synthocc_tree(root: Path) -> Path:
    proto = root / "occluded_duke"
    _write(proto, DUKE)
    (proto / "metadata.csv").write_text("path,pid,camid\n")
    _write(proto / "masks" / "parsing", {"query": ["0005_c2_f0046999.png"],
                                         "bounding_box_train": ["0001_c1_f0046000.png"]}, PNG)
    _write(root / "holistic", DUKE)
    return root


def test_synthocc_protocols_and_masks(tmp_path):
    synthocc_tree(tmp_path)
    proto = tmp_path / "occluded_duke"
    for root, options in ((tmp_path, {}), (tmp_path, {"protocol": "occluded_duke"}),
                          (proto, {}), (proto, {"protocol": "occluded_duke"})):
        ds = load_dataset("synthocc", root, **options)
        assert ds.root == str(tmp_path / "occluded_duke") and [len(ds.query), len(ds.gallery)] == [1, 2]
        assert ds.query[0].mask_path == str(proto / "masks/parsing/query/0005_c2_f0046999.png")
        assert [r.mask_path is not None for r in ds.train] == [True, False, False]  # 0001 first after sorting
    holistic = load_dataset("synthocc", tmp_path, protocol="holistic")
    assert holistic.root == str(tmp_path / "holistic") and all(r.mask_path is None for r in holistic.query)
    with pytest.raises(DatasetLayoutError) as err:
        load_dataset("synthocc", tmp_path, protocol="partial_reid")
    assert "holistic/, occluded_duke/" in str(err.value) and "protocol=" in str(err.value)
    with pytest.raises(DatasetLayoutError):  # a protocol folder is not silently read as another protocol
        load_dataset("synthocc", tmp_path / "holistic", protocol="occluded_duke")


def test_generic_parsing_masks_and_their_path_rule(tmp_path):
    market_tree(tmp_path)
    data = tmp_path / "Market-1501-v15.09.15"
    image = data / "bounding_box_test" / "0002_c3s1_000451_01.jpg"
    assert parsing_mask_path(image, data) == data / "masks/parsing/bounding_box_test/0002_c3s1_000451_01.png"
    assert parsing_mask_path("/elsewhere/x.jpg", data) is None
    _write(data / "masks/parsing", {"bounding_box_test": ["0002_c3s1_000451_01.png"]}, PNG)
    ds = load_dataset("market1501", tmp_path)
    assert [r.mask_path for r in ds.gallery if r.mask_path] == [str(parsing_mask_path(image, data))]
    assert sum(r.mask_path is not None for r in ds.train + ds.query) == 0


def test_layout_errors_say_what_where_and_how_to_fix(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        load_dataset("market1501", tmp_path / "missing")
    assert "Market-1501-v15.09.15/" in str(err.value)

    _write(tmp_path / "Market-1501-v15.09.15", {k: v for k, v in MARKET.items() if k != "query"})
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetLayoutError) as err:
        load_dataset("market1501", tmp_path)
    message = str(err.value)
    assert "Market-1501 (market1501) not found under" in message
    assert "Found in" in message and "Market-1501-v15.09.15/, notes.txt" in message
    assert "lacks query/" in message and "bounding_box_test/, bounding_box_train/" in message
    assert "Fix: put Market-1501-v15.09.15/" in message

    with pytest.raises(DatasetLayoutError, match="occluded_body_images/, whole_body_images/"):
        load_dataset("occluded_reid", tmp_path)  # wrong data set for this folder


def test_empty_split_and_bad_file_names(tmp_path):
    _write(tmp_path, {k: v for k, v in DUKE.items() if k != "query"})
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "readme.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match=r"(?s)hold\(s\) no images.*readme.txt"):
        load_dataset("dukemtmc", tmp_path)
    _write(tmp_path, {"query": ["person5.jpg"]})
    with pytest.raises(DatasetLayoutError, match="person5.jpg: the file name does not start with PID_cCAM"):
        load_dataset("dukemtmc", tmp_path)


def test_unknown_name_and_option(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'market'; known: dukemtmc, market1501"):
        load_dataset("market", tmp_path)
    with pytest.raises(ValueError, match="unknown option.*protocol.*accepted: none"):
        load_dataset("market1501", market_tree(tmp_path), protocol="x")
    with pytest.raises(ValueError, match="on_corrupt"):
        load_dataset("market1501", tmp_path, on_corrupt="ignore")
    assert set(DATASETS.names()) == {"market1501", "dukemtmc", "occluded_duke", "occluded_reid",
                                     "partial_reid", "partial_ilids", "p_dukemtmc", "msmt17", "synthocc"}


def _corrupt_market(root: Path) -> tuple[Path, Path]:
    data = market_tree(root) / "Market-1501-v15.09.15"
    garbage = data / "query" / "0010_c4s1_000001_00.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    truncated = data / "bounding_box_train" / "0011_c1s1_000001_01.jpg"  # the only image of id 11
    big = io.BytesIO()
    Image.effect_noise((64, 128), 60).convert("RGB").save(big, "JPEG")
    truncated.write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    return garbage, truncated


def test_corrupt_images_error_or_skip(tmp_path):
    garbage, truncated = _corrupt_market(tmp_path)
    assert len(load_dataset("market1501", tmp_path).query) == 3  # not decoded without verify_images
    with pytest.raises(CorruptImageError) as err:
        load_dataset("market1501", tmp_path, verify_images=True)
    assert set(err.value.paths) == {str(garbage), str(truncated)}
    assert str(garbage) in str(err.value) and "on_corrupt='skip'" in str(err.value)

    for verify in (True, False):  # skipping implies verifying (DataConfig.on_corrupt: skip)
        ds = load_dataset("market1501", tmp_path, verify_images=verify, on_corrupt="skip")
        assert ds.skipped == {"train": 1, "query": 1, "gallery": 0}
        assert [len(ds.train), len(ds.query)] == [4, 2]
        assert _pids(ds.train) == [0, 0, 1, 2]  # still 0..n-1 after dropping id 11's only image


def test_read_image_and_corrupt_error_survive_workers(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(JPEG)
    bad.write_bytes(b"\xff\xd8 broken")
    image = read_image(good)
    assert image.mode == "RGB" and image.size == (4, 8)
    with pytest.raises(CorruptImageError, match="cannot read image .*bad.jpg") as err:
        read_image(bad)
    assert err.value.paths == (str(bad),)
    missing = tmp_path / "missing.jpg"
    assert set(find_corrupt([good, bad, missing])) == {str(bad), str(missing)}
    copy = pickle.loads(pickle.dumps(err.value))  # DataLoader workers pickle exceptions
    assert copy.paths == err.value.paths and str(copy) == str(err.value)
    assert str(CorruptImageError("traceback text")) == "traceback text"  # torch re-raises type(exc)(msg)


def test_guess_dataset(tmp_path):
    assert guess_dataset(market_tree(tmp_path / "a"))[0] == "market1501"
    assert guess_dataset(_write(tmp_path / "b" / "data", DUKE))[0] == "dukemtmc"  # no name: Duke-style files
    assert guess_dataset(_write(tmp_path / "c" / "Occluded_Duke", DUKE))[0] == "occluded_duke"
    assert guess_dataset(synthocc_tree(tmp_path / "d"))[0] == "synthocc"  # metadata.csv beats the folder name
    flat = {"query": ["001.jpg"], "gallery": ["001.jpg"]}
    ilids = _write(tmp_path / "e", {f"x/{k}": v for k, v in {"partial_body_images": ["001.jpg"],
                                                             "whole_body_images": ["001.jpg"]}.items()})
    assert guess_dataset(ilids / "x")[0] == "partial_ilids"  # bare-number names
    reid = _write(tmp_path / "f", {"partial_body_images": ["001_01.jpg"],
                                   "whole_body_images": ["001_01.jpg"]})
    assert guess_dataset(reid)[0] == "partial_reid"
    _write(tmp_path / "a" / "Occluded_Duke", DUKE)
    with pytest.raises(DatasetLayoutError, match="several data sets: market1501 at .*occluded_duke at"):
        guess_dataset(tmp_path / "a")
    with pytest.raises(DatasetLayoutError, match="no known data-set layout"):
        guess_dataset(_write(tmp_path / "g", flat))
    _write(tmp_path / "h" / "Market-1501-v15.09.15", {"query": ["0002_c1s1_001451_00.jpg"]})
    with pytest.raises(DatasetLayoutError, match=r"market1501\? .*v15.09.15 lacks bounding_box_train/"):
        guess_dataset(tmp_path / "h")


def test_cli_check_and_list(tmp_path, capsys):
    market_tree(tmp_path)
    assert main(["datasets", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Guessed data set: market1501" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in
             (["train"], ["query"], ["gallery"])}
    # images, identities, cameras, masks
    assert lines == {"train": ["4", "3", "3", "0"], "query": ["2", "2", "2", "0"],
                     "gallery": ["3", "3", "3", "0"]}
    assert "cameras: camera ids from the file names" in out

    assert main(["datasets", "check", str(tmp_path), "market1501"]) == 0  # explicit NAME: no guess
    assert "Guessed" not in capsys.readouterr().out

    assert main(["datasets", "check", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["datasets", "check", str(tmp_path), "occluded_reid"]) == 2
    assert "Occluded-REID (occluded_reid) not found" in capsys.readouterr().err
    assert main(["datasets", "check", str(tmp_path), "nope"]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err

    assert main(["datasets", "check", str(tmp_path), "--verify"]) == 0
    assert "verified: all 9 images decode" in capsys.readouterr().out
    garbage, _ = _corrupt_market(tmp_path / "bad")
    assert main(["datasets", "check", str(tmp_path / "bad"), "market1501", "--verify"]) == 1
    assert str(garbage) in capsys.readouterr().out

    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing == describe_datasets() + "\n"
    for name in DATASETS.names():
        assert f"\n{name}: " in listing
    for layout in ("market1501/Market-1501-v15.09.15", "Partial-REID_Dataset", "Probe/", "mask_train_v2/",
                   "test/occluded_body_images/", "Occluded_Duke"):
        assert layout in listing
