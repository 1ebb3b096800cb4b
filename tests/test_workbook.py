"""Workbook confinement: paper, table and figure names cannot place files outside the output folders."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reidlib import viz  # noqa: E402
from reidlib.runs import UnsafePathError  # noqa: E402
from reidlib.workbook import Workbook  # noqa: E402

# "{tmp}" is replaced by the test's own folder: an absolute name that, were it accepted, would land there.
NOT_PLAIN = ["../escaped", "..", "{tmp}/escaped", "sub/escaped", "sub\\escaped", ""]


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("paper", NOT_PLAIN)
def test_a_paper_name_that_is_not_a_plain_name_is_refused(tmp_path, paper):
    paper = paper.format(tmp=tmp_path)
    with pytest.raises(UnsafePathError, match="paper .* plain name"):
        Workbook(paper, profile="ci", out_dir=str(tmp_path / "runs"))
    assert files_under(tmp_path) == [] and not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_table_and_figure_names_stay_inside_the_output_folders(tmp_path, name):
    name = name.format(tmp=tmp_path)
    wb = Workbook("unit", profile="ci", out_dir=str(tmp_path / "runs"))
    fig = plt.figure()
    with pytest.raises(UnsafePathError, match="table name .* plain name"):
        wb.table(pd.DataFrame({"a": [1]}), name)
    with pytest.raises(UnsafePathError, match="figure name .* plain name"):
        wb.figure(fig, name)
    with pytest.raises(UnsafePathError, match="paper .* plain name"):
        viz.save_figure(fig, name or "..", "ok", root=tmp_path / "runs")
    plt.close(fig)
    assert files_under(tmp_path) == [] and not (tmp_path / "escaped").exists()


def test_plain_names_write_where_the_readme_says(tmp_path):
    wb = Workbook("unit", profile="ci", out_dir=str(tmp_path / "runs"))
    fig = plt.figure()
    wb.table(pd.DataFrame({"a": [1]}), "table1")
    wb.figure(fig, "fig1")
    plt.close(fig)
    assert files_under(tmp_path / "runs") == [
        "figures/unit/fig1.pdf", "figures/unit/fig1.png", "results/ci/unit/metrics.json",
        "results/ci/unit/table1.csv", "results/ci/unit/table1.md", "results/ci/unit/table1.tex"]


def test_a_new_session_does_not_inherit_an_earlier_runs_headline_or_tables(tmp_path):
    """metrics.json describes the notebook session that wrote it: an interactive rerun that stops early
    must not show the earlier run's numbers, tables or figures as its own."""
    import json

    earlier = Workbook("unit", profile="ci", out_dir=str(tmp_path / "runs"))
    earlier.table(pd.DataFrame({"a": [1]}), "table1")
    earlier.headline(mAP=0.5)
    now = Workbook("unit", profile="ci", out_dir=str(tmp_path / "runs"))
    now.headline(rank1=0.25)
    side = json.loads((tmp_path / "runs" / "results" / "ci" / "unit" / "metrics.json").read_text())
    assert side == {"paper": "unit", "profile": "ci", "headline": {"rank1": 0.25}}


def test_compare_adds_a_column_group_per_protocol(tmp_path):
    wb = Workbook("pab_reid", profile="ci", out_dir=str(tmp_path / "runs"))
    twin = {"SynthOcc (occluded_reid)": {"Ours": {"rank1": 0.3, "mAP": 0.2}}}
    df = wb.compare("Table I", {"Ours": {"rank1": 0.5, "mAP": 0.4}}, "synthocc", more=twin)
    ours = df.loc[("Ours", "reproduced")]
    assert ours[("SynthOcc", "Rank-1")] == 50.0 and ours[("SynthOcc (occluded_reid)", "mAP")] == 20.0
    assert ours[("Occluded-Duke", "Rank-1")] != ours[("Occluded-Duke", "Rank-1")]  # NaN: not run there
    only_twin = wb.compare("Table I", {}, "synthocc", more=twin)
    assert "SynthOcc" not in only_twin.columns.get_level_values("dataset")
    assert only_twin.loc[("Ours", "reproduced"), ("SynthOcc (occluded_reid)", "Rank-1")] == 30.0


def test_evaluate_extracts_with_the_runs_own_config_and_applies_test_switches_after(tmp_path, monkeypatch):
    """The embedding cache is shared by every row re-scoring a run: the first row asking must not leave
    embeddings made with its own matching switches for the others."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    import numpy as np
    import torch

    from reidlib.config import DataConfig

    @dataclass
    class Cfg:
        weight: float = 1.0

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg, self.anchor = Cfg(), torch.nn.Parameter(torch.zeros(1))

        def distance(self, q, g):  # a query's own identity is nearest iff weight > 0
            return -self.cfg.weight * (q == g.T).float()

    seen = []

    def embeddings(run, data_cfg, flip, model):
        seen.append(model.cfg.weight)
        ids = torch.arange(3.0)[:, None]
        return (ids, np.arange(3), np.zeros(3, int)), (ids, np.arange(3), np.ones(3, int))

    wb = Workbook("unit", profile="ci", out_dir=str(tmp_path / "runs"))
    monkeypatch.setattr(wb, "_embeddings", embeddings)
    run = SimpleNamespace(load_model=lambda device: Model(), config=SimpleNamespace(
        data=DataConfig(), train=SimpleNamespace(flip_test=False)))
    assert wb.evaluate(run, model_overrides={"weight": 1.0})["rank1"] == 1.0
    assert wb.evaluate(run, model_overrides={"weight": -1.0})["rank1"] == 0.0  # the switch acts on matching
    assert seen == [1.0, 1.0]                                                   # never on extraction
