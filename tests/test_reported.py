"""reidlib.reported: every paper file loads and validates, and spot-checked numbers match the paper text."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from reidlib import reported
from reidlib.reported import ReportedError


def available_papers() -> list[str]:
    from importlib import resources

    files = resources.files("reidlib.reported")
    return [p for p in reported.PAPERS if (files / f"{p}.yaml").is_file()]


@pytest.mark.parametrize("paper", available_papers())
def test_every_table_loads_as_a_dataframe(paper):
    data = reported.load(paper)
    assert data["key"] == paper
    ids = reported.tables(paper)
    assert ids and len(ids) == len(set(ids))
    for table_id in ids:
        df = reported.table(paper, table_id)
        assert isinstance(df.columns, pd.MultiIndex) and df.columns.names == ["dataset", "metric"]
        assert df.index.is_unique and len(df) > 0
        assert df.notna().to_numpy().any(), f"{paper} {table_id} holds no number"
        assert set(df.columns.get_level_values("metric")) <= set(reported.METRICS)
        assert df.attrs["kind"] in reported.KINDS


@pytest.mark.parametrize("paper", available_papers())
def test_each_paper_has_its_own_method_in_every_sota_table(paper):
    for table_id in reported.tables(paper):
        df = reported.table(paper, table_id)
        if df.attrs["kind"] == "sota":
            row = reported.paper_method_row(paper, table_id)
            assert row.name == df.attrs["ours"][0] and row.notna().any()


def value(paper, table_id, method, dataset, metric):
    return reported.table(paper, table_id).loc[method, (dataset, metric)]


# (paper, table, row, dataset, metric, number printed in the paper)
SPOT_CHECKS = [
    ("qpm", "Table I", "QPM", "Occluded-Duke", "Rank-1", 64.4),
    ("qpm", "Table I", "QPM", "Occluded-Duke", "mAP", 49.7),
    ("qpm", "Table I", "QPM*", "Occluded-Duke", "Rank-10", 84.4),
    ("qpm", "Table I", "HOReID", "Occluded-Duke", "Rank-1", 55.1),
    ("qpm", "Table II", "QPM", "P-DukeMTMC", "mAP", 74.4),
    ("qpm", "Table III", "QPM", "Partial-iLIDS", "Rank-3", 85.7),
    ("qpm", "Table III", "ISP*", "Partial-REID", "Rank-1", 65.7),
    ("qpm", "Table IV", "PVPM", "P-DukeMTMC", "mAP", 29.2),
    ("qpm", "Table V", "AGFE global(+ISA)", "P-DukeMTMC", "Rank-1", 46.0),
    ("qpm", "Table VI", "SI global", "P-DukeMTMC", "mAP", 13.1),
    ("qpm", "Table VIII", "QPM", "Occluded-Duke", "Params (M)", 29.0),
    ("qpm", "Table XI", "gamma=1.0", "Occluded-Duke", "Rank-1", 58.3),
    ("dpm", "Table 1", "DPM", "Occluded-Duke", "Rank-1", 71.4),
    ("dpm", "Table 1", "DPM", "Occluded-Duke", "mAP", 61.8),
    ("dpm", "Table 1", "DPM", "Occluded-REID", "mAP", 79.7),
    ("dpm", "Table 1", "TransReID*", "Occluded-Duke", "mAP", 59.2),
    ("dpm", "Table 2", "DPM", "DukeMTMC-reID", "mAP", 82.6),
    ("dpm", "Table 2", "MGN", "Market-1501", "Rank-1", 95.7),
    ("dpm", "Table 3", "+DPM+HR", "Occluded-Duke", "Rank-10", 87.2),
    ("dpm", "Table 4", "baseline (Cls=A)", "Occluded-Duke", "Rank-1", 68.6),
    ("dpm", "Table 5", "P + F", "Occluded-Duke", "Rank-10", 85.1),
    ("dpm", "Fig. 5 (alpha)", "alpha=0.5", "Occluded-Duke", "mAP", 61.0),
    ("pab_reid", "Table I", "Ours", "Occluded-Duke", "Rank-1", 72.6),
    ("pab_reid", "Table I", "Ours", "Occluded-REID", "mAP", 87.1),
    ("pab_reid", "Table I", "Ours", "P-DukeMTMC", "Rank-1", 93.1),
    ("pab_reid", "Table I", "CAAO", "Occluded-REID", "mAP", 83.4),
    ("pab_reid", "Table I", "PVPM", "Occluded-Duke", "Rank-1", 47.0),
    ("pab_reid", "Table II", "Ours", "Market-1501", "mAP", 89.5),
    ("pab_reid", "Table III", "w/o Fine-Grained Feature Focuser", "Occluded-Duke", "Rank-1", 67.3),
    ("pab_reid", "Fig. 5", "Triplet loss", "Occluded-Duke", "mAP", 57.1),
    ("bpsema_reid", "Table I", "BPSEMA", "Occluded-Duke", "Rank-1", 68.55),
    ("bpsema_reid", "Table I", "BPSEMA", "Occluded-Duke", "mAP", 54.2),
    ("bpsema_reid", "Table I", "BPSEMA", "P-DukeMTMC", "mAP", 78.84),
    ("bpsema_reid", "Table I", "BoT", "P-DukeMTMC", "Rank-1", 87.0),
    ("bpsema_reid", "Table I", "MHSA", "DukeMTMC-reID", "mAP", 73.1),
    ("bpsema_reid", "Table II", "D2", "Occluded-Duke", "mAP", 52.99),
    ("bpsema_reid", "Table II", "D3", "DukeMTMC-reID", "Rank-1", 89.86),
    ("rganet", "Table I", "RGANet (Ours)", "Occluded-Duke", "Rank-1", 71.6),
    ("rganet", "Table I", "RGANet (Ours)", "Occluded-Duke", "mAP", 62.4),
    ("rganet", "Table I", "RGANet (Ours)", "Occluded-REID", "Rank-1", 86.4),
    ("rganet", "Table I", "MSDPA", "Occluded-REID", "mAP", 77.5),
    ("rganet", "Table II", "RGANet (Ours)", "Partial-iLIDS", "Rank-3", 87.6),
    ("rganet", "Table III", "RGANet (Ours)", "Market-1501", "mAP", 89.8),
    ("rganet", "Table IV", "RGANet (Ours)", "MSMT17", "Rank-1", 88.1),
    ("rganet", "Table V", "Fixed-stripe + IAI", "Occluded-Duke", "mAP", 60.2),
    ("rganet", "Table VI", '"a [CLASS] part of a person."', "Occluded-Duke", "mAP", 59.5),
    ("rganet", "Table VII", "DPM", "Occluded-Duke", "FPS", 98.3),
    ("rganet", "Fig. 4", "Region 3", "Fig. 4 (a)", "beta", 0.08),
]


@pytest.mark.parametrize("paper,table_id,method,dataset,metric,expected", SPOT_CHECKS)
def test_spot_checked_numbers_match_the_paper(paper, table_id, method, dataset, metric, expected):
    if paper not in available_papers():
        pytest.skip(f"{paper}.yaml not written yet")
    assert value(paper, table_id, method, dataset, metric) == pytest.approx(expected)


def test_not_reported_values_are_nan():
    assert math.isnan(value("qpm", "Table I", "Part-Bilinear", "Occluded-Duke", "mAP"))


def test_qpm_text_claims_agree_with_its_tables():
    # "QPM significantly outperforms HOReID by 9.3% and 5.9% in terms of Rank-1 accuracy and mAP"
    df = reported.table("qpm", "Table I")
    gap = df.loc["QPM"] - df.loc["HOReID"]
    assert gap[("Occluded-Duke", "Rank-1")] == pytest.approx(9.3)
    assert gap[("Occluded-Duke", "mAP")] == pytest.approx(5.9)


def test_bpsema_ablation_d1_is_bpbreid_and_d4_is_bpsema():
    sota, ablation = reported.table("bpsema_reid", "Table I"), reported.table("bpsema_reid", "Table II")
    for row, method in (("D1", "BPBreID"), ("D4", "BPSEMA")):
        expected = sota.loc[method, ablation.columns]
        pd.testing.assert_series_equal(ablation.loc[row], expected, check_names=False)


def test_dpm_row_is_the_same_in_dpm_and_rganet_papers():
    ours = reported.paper_method_row("dpm", "Table 1")
    quoted = reported.table("rganet", "Table I").loc["DPM"]
    pd.testing.assert_series_equal(ours, quoted, check_names=False)


def test_rganet_fig4_confidence_is_the_mean_of_alpha_and_beta():
    # Section IV-E: "w is the mean of the alpha and the beta"; printed to two decimals.
    df = reported.table("rganet", "Fig. 4")
    for panel in ("Fig. 4 (a)", "Fig. 4 (b)"):
        mean = (df[(panel, "alpha")] + df[(panel, "beta")]) / 2
        assert (mean - df[(panel, "w")]).abs().max() <= 0.005 + 1e-9


def test_unreadable_values_are_null_with_a_note():
    df = reported.table("rganet", "Table III")
    assert math.isnan(df.loc["MGCAM", ("Market-1501", "Rank-1")])
    assert any(note.startswith("MGCAM: Rank-1 unreadable") for note in df.attrs["notes"])


def test_lookups_accept_display_names_and_loose_ids():
    assert reported.table("QPM", "table  i").attrs["table_id"] == "Table I"
    assert reported.paper_key("PAB-ReID") == "pab_reid"


def test_unknown_paper_and_table_name_the_known_ones():
    with pytest.raises(ReportedError, match="known: pab_reid"):
        reported.load("nope")
    with pytest.raises(ReportedError, match="'Table I'"):
        reported.table("qpm", "Table 99")


def _spec(**overrides):
    spec = {
        "id": "T", "kind": "sota", "datasets": ["Occluded-Duke"], "metrics": ["Rank-1", "mAP"],
        "rows": [{"method": "X", "ours": True, "values": [1.0, 2.0]}],
    }
    spec.update(overrides)
    return spec


def test_validation_accepts_lists_and_nested_mappings():
    nested = _spec(rows=[{"method": "X", "ours": True, "values": {"Occluded-Duke": {"mAP": 2.0}}}])
    reported._validate_table(nested, "t")
    assert nested["rows"][0]["values"] == {"Occluded-Duke": {"Rank-1": None, "mAP": 2.0}}


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"metrics": ["Rank-1", "top1"]}, "unknown metric 'top1'"),
        ({"datasets": ["OccDuke"]}, "unknown dataset 'OccDuke'"),
        ({"rows": [{"method": "X", "ours": True, "values": [1.0]}]}, "1 values for 2 columns"),
        ({"rows": [{"method": "X", "ours": True, "values": {"Market-1501": {"mAP": 1.0}}}]},
         "undeclared column"),
        ({"rows": [{"method": "X", "ours": True, "values": [1.0, 200.0]}]}, "outside 0-100"),
        ({"rows": [{"method": "X", "values": [1.0, 2.0]}]}, "ours: true"),
        ({"kind": "sweep"}, "parameter"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_validation_errors_name_the_problem(overrides, message):
    with pytest.raises(ReportedError, match=message):
        reported._validate_table(_spec(**overrides), "t")
