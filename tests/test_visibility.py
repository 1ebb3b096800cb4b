"""Score-versus-truth analyses on SynthOcc (reidlib/visibility.py): known values with oracle models."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidlib.methods.base import PartLayout
from reidlib.visibility import part_map_iou, score_auc
from reidlib.workbook import Workbook

MAP = (6, 3)  # the part maps' resolution (a 96 x 48 input at stride 16)


class MapsFromLabels(nn.Module):
    """A stand-in method whose part maps are the query's own parsing labels (an oracle), or empty."""

    test_masks = True  # the test loader hands it the labels

    def __init__(self, empty: bool = False):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # device_of needs a parameter
        self.empty = empty

    def part_layout(self) -> PartLayout:
        return PartLayout("grouping", 5, "five")

    def explain(self, batch) -> dict:
        maps = F.interpolate(batch.masks[:, 1:].float(), size=MAP, mode="area")   # [N, 5, h, w]
        return {"part_maps": torch.zeros_like(maps) if self.empty else maps}


@pytest.fixture(scope="module")
def occluded(tmp_path_factory):
    wb = Workbook("unit", profile="ci", out_dir=str(tmp_path_factory.mktemp("runs")))
    cfg = wb.config("bpbreid", {"data": {"mask_grouping": "five"}})
    return wb.data(cfg), cfg.data


def test_part_map_iou_of_the_labels_themselves_is_near_one_and_of_empty_maps_zero(occluded):
    dataset, data_cfg = occluded
    oracle = part_map_iou(MapsFromLabels(), dataset, data_cfg)
    empty = part_map_iou(MapsFromLabels(empty=True), dataset, data_cfg)
    assert set(oracle.part) <= {"head", "arms", "torso", "legs", "feet"}
    # at 6 x 3 cells a heavily occluded query may show no part in any cell: it has no rows
    assert 0 < oracle.image.nunique() <= len(dataset.query)
    # labels resized to the input, then to the map, against labels area-averaged straight to the map
    assert oracle.iou.mean() > 0.9, oracle.groupby("part").iou.mean()
    assert (empty.iou == 0).all()
    # the template depends on the labels only
    common = oracle.merge(empty, on=["image", "part"], suffixes=("", "_empty"))
    pd.testing.assert_series_equal(common["template iou"], common["template iou_empty"], check_names=False)


def test_part_map_iou_refuses_stripes(occluded):
    dataset, data_cfg = occluded
    model = MapsFromLabels()
    model.part_layout = lambda: PartLayout("stripes", 6)
    with pytest.raises(ValueError, match="stripes, not parsing-label groups"):
        part_map_iou(model, dataset, data_cfg)


def test_score_auc_accuracy_counts_the_parts_called_right():
    df = pd.DataFrame({"score": [1.0, 1.0, 0.0, 0.0, 1.0], "visibility": [0.9, 0.2, 0.1, 0.8, 1.0],
                       "occluder": ["object"] * 4 + ["none"]})
    row = score_auc(df).loc["object"]
    assert row["accuracy (score >= 0.5)"] == 0.5  # two right (0.9 seen, 0.1 hidden), two wrong
    assert row["ROC AUC"] == 0.5 and row["parts"] == 4
    assert math.isclose(score_auc(df).loc["all occluded images", "accuracy (score >= 0.5)"], 0.5)
