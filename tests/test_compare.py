"""The comparison notebook's library part (reidlib.compare): which methods it compares, the leaderboard
and the paper-size cost."""

from __future__ import annotations

import math

import pytest

from reidlib import compare, methods


def test_every_registered_method_with_a_config_but_training_stages_is_compared():
    import tiny_method  # noqa: F401  (registers "tiny", a toy without a config file)

    names = compare.leaderboard_methods()
    assert "rganet_prompt" not in names and methods.get("rganet_prompt").is_stage
    assert "tiny" in methods.names() and "tiny" not in names
    assert set(names) == {"bot", "pcb", "vit_baseline", "clip_baseline", "qpm", "bpbreid", "pab", "bpsema",
                          "dpm", "rganet"}
    from reidlib.config import packaged_config

    for name in names:                                     # each has its own config file
        assert packaged_config(name)["paper"]["method"] == name


def test_paper_size_cost_counts_the_paper_model():
    cost = compare.paper_size_cost("bot")
    # torchvision's ResNet-50 without its fc (23,508,032) + BNNeck (2 x 2048) + a 702-way classifier
    assert cost["params (M)"] == pytest.approx((23_508_032 + 2 * 2048 + 702 * 2048) / 1e6)
    assert cost["size"] == "256x128" and 7 < cost["GFLOPs / image"] < 9   # ResNet-50 last stride 1


def test_leaderboard_rows_with_and_without_seed_spread(tmp_path):
    from reidlib.workbook import Workbook

    wb = Workbook("compare", profile="ci", out_dir=str(tmp_path))
    board = compare.leaderboard(wb, ["bot", "pcb"], spread=["bot"])
    assert list(board.index) == ["bot", "pcb"]
    assert all(0 <= board.loc[m, "mAP"] <= 100 for m in board.index)
    assert board.loc["bot", "mAP spread"] >= 0 and math.isnan(board.loc["pcb", "mAP spread"])
    assert board.loc["bot", "trunk"] == "-" and board.loc["pcb", "size"] == "96x48"


def test_per_query_metrics_average_to_the_runs_evaluation(tmp_path):
    """Workbook.per_query (the robustness breakdown's input) agrees with the run's own evaluation: the
    mean of its per-query AP is the mAP, the mean of its Rank-1 hits the Rank-1."""
    from reidlib.workbook import Workbook

    wb = Workbook("compare", profile="ci", out_dir=str(tmp_path))
    run = wb.train(wb.config("bot"))
    per_query = wb.per_query(run)
    assert len(per_query) == len(wb.data(run.config).query) and per_query.index[0].endswith(".jpg")
    assert per_query["AP"].mean() == pytest.approx(run.metrics["mAP"], abs=1e-6)
    assert per_query["rank1"].mean() == pytest.approx(run.metrics["rank1"], abs=1e-6)


def test_own_map_takes_the_most_specific_map():
    import torch

    parts = torch.tensor([[[[0.2, 0.9]], [[0.7, 0.1]]]])                  # [1, K=2, 1, 2]
    key, value = compare.own_map({"activation": torch.ones(1, 1, 2), "part_maps": parts})
    assert key == "part_maps"
    torch.testing.assert_close(value, torch.tensor([[[0.7, 0.9]]]))       # where any part is
    key, value = compare.own_map({"head_attention": parts, "activation": torch.ones(1, 1, 2)})
    assert key == "head_attention"
    torch.testing.assert_close(value, torch.tensor([[[0.45, 0.5]]]))
    with pytest.raises(ValueError, match="none of"):
        compare.own_map({"part_scores": torch.ones(1, 2)})
