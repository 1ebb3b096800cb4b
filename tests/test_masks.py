from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from reidlib.data import masks as M
from reidlib.data.records import Record

# A 3 x 4 label map using every SynthOcc label (0 background, 1 head, 2 torso, 3/4 arms, 5/6 legs, 7/8 feet).
LABELS = np.array([[0, 1, 1, 0],
                   [3, 2, 2, 4],
                   [5, 6, 7, 8]], dtype=np.uint8)


def field(name: str) -> int:
    return M.PIFPAF_FIELDS.index(name)


def test_registry_names_and_part_counts():
    assert {"full", "one", "two_v", "three_v", "four", "four_v", "five", "five_v", "six", "eight"} <= set(
        M.grouping_names())
    assert [M.num_parts(g) for g in ("full", "four_v", "five", "six", "eight")] == [1, 4, 5, 6, 8]
    assert M.part_names("five") == ["head", "arms", "torso", "legs", "feet"]
    assert "five_v" in M.grouping_names("pifpaf") and "five_v" not in M.grouping_names("parsing")
    assert len(M.PIFPAF_FIELDS) == 36 and M.PIFPAF_FIELDS[17] == "left_ankle_to_left_knee"


def test_unknown_grouping_and_source_name_the_alternatives():
    with pytest.raises(ValueError, match="known: .*eight"):
        M.num_parts("nine")
    with pytest.raises(ValueError, match="five_v.*PifPaf.*'five'"):
        M.group_label_map(LABELS, "five_v")
    with pytest.raises(ValueError, match="parsing.*pifpaf"):
        M.load_part_masks("x.png", source="densepose")


def test_label_map_five_is_one_hot_per_group_with_background_first():
    out = M.group_label_map(LABELS, "five")
    assert out.shape == (6, 3, 4) and out.dtype == np.float32
    expected = [LABELS == 0, LABELS == 1, np.isin(LABELS, [3, 4]), LABELS == 2,
                np.isin(LABELS, [5, 6]), np.isin(LABELS, [7, 8])]
    for channel, want in enumerate(expected):
        np.testing.assert_array_equal(out[channel], want.astype(np.float32), err_msg=f"channel {channel}")
    np.testing.assert_array_equal(out.sum(axis=0), np.ones((3, 4)))  # disjoint groups: a partition


def test_label_map_eight_and_full():
    eight = M.group_label_map(LABELS, "eight")
    # head, left_arm, right_arm, torso, left_leg, right_leg, left_feet, right_feet
    for channel, label in enumerate([1, 3, 4, 2, 5, 6, 7, 8], start=1):
        np.testing.assert_array_equal(eight[channel], (LABELS == label).astype(np.float32))
    full = M.group_label_map(LABELS, "full")
    np.testing.assert_array_equal(full, np.stack([LABELS == 0, LABELS > 0]).astype(np.float32))


def test_pifpaf_grouping_is_channelwise_max_with_background():
    fields = np.zeros((36, 2, 3), dtype=np.float32)
    fields[field("nose"), 0, 0] = 0.9
    fields[field("left_eye"), 0, 0] = 0.4              # same part (head), lower: the max wins
    fields[field("left_ankle"), 1, 2] = 0.7            # feet
    fields[field("left_hip_to_right_hip"), 1, 0] = 0.5  # in both torso and legs in BPBreID's "five"
    fields[field("left_wrist"), 0, 2] = 1.3            # out of range: clipped to 1
    out = M.group_pifpaf(fields, "five")               # head, arms, torso, legs, feet
    assert out.shape == (6, 2, 3) and out.dtype == np.float32
    expected = np.zeros((5, 2, 3), dtype=np.float32)
    expected[0, 0, 0] = 0.9
    expected[1, 0, 2] = 1.0
    expected[2, 1, 0] = expected[3, 1, 0] = 0.5
    expected[4, 1, 2] = 0.7
    np.testing.assert_allclose(out[1:], expected)
    np.testing.assert_allclose(out[0], 1.0 - expected.max(axis=0))


def test_pifpaf_random_fields_match_groups_by_name():
    rng = np.random.default_rng(0)
    fields = rng.random((36, 4, 3)).astype(np.float32)
    out = M.group_pifpaf(fields, "eight")
    g = M.get_grouping("eight")
    for k, names in enumerate(g.pifpaf, start=1):
        np.testing.assert_allclose(out[k], fields[[field(n) for n in names]].max(axis=0))
    np.testing.assert_allclose(out[0], 1.0 - out[1:].max(axis=0))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_flip_pairs_pair_left_with_right():
    assert M.get_grouping("eight").flip_pairs() == [(1, 2), (4, 5), (6, 7)]
    assert M.get_grouping("six").flip_pairs() == [(1, 2), (4, 5)]
    assert M.get_grouping("five").flip_pairs() == []


