"""A notebook rerun that fails or times out does not show the earlier run's headline metrics, tables or
figures as its own (status.json, summary.csv and the out dir)."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest

from reidlib import runner
from reidlib.workbook import Workbook

pytestmark = pytest.mark.slow

HANG_TIMEOUT_S = 5  # the hanging rerun only has to start before it is killed
MODE_FILE = "mode.txt"  # beside the notebook (its working directory): how the rerun behaves

# The rerun fails or hangs before it writes anything.
BODY = """
import pathlib, time
if pathlib.Path("mode.txt").read_text() == "fail":
    raise RuntimeError("failing on purpose")
time.sleep(300)
"""


@pytest.fixture
def project(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "demo"\nout_dir = "runs"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_good.ipynb")
    return tmp_path


def _earlier_pass(out) -> None:
    """What a passing run of the notebook left: a table, a figure and a headline, written by the Workbook
    as the paper notebooks write them."""
    wb = Workbook("good", profile="ci", out_dir=str(out))
    wb.table(pd.DataFrame({"mAP": [0.5]}), "table1")
    fig = plt.figure()
    wb.figure(fig, "fig1")
    plt.close(fig)
    wb.headline(mAP=0.5)


def _run(project, timeout=None) -> dict:
    runner.reproduce(papers=["good"], profile="ci", out_dir=project / "runs", root=project, timeout=timeout)
    return json.loads((project / "runs" / "notebooks" / "ci" / "01_good.status.json").read_text())


def _outputs(out) -> list:
    results, figures = out / "results" / "ci" / "good", out / "figures" / "good"
    return [results / "metrics.json", results / "table1.csv", figures / "fig1.png", figures / "fig1.pdf"]


@pytest.mark.parametrize(("mode", "status", "timeout"),
                         [("fail", "failed", None), ("hang", "timeout", HANG_TIMEOUT_S)])
def test_rerun_that_stops_shows_none_of_the_earlier_results(project, mode, status, timeout):
    out = project / "runs"
    _earlier_pass(out)
    assert all(p.is_file() for p in _outputs(out)), "the passing run wrote its table, figure and sidecar"
    (project / "notebooks" / MODE_FILE).write_text(mode)
    rerun = _run(project, timeout)
    assert rerun["status"] == status
    assert "mAP" not in (rerun["metrics"].get("headline") or {}), "status.json carries the old headline"
    row = pd.read_csv(out / "summary.csv").set_index("notebook").loc["01_good"]
    assert row["status"] == status and math.isnan(row["mAP"]), "summary shows the old mAP"
    assert "01_good" not in set(pd.read_csv(out / "summary_details.csv").notebook), "details show the old mAP"
    assert not [p.name for p in _outputs(out) if p.exists()], "the old run's outputs look current"


def test_only_figures_in_the_notebooks_own_folder_are_cleared(project):
    """The sidecar is data in the out dir: a path it lists outside the paper's figure folder stays."""
    outside = project / "keep.png"
    outside.write_bytes(b"not ours")
    sidecar = project / "runs" / "results" / "ci" / "good" / "metrics.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"figures": {"fig1": [str(outside)]}}))
    (project / "notebooks" / MODE_FILE).write_text("fail")
    assert _run(project)["status"] == "failed"
    assert outside.read_bytes() == b"not ours"
