"""The summary of a batch, rebuilt from the status files and metrics sidecars: a short table with the same
columns for every notebook (mAP / Rank-1 / baseline mAP in percent) and a long table of every headline key."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from reidlib import cli, runner
from reidlib.paths import paper_name, results_dir

SHORT_COLUMNS = ["notebook", "profile", "status", "duration_s", "mAP", "Rank-1", "baseline mAP", "error"]
QPM = {"mAP": 0.5, "rank1": 0.75, "baseline_mAP": 0.41234, "quality_auc_object": 0.61}
PAB = {"part_iou": 0.3, "bpbreid_mAP": 0.2}  # no mAP, rank1 or baseline_mAP


def _executed(out, notebook: str, headline: dict | None, profile: str = "ci", status: str = "passed") -> None:
    """What a batch leaves for one notebook: its status record and, with a headline, its sidecar."""
    folder = out / "notebooks" / profile
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"notebook": notebook, "profile": profile, "status": status, "duration_s": 12.34, "error": ""}
    (folder / f"{notebook}.status.json").write_text(json.dumps(rec))
    if headline is not None:
        sidecar = results_dir(out, profile, paper_name(notebook)) / "metrics.json"
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"headline": headline}))


def _markdown_row(text: str, notebook: str) -> list[str]:
    row = next(ln for ln in text.splitlines() if f"| {notebook} " in ln)
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.fixture
def out(tmp_path):
    _executed(tmp_path, "01_pab_reid", PAB)
    _executed(tmp_path, "03_qpm", QPM)
    return tmp_path


def test_short_table_has_the_fixed_columns_and_one_row_per_notebook(out):
    table = runner.summary_table(out)
    assert list(table.columns) == SHORT_COLUMNS
    assert list(table.notebook) == ["01_pab_reid", "03_qpm"]
    qpm = table.set_index("notebook").loc["03_qpm"]
    assert (qpm["mAP"], qpm["Rank-1"], qpm["baseline mAP"]) == (50.0, 75.0, 41.2)  # percent, one decimal


def test_a_notebook_without_map_leaves_its_cells_empty(out):
    pab = runner.summary_table(out).set_index("notebook").loc["01_pab_reid"]
    assert all(math.isnan(pab[column]) for column in ["mAP", "Rank-1", "baseline mAP"])
    runner.print_summary(out)
    assert _markdown_row((out / "summary.md").read_text(), "01_pab_reid") == [
        "01_pab_reid", "ci", "passed", "12.3", "", "", "", ""]
    csv_row = pd.read_csv(out / "summary.csv").set_index("notebook").loc["01_pab_reid"]
    assert csv_row[["mAP", "Rank-1", "baseline mAP"]].isna().all()


def test_details_table_has_every_headline_key_once(out):
    details = runner.details_table(out)
    assert list(details.columns) == ["notebook", "profile", "key", "value"]
    expected = {("01_pab_reid", k): v for k, v in PAB.items()} | {("03_qpm", k): v for k, v in QPM.items()}
    assert len(details) == len(expected)
    assert {(row.notebook, row.key): row.value for row in details.itertuples()} == expected  # as registered
    assert set(details.profile) == {"ci"}


def test_summary_command_prints_the_short_table_and_points_to_the_details(out, capsys):
    _executed(out, "05_rganet", None)
    (out / "notebooks" / "ci" / "04_dpm.status.json").write_text('{"notebook": "04_d')  # a write cut short
    assert cli.main(["summary", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _markdown_row(printed, "03_qpm") == ["03_qpm", "ci", "passed", "12.3", "50.0", "75.0", "41.2", ""]
    assert "quality_auc_object" not in printed and "part_iou" not in printed, "details in the short table"
    assert f"every headline metric: {out / 'summary_details.md'}" in printed
    assert "damaged: 04_dpm.status.json" in printed and "Training runs:\n(none)" in printed
    short = pd.read_csv(out / "summary.csv")
    assert list(short.columns) == SHORT_COLUMNS and len(short) == 4
    details = pd.read_csv(out / "summary_details.csv")
    assert len(details) == len(QPM) + len(PAB)
    assert "quality_auc_object" in (out / "summary_details.md").read_text()


def test_a_profile_selects_the_rows_of_both_tables(out):
    _executed(out, "03_qpm", {"mAP": 0.9}, profile="demo")
    assert list(runner.summary_table(out, "demo").mAP) == [90.0]
    assert list(runner.details_table(out, "demo").key) == ["mAP"]
    assert set(runner.details_table(out).profile) == {"ci", "demo"}