def test_load_part_masks_from_files(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(LABELS, mode="L").save(png)
    np.testing.assert_array_equal(M.load_part_masks(png, "parsing", "six"), M.group_label_map(LABELS, "six"))
    fields = np.random.default_rng(1).random((36, 5, 4)).astype(np.float32)
    npy = tmp_path / "a.jpg.confidence_fields.npy"
    np.save(npy, fields)
    loaded = M.load_part_masks(npy, "pifpaf", "five_v")
    np.testing.assert_array_equal(loaded, M.group_pifpaf(fields, "five_v"))


def test_bad_mask_files_name_the_file_and_the_fix(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 3)).save(rgb)
    with pytest.raises(ValueError, match=r"rgb\.png has mode RGB.*single-channel"):
        M.load_part_masks(rgb, "parsing")
    bad_labels = tmp_path / "bad.png"
    Image.fromarray(np.full((3, 4), 12, np.uint8), mode="L").save(bad_labels)
    with pytest.raises(ValueError, match=r"bad\.png has labels \[12\].*0 background"):
        M.load_part_masks(bad_labels, "parsing")
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((17, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"x\.npy have shape \(17, 4, 4\).*\[36, h, w\]"):
        M.load_part_masks(npy, "pifpaf")


def test_expected_paths_follow_bpbreid_layout(tmp_path):
    image = tmp_path / "bounding_box_train" / "0001_c1_0003.jpg"
    parsing = M.expected_mask_paths(str(image), tmp_path, "parsing")
    pifpaf = M.expected_mask_paths(str(image), tmp_path, "pifpaf")
    assert parsing == [tmp_path / "masks" / "parsing" / "bounding_box_train" / "0001_c1_0003.png"]
    assert pifpaf == [tmp_path / "masks" / "pifpaf" / "bounding_box_train" /
                      "0001_c1_0003.jpg.confidence_fields.npy"]
    # a root above the split folders' parent (e.g. <root>/Occluded_Duke/bounding_box_train) adds that parent
    nested = tmp_path / "Occluded_Duke" / "bounding_box_train" / "x.jpg"
    assert M.expected_mask_paths(nested, tmp_path, "parsing") == [
        tmp_path / "masks" / "parsing" / "Occluded_Duke" / "bounding_box_train" / "x.png",
        tmp_path / "Occluded_Duke" / "masks" / "parsing" / "bounding_box_train" / "x.png"]
    # per-identity folders (Occluded-REID) keep their path below the root, so splits cannot collide
    occluded = tmp_path / "occluded_body_images" / "001" / "001_01.tif"
    assert M.expected_mask_paths(occluded, tmp_path, "parsing")[0] == (
        tmp_path / "masks" / "parsing" / "occluded_body_images" / "001" / "001_01.png")


def test_locate_mask_prefers_the_records_own_path(tmp_path):
    own = tmp_path / "labels" / "x.png"
    own.parent.mkdir()
    Image.fromarray(LABELS, mode="L").save(own)
    rec = Record(str(tmp_path / "train" / "x.jpg"), 0, 0, mask_path=str(own))
    assert M.locate_mask(rec, tmp_path, "parsing") == own
    # the record's PNG is no PifPaf file: pifpaf looks in the layout instead
    with pytest.raises(M.MissingMasksError):
        M.locate_mask(rec, tmp_path, "pifpaf")


def test_missing_masks_error_says_where_and_how(tmp_path):
    image = tmp_path / "query" / "0007_c2_0001.jpg"
    expected = tmp_path / "masks" / "parsing" / "query" / "0007_c2_0001.png"
    with pytest.raises(M.MissingMasksError) as info:
        M.locate_mask(str(image), tmp_path, "parsing")
    message = str(info.value)
    assert str(expected) in message and str(image) in message
    assert "<root>/masks/parsing/<split_dir>/<image stem>.png" in message
    assert "<root>/masks/pifpaf/<split_dir>/<image file name>.confidence_fields.npy" in message
    assert "SynthOcc" in message and "1 head" in message
    assert isinstance(info.value, FileNotFoundError)
    again = pickle.loads(pickle.dumps(info.value))  # survives a DataLoader worker's re-raise
    assert str(again) == message and again.looked_for == [str(expected)]


def test_check_masks_counts_missing_and_names_the_first(tmp_path):
    records = [Record(str(tmp_path / "train" / f"{i}.jpg"), i, 0) for i in range(3)]
    target = tmp_path / "masks" / "parsing" / "train" / "0.png"
    target.parent.mkdir(parents=True)
    Image.fromarray(LABELS, mode="L").save(target)
    with pytest.raises(M.MissingMasksError, match=r"2 of 3 images have none.*train/1\.png"):
        M.check_masks(records, tmp_path, "parsing")
    for i in (1, 2):
        Image.fromarray(LABELS, mode="L").save(target.with_name(f"{i}.png"))
    M.check_masks(records, tmp_path, "parsing")  # all present: no error
