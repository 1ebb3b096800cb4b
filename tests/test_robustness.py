"""reidlib.robustness: per-query metrics and their breakdown by occlusion, on hand-made rankings whose
per-bin Rank-1 and mAP are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reidlib.robustness import NO_PART_HIDDEN, per_query_metrics, robustness, robustness_table

NAMES = [f"q{i}.jpg" for i in range(7)]
# 0-based rank of each query's single true match: Rank-1 hit iff 0, AP = 1 / (rank + 1)
MATCH_RANKS = [0, 1, 0, 3, 0, 1]


def ranking(match_ranks=MATCH_RANKS):
    """Queries 0..5 (camera 0) each have one true match, gallery item i (camera 1), behind `rank` other
    gallery items; query 6's pid is not in the gallery (not a valid query)."""
    n = len(match_ranks)
    dist = np.full((n + 1, n), 5.0)
    for i, rank in enumerate(match_ranks):
        dist[i, i] = 1.0
        dist[i, [j for j in range(n) if j != i][:rank]] = 0.0
    q_pids, g_pids = [*range(n), 99], list(range(n))
    return dist, q_pids, g_pids, [0] * (n + 1), [1] * n


def metadata():
    nan = math.nan
    return pd.DataFrame({
        "filename": NAMES,
        "occluder": ["none", "car", "pedestrian", "pole", "pedestrian", "tree", "board"],
        "occluded_fraction": [0.0, 0.1, 0.2, 0.35, 0.5, 0.9, 0.3],
        "vis_head": [1.0, 0.4, 1.0, 0.1, 0.5, nan, 0.0],
        "vis_torso": [1.0, 0.9, 0.2, 0.3, 0.6, nan, 0.0],
        "vis_left_arm": [1.0, 1.0, nan, 0.8, 0.9, nan, 0.0],
    }).set_index("filename")


@pytest.fixture
def per_query():
    return per_query_metrics(*ranking(), names=NAMES)


def test_per_query_metrics_keep_valid_queries_with_rank1_hits_and_ap(per_query):
    assert list(per_query.index) == NAMES[:6]  # q6 has no true match
    assert per_query["rank1"].tolist() == [1, 0, 1, 0, 1, 0]
    assert per_query["AP"].tolist() == pytest.approx([1, 1 / 2, 1, 1 / 4, 1, 1 / 2])
    by_position = per_query_metrics(*ranking())
    assert list(by_position.index) == list(range(6))
    with pytest.raises(ValueError, match="3 names for 7 queries"):
        per_query_metrics(*ranking(), names=NAMES[:3])


def test_by_occluded_fraction_bins_zero_apart_and_closes_bins_on_the_right(per_query):
    table = robustness_table(per_query, metadata(), "occluded fraction")
    assert list(table.index) == ["0", "(0, 0.2]", "(0.2, 0.4]", "(0.4, 0.6]", "(0.6, 1]"]
    assert table["queries"].tolist() == [1, 2, 1, 1, 1]       # 0.2 falls in (0, 0.2]
    assert table["Rank-1"].tolist() == pytest.approx([100, 50, 0, 100, 0])
    assert table["mAP"].tolist() == pytest.approx([100, 75, 25, 100, 50])


def test_by_occluder_kind(per_query):
    table = robustness_table(per_query, metadata(), "occluder")
    assert list(table.index) == ["none", "object", "pedestrian"]
    assert table["queries"].tolist() == [1, 3, 2]             # car, pole, tree are objects
    assert table["Rank-1"].tolist() == pytest.approx([100, 0, 100])
    assert table["mAP"].tolist() == pytest.approx([100, 100 * (0.5 + 0.25 + 0.5) / 3, 100])


def test_by_hidden_part_counts_a_query_once_per_hidden_part(per_query):
    table = robustness_table(per_query, metadata(), "hidden part")
    assert list(table.index) == ["head", "torso", "left_arm", NO_PART_HIDDEN]
    # head: q1, q3; torso: q2, q3 (q3 in both); no arm hidden; q0 and q4 (0.5 is visible) intact;
    # q5 has no visibility at all and is left out
    assert table["queries"].tolist() == [2, 2, 0, 2]
    assert table["Rank-1"].tolist()[:2] == pytest.approx([0, 50])
    assert table["mAP"].tolist()[:2] == pytest.approx([37.5, 62.5])
    assert math.isnan(table.loc["left_arm", "mAP"])
    assert table.loc[NO_PART_HIDDEN, ["Rank-1", "mAP"]].tolist() == pytest.approx([100, 100])


def test_robustness_stacks_methods_and_groupings_in_one_long_frame(per_query):
    perfect = per_query_metrics(*ranking([0] * 6), names=NAMES)
    df = robustness({"ours": per_query, "oracle": perfect}, metadata())
    assert list(df.columns) == ["method", "by", "bin", "Rank-1", "mAP", "queries"]
    assert len(df) == 2 * (5 + 3 + 4)
    oracle = df[(df.method == "oracle") & (df.queries > 0)]
    assert (oracle[["Rank-1", "mAP"]] == 100).all(axis=None)
    ours = df[df.method == "ours"].set_index(["by", "bin"])
    assert ours.loc[("occluder", "object"), "mAP"] == pytest.approx(100 * 1.25 / 3)
    only = robustness({"ours": per_query}, metadata(), by=["occluder"])
    assert only["bin"].tolist() == ["none", "object", "pedestrian"]


def test_errors_name_the_fix(per_query):
    with pytest.raises(ValueError, match="no metadata"):
        robustness_table(per_query, metadata().drop("q3.jpg"), "occluder")
    with pytest.raises(ValueError, match="unknown grouping"):
        robustness_table(per_query, metadata(), "camera")
    no_parts = metadata().assign(**{c: math.nan for c in ("vis_head", "vis_torso", "vis_left_arm")})
    with pytest.raises(ValueError, match="parsing masks"):
        robustness_table(per_query, no_parts, "hidden part")
