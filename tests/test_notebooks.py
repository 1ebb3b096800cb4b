"""Every notebook executes top to bottom under the `ci` profile (papermill), writing its tables, figures
and metrics sidecar."""

from __future__ import annotations

import json

import pytest

from reidlib import runner
from reidlib.paths import paper_name, project_root

pytestmark = pytest.mark.slow

NOTEBOOKS = runner.discover(root=project_root())


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_ci(notebook, tmp_path):
    out = tmp_path / "runs"
    result = runner.run_notebook(notebook, "ci", out, {"profile": "ci", "out_dir": str(out)}, timeout=600)
    assert result.status == "passed", f"{notebook.name}: {result.error}\n(see {result.output})"
    sidecar = json.loads((out / "results" / "ci" / paper_name(notebook.stem) / "metrics.json").read_text())
    assert sidecar["headline"], "the notebook wrote no headline metrics"
    assert sidecar.get("tables"), "the notebook exported no table"
    for paths in sidecar.get("figures", {}).values():
        assert all(p.endswith((".png", ".pdf")) for p in paths)
