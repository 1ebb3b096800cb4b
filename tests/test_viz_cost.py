"""Figure helpers write PNG+PDF; cost helpers count what they claim."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from reidlib import cost, viz  # noqa: E402
from reidlib.config import TrainConfig  # noqa: E402
from reidlib.methods.base import Batch, DataInfo, Embedding, ReIDMethod  # noqa: E402


class Linear(ReIDMethod):
    def __init__(self):
        super().__init__(None, DataInfo(num_classes=5))
        self.fc = nn.Linear(12, 5)
        self.bn = nn.BatchNorm1d(5)
        self.steps = 0

    def forward(self, batch):
        return {"logits": self.bn(self.fc(batch.images.flatten(1)))}

    def loss(self, outputs, batch):
        return {"ce": nn.functional.cross_entropy(outputs["logits"], batch.pids)}

    def embed(self, batch):
        return Embedding(global_feat=self.fc(batch.images.flatten(1)))

    def train_step(self, batch, optimizer, scaler, ctx):  # counts the steps cost.py times
        self.steps += 1
        return super().train_step(batch, optimizer, scaler, ctx)


def test_cost_counts_params_and_flops_and_leaves_model_unchanged():
    model = Linear()
    batch = Batch(images=torch.randn(4, 3, 2, 2), camids=torch.zeros(4), pids=torch.tensor([0, 1, 2, 3]))
    assert cost.count_parameters(model) == 12 * 5 + 5 + 2 * 5
    assert cost.inference_flops(model, batch) == 2 * 12 * 5  # one [1,12]x[12,5] matmul per image
    before = {k: v.clone() for k, v in model.state_dict().items()}
    row = cost.cost_row(model, batch, TrainConfig(optimizer="sgd", lr=0.1), repeats=1)
    assert set(row) == {"params (M)", "GFLOPs / image", "train s / iter", "inference ms / image"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.steps == 0                                # the steps ran on a copy, through train_step


class Wide(Linear):
    """A 1000 x 2000 layer: 8 MB of float32 weights (the 5-way head and BN are a few kB)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(1000, 2000, bias=False), nn.Linear(2000, 5, bias=False))


