"""Figure helpers write PNG+PDF; cost helpers count what they claim."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from reidlib import cost, viz  # noqa: E402
from reidlib.methods.base import Embedding, ReIDMethod  # noqa: E402


class Linear(ReIDMethod):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 5)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, images, camids=None):
        return {"logits": self.bn(self.fc(images.flatten(1)))}

    def loss(self, outputs, pids):
        return {"ce": nn.functional.cross_entropy(outputs["logits"], pids)}

    def embed(self, images, camids=None):
        return Embedding(global_feat=self.fc(images.flatten(1)))


def test_cost_counts_params_and_flops_and_leaves_model_unchanged():
    model = Linear()
    images = torch.randn(4, 3, 2, 2)
    assert cost.count_parameters(model) == 12 * 5 + 5 + 2 * 5
    assert cost.inference_flops(model, images) == 2 * 12 * 5  # one [1,12]x[12,5] matmul per image
    before = {k: v.clone() for k, v in model.state_dict().items()}
    row = cost.cost_row(model, images, torch.tensor([0, 1, 2, 3]), repeats=1)
    assert set(row) == {"params (M)", "GFLOPs / image", "train s / iter", "inference ms / image"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_figures_are_written_as_png_and_pdf(tmp_path):
    images = torch.zeros(2, 3, 16, 8)
    fig = viz.heatmap_grid(images, {"attention": torch.rand(2, 4, 2)})
    paths = viz.save_figure(fig, "unit", "heat", root=tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    fig = viz.part_scores_grid(images, torch.tensor([[0.9, 0.1], [0.5, 0.4]]), captions=["a", "b"])
    fig = viz.ranking_grid(images, [images, images], [[True, False], [False, True]])
    fig = viz.correlation_heatmap(np.eye(3), ["h1", "h2", "h3"])
    assert fig.axes


def test_upsample_and_display_ranges():
    maps = torch.rand(2, 3, 4)
    assert viz.upsample(maps, (6, 8)).shape == (2, 6, 8)
    shown = viz.to_display(torch.randn(1, 3, 4, 4) * 10)
    assert shown.shape == (1, 4, 4, 3) and shown.min() >= 0 and shown.max() <= 1
