"""The papermill batch runner: failure isolation, timeouts, exit codes, the summary table."""

from __future__ import annotations

import json

import nbformat
import pytest

from reidlib import runner

pytestmark = pytest.mark.slow


def _notebook(path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "demo"\nout_dir = "runs"\ndataset = None\ndata_root = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


SIDECAR = """
import json, pathlib
d = pathlib.Path(out_dir) / "results" / profile / "good"
d.mkdir(parents=True, exist_ok=True)
(d / "metrics.json").write_text(json.dumps({"headline": {"mAP": 0.5, "rank1": 0.75}}))
"""


@pytest.fixture
def project(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_good.ipynb", SIDECAR)
    _notebook(nbs / "02_bad.ipynb", "raise RuntimeError('boom in the notebook')")
    _notebook(nbs / "03_slow.ipynb", "import time; time.sleep(60)")
    return tmp_path


def test_discover_selects_by_number_and_name(project):
    assert [p.stem for p in runner.discover(["02", "good"], project)] == ["02_bad", "01_good"]
    shipped = [p.stem for p in runner.discover(["pab", "bpsema_reid", "03"])]   # the repository's notebooks
    assert shipped == ["01_pab_reid", "02_bpsema_reid", "03_qpm"]
    with pytest.raises(ValueError, match="no notebook matches 'nope'; known: 01_good, 02_bad, 03_slow"):
        runner.discover(["nope"], project)


def test_failure_is_isolated_and_timeout_recorded(project, capsys):
    out = project / "runs"
    code = runner.reproduce(profile="ci", jobs=2, timeout=15, out_dir=out, root=project)
    assert code == 1  # not all passed
    status = {p.name.split(".")[0]: json.loads(p.read_text())
              for p in (out / "notebooks" / "ci").glob("*.status.json")}
    assert status["01_good"]["status"] == "passed"
    assert status["01_good"]["metrics"]["headline"] == {"mAP": 0.5, "rank1": 0.75}
    assert status["02_bad"]["status"] == "failed" and "boom in the notebook" in status["02_bad"]["error"]
    assert status["03_slow"]["status"] == "timeout"
    table = runner.summary_table(out)
    assert list(table.notebook) == ["01_good", "02_bad", "03_slow"]
    assert list(table.set_index("notebook").loc["01_good", ["mAP", "Rank-1"]]) == [50.0, 75.0]  # percent
    details = runner.details_table(out)
    assert details.values.tolist() == [["01_good", "ci", "mAP", 0.5], ["01_good", "ci", "rank1", 0.75]]
    assert all((out / name).is_file() for name in ["summary.md", "summary.csv", "summary_details.md",
                                                   "summary_details.csv", "notebooks/ci/01_good.ipynb"])


def test_all_passing_exit_code_zero(project):
    code = runner.reproduce(papers=["good"], profile="ci", out_dir=project / "runs", root=project)
    assert code == 0


def test_bad_arguments_are_clear(project):
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        runner.reproduce(profile="huge", root=project)
    with pytest.raises(ValueError, match="--jobs must be at least 1"):
        runner.reproduce(jobs=0, root=project)


def test_a_damaged_status_file_is_a_row_saying_so_not_a_failed_summary(tmp_path):
    folder = tmp_path / "notebooks" / "ci"
    folder.mkdir(parents=True)
    good = {"notebook": "01_good", "profile": "ci", "status": "passed", "duration_s": 1.0}
    (folder / "01_good.status.json").write_text(json.dumps(good))
    (folder / "02_bad.status.json").write_text('{"notebook": "02_b')       # a write cut short
    table = runner.summary_table(tmp_path).set_index("notebook")
    assert table.loc["01_good", "status"] == "passed"
    assert table.loc["02_bad", "status"] == "damaged: 02_bad.status.json"
    assert "02_bad.status.json" in table.loc["02_bad", "error"] and "run the notebook again" in table.loc[
        "02_bad", "error"]