def test_peak_training_memory_holds_weights_gradients_and_momentum():
    batch = Batch(images=torch.randn(4, 1000, 1, 1), camids=torch.zeros(4), pids=torch.tensor([0, 1, 2, 3]))
    weights = 1000 * 2000 * 4 / 1e6                                     # MB
    # at least weights, gradients and the optimiser's state at once; the optimiser's own temporaries
    # (weight decay's grad + wd * w, foreach updates) add a few weight-sized buffers, activations ~0
    sgd = cost.peak_train_memory_mb(Wide(), batch, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    assert 3 * weights <= sgd <= 6 * weights + 1
    adam = cost.peak_train_memory_mb(Wide(), batch, TrainConfig(optimizer="adam", lr=0.1))
    assert 4 * weights <= adam <= 7 * weights + 1 and adam > sgd       # Adam keeps two moments


def test_training_cost_is_timed_through_the_methods_own_step():
    model = Linear()
    batch = Batch(images=torch.randn(4, 3, 2, 2), camids=torch.zeros(4), pids=torch.tensor([0, 1, 2, 3]))
    copies = []
    real = Linear.train_step

    def counting(self, *args):
        copies.append(self)
        return real(self, *args)

    Linear.train_step = counting
    try:
        cost.train_seconds_per_iter(model, batch, TrainConfig(optimizer="sgd", lr=0.1), repeats=2, warmup=1)
    finally:
        Linear.train_step = real
    assert len(copies) == 3 and all(c is not model for c in copies)
    assert not torch.equal(copies[0].fc.weight, model.fc.weight)  # the optimiser stepped the copy


def test_figures_are_written_as_png_and_pdf(tmp_path):
    images = torch.zeros(2, 3, 16, 8)
    fig = viz.heatmap_grid(images, {"attention": torch.rand(2, 4, 2)})
    paths = viz.save_figure(fig, "unit", "heat", root=tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    fig = viz.part_scores_grid(images, torch.tensor([[0.9, 0.1], [0.5, 0.4]]), captions=["a", "b"])
    fig = viz.ranking_grid(images, [images, images], [[True, False], [False, True]])
    assert viz.correlation_heatmap({"a": np.eye(3)}, ["h1", "h2", "h3"]).axes


def test_correlation_panels_and_curves_are_labelled():
    import pandas as pd

    fig = viz.correlation_heatmap({"without HEM": np.eye(2), "with HEM": torch.eye(2)}, ["h1", "h2"])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["without HEM", "with HEM"]
    df = pd.DataFrame({"baseline": [0.9, 0.5], "DPM": [0.8, 0.4]}, index=[1, 2])
    ax = viz.curves(df, "block", "gap").axes[0]
    assert ax.get_xlabel() == "block"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline", "DPM"]
    assert list(ax.lines[1].get_ydata()) == [0.8, 0.4]


def test_leaderboard_bars_put_the_best_on_top_with_half_the_spread_each_side():
    import pandas as pd

    board = pd.DataFrame({"mAP": [30.0, 45.0, 20.0], "mAP spread": [2.0, None, 1.0]}, index=["a", "b", "c"])
    ax = viz.leaderboard_bars(board, "mAP", "mAP spread").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c", "a", "b"]      # bottom to top
    assert [bar.get_width() for bar in ax.patches] == [20.0, 30.0, 45.0]
    bars = next(c for c in ax.containers if hasattr(c, "errorbar"))
    whiskers = bars.errorbar.lines[2][0].get_segments()                        # one per bar
    assert [seg[1][0] - seg[0][0] for seg in whiskers] == [1.0, 2.0, 0.0]     # the full spread


def test_part_maps_grid_frames_each_map_by_its_score():
    images = torch.zeros(2, 3, 16, 8)
    scores = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    fig = viz.part_maps_grid(images, torch.rand(2, 3, 4, 2), ["head", "torso", "legs"], scores, ["a", "b"])
    axes = np.array(fig.axes).reshape(2, 4)                      # image + one column per part
    assert [ax.get_title() for ax in axes[0, 1:]] == ["head", "torso", "legs"]
    assert axes[1, 1].get_xlabel() == "visibility 0.00"
    hidden, seen = (axes[1, p].spines["top"].get_edgecolor() for p in (1, 2))
    assert hidden[0] > hidden[1] and seen[1] > seen[0]           # red for 0, green for 1 (RdYlGn)


def test_upsample_and_display_ranges():
    maps = torch.rand(2, 3, 4)
    assert viz.upsample(maps, (6, 8)).shape == (2, 6, 8)
    shown = viz.to_display(torch.randn(1, 3, 4, 4) * 10)
    assert shown.shape == (1, 4, 4, 3) and shown.min() >= 0 and shown.max() <= 1


def test_metric_lines_draw_one_panel_per_table_in_table_order():
    import pandas as pd

    reported = pd.DataFrame({"Rank-1": [89.6, 90.1], "mAP": [78.3, 78.9]}, index=["D1", "D2"])
    ours = pd.DataFrame({"Rank-1": [20.0, float("nan")], "mAP": [15.0, 16.0]}, index=["D1", "D2"])
    fig = viz.metric_lines({"reported": reported, "ours": ours})
    assert [ax.get_title() for ax in fig.axes] == ["reported", "ours"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["D1", "D2"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["Rank-1", "mAP"]


def test_method_maps_grid_has_a_row_per_method_and_a_column_per_image_and_kind():
    images = torch.zeros(2, 3, 16, 8)
    maps = {"bot": {"Grad-CAM": torch.rand(2, 16, 8), "own": torch.rand(2, 4, 2)},
            "dpm": {"Grad-CAM": torch.rand(2, 16, 8)}}
    fig = viz.method_maps_grid(images, maps)
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["bot", "dpm"]
    assert [ax.get_title() for ax in axes[0]] == ["Grad-CAM", "own"] * 2
    assert len(axes[1, 1].images) == 0 and len(axes[0, 1].images) == 2     # dpm has no "own": left blank
