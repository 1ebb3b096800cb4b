"""reidlib.tables: engine metrics -> reported layout, reproduced-vs-reported comparison, styling, export."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from reidlib import reported, tables
from reidlib.tables import COMPETITOR, DELTA, REPORTED, REPRODUCED, TableError


def test_metrics_table_converts_fractions_to_percent_in_reported_names():
    engine = {"rank1": 0.644, "mAP": 0.497, "epoch": 70, "inference_images_per_s": 213.9,
              "num_valid_queries": 9}
    df = tables.metrics_table({"QPM": engine}, "occluded_duke")
    assert list(df.columns) == [("Occluded-Duke", m) for m in ("Rank-1", "mAP", "FPS")]
    assert df.loc["QPM", ("Occluded-Duke", "Rank-1")] == pytest.approx(64.4)
    assert df.loc["QPM", ("Occluded-Duke", "mAP")] == pytest.approx(49.7)


def test_metrics_table_reads_cmc_curves_and_evaluation_objects():
    cmc = np.linspace(0.5, 1.0, 50)
    result = SimpleNamespace(cmc=cmc, mAP=0.25, mINP=0.1)
    df = tables.metrics_table({"a": result, "b": {"cmc": cmc[:4], "map": 0.3}}, "Market-1501",
                              metrics=["Rank-1", "Rank-5", "mAP", "mINP"])
    assert df.loc["a"].tolist() == pytest.approx([50.0, 100 * cmc[4], 25.0, 10.0])
    b = df.loc["b"]
    assert b[("Market-1501", "Rank-1")] == pytest.approx(50.0)
    assert math.isnan(b[("Market-1501", "Rank-5")]) and math.isnan(b[("Market-1501", "mINP")])


def test_metrics_table_maps_cost_rows():
    df = tables.metrics_table({"m": {"params (M)": 29.0, "inference ms / image": 470.0}}, "occluded_duke")
    assert df.loc["m", ("Occluded-Duke", "Params (M)")] == 29.0
    assert df.loc["m", ("Occluded-Duke", "Inference (s/img)")] == pytest.approx(0.47)


@pytest.mark.parametrize(
    "results,dataset,message",
    [
        ({"m": {"rank1": 64.4}}, "occluded_duke", "not a fraction"),
        ({"m": {"loss": 1.0}}, "occluded_duke", "no known metric"),
        ({"m": {"rank1": 0.5}}, "duke_occ", "unknown dataset"),
        ({"m": 0.5}, "occluded_duke", "expected a dict"),
    ],
)
def test_metrics_table_errors_say_what_to_pass(results, dataset, message):
    with pytest.raises(TableError, match=message):
        tables.metrics_table(results, dataset)


def ablation_example():
    """DPM Table 3 (Occluded-Duke) against two reproduced rows, one under another name."""
    ours = pd.DataFrame(
        [[70.0, 60.0], [65.0, 55.0], [1.0, 2.0]],
        index=pd.Index(["dpm_full", "baseline", "extra"], name="method"),
        columns=pd.MultiIndex.from_tuples([("Occluded-Duke", "Rank-1"), ("Occluded-Duke", "mAP")]),
    )
    return tables.compare(ours, reported.table("dpm", "Table 3"), mapping={"dpm_full": "+DPM+HR+HEM"})


def test_compare_deltas_are_reproduced_minus_reported():
    df = ablation_example()
    delta = df.loc[("+DPM+HR+HEM", DELTA)]
    assert delta[("Occluded-Duke", "Rank-1")] == pytest.approx(70.0 - 71.4)
    assert delta[("Occluded-Duke", "mAP")] == pytest.approx(60.0 - 61.8)
    assert math.isnan(delta[("Occluded-Duke", "Rank-5")])  # not reproduced: no delta
    assert df.loc[("baseline", DELTA), ("Occluded-Duke", "Rank-1")] == pytest.approx(65.0 - 64.8)


def test_compare_orders_rows_and_labels_sources():
    df = ablation_example()
    assert df.index.names == ["method", "source"]
    assert list(df.index) == [
        ("baseline", REPRODUCED), ("baseline", REPORTED), ("baseline", DELTA),
        ("+DPM", REPORTED), ("+DPM+HR", REPORTED),
        ("+DPM+HR+HEM", REPRODUCED), ("+DPM+HR+HEM", REPORTED), ("+DPM+HR+HEM", DELTA),
        ("extra", REPRODUCED),
    ]
    assert list(df.columns) == list(reported.table("dpm", "Table 3").columns)


def test_compare_marks_competitors_of_sota_tables_and_adds_new_columns():
    ours = tables.metrics_table({"QPM": {"rank1": 0.6, "mAP": 0.4}}, "synthocc")
    df = tables.compare(ours, reported.table("qpm", "Table I"))
    sources = dict(zip(*(df.index.get_level_values(level) for level in ("method", "source")), strict=True))
    assert sources["PCB"] == COMPETITOR and sources["QPM*"] == REPORTED
    assert ("QPM", REPRODUCED) in df.index and ("QPM", DELTA) not in df.index  # other data set: no delta
    assert ("SynthOcc", "Rank-1") in df.columns
    assert df.loc[("QPM", REPRODUCED), ("SynthOcc", "Rank-1")] == pytest.approx(60.0)


def test_compare_rejects_bad_inputs():
    reported_df = reported.table("dpm", "Table 3")
    ours = tables.metrics_table({"a": {"rank1": 0.5}, "b": {"rank1": 0.4}}, "occluded_duke")
    with pytest.raises(TableError, match="not reproduced rows"):
        tables.compare(ours, reported_df, mapping={"zzz": "+DPM"})
    with pytest.raises(TableError, match="not reported rows"):
        tables.compare(ours, reported_df, mapping={"a": "zzz"})
    with pytest.raises(TableError, match="same reported row"):
        tables.compare(ours, reported_df, mapping={"a": "+DPM", "b": "+DPM"})
    with pytest.raises(TableError, match="metrics_table"):
        tables.compare(pd.DataFrame({"Rank-1": [1.0]}), reported_df)


def test_style_renders_html_with_bold_best_coloured_deltas_and_dashes():
    html = tables.style(ablation_example()).to_html()
    assert "font-weight: bold" in html and "color: red" in html and "–" in html
    assert "71.4" in html and "-1.4" in html  # delta 70.0 - 71.4, signed


def test_style_bolds_the_lowest_cost():
    css = tables._css(reported.table("qpm", "Table VIII"))
    assert css.loc["QPM", ("Occluded-Duke", "Params (M)")] == "font-weight: bold"  # 29.0M, lower is better
    assert css.loc["QPM", ("Occluded-Duke", "Rank-1")] == "font-weight: bold"
    assert css.loc["PGFA", ("Occluded-Duke", "Params (M)")] == ""


def test_export_writes_csv_markdown_and_latex(tmp_path):
    df = ablation_example()
    paths = tables.export(df, tmp_path / "dpm" / "Table 3", caption="DPM Table 3 & ours")
    assert [p.name for p in paths] == ["Table 3.csv", "Table 3.md", "Table 3.tex"]
    written = sorted(p.name for p in (tmp_path / "dpm").iterdir())
    assert written == sorted(p.name for p in paths)  # no temporary files left behind

    back = pd.read_csv(paths[0], header=[0, 1], index_col=[0, 1])
    pd.testing.assert_frame_equal(back, df, check_names=False)

    markdown = paths[1].read_text()
    assert markdown.startswith("**DPM Table 3 & ours**")
    assert "| +DPM+HR+HEM | delta (reproduced - reported) |" in markdown.replace("  ", " ").replace("  ", " ")
    assert "Occluded-Duke Rank-1" in markdown and "-1.4" in markdown and "–" in markdown

    latex = paths[2].read_text()
    assert "\\caption{DPM Table 3 \\& ours}" in latex
    assert tables._latex_escape("a_b 100% {x}") == "a\\_b 100\\% \\{x\\}"
    assert "\\bfseries 71.4" in latex and "\\color{red} -1.4" in latex and "--" in latex


def test_export_caption_defaults_to_the_reported_caption(tmp_path):
    paths = tables.export(reported.table("qpm", "Table IX"), tmp_path / "k")
    assert "different values of K" in paths[1].read_text().splitlines()[0]


def test_separation_reads_each_ablation_step_against_the_seed_spread():
    ours = {"Baseline": {"mAP": 0.10}, "Baseline(+triplet)": {"mAP": 0.11}, "Part branch": {"mAP": 0.20},
            "GAP global": {"mAP": 0.25}, "seed spread of QPM (max - min, seeds 0-1)": {"mAP": 0.02}}
    df = tables.compare(tables.metrics_table(ours, "synthocc", ["mAP"]), reported.table("qpm", "Table V"))
    sep = tables.separation(df)
    assert list(sep.index) == ["Baseline -> Baseline(+triplet)", "Baseline(+triplet) -> Part branch",
                               "Part branch -> GAP global"]
    # paper (Occluded-Duke mAP): 34.8 -> 37.0 -> 46.7 -> 31.7
    assert sep["paper (Occluded-Duke)"].tolist() == pytest.approx([2.2, 9.7, -15.0])
    assert sep["ours (SynthOcc)"].tolist() == pytest.approx([1.0, 9.0, 5.0])
    assert sep["verdict"].tolist() == ["within seed spread", "as in the paper", "reversed"]
    # a step the paper reports as no change at all has a verdict of its own
    table6 = reported.table("qpm", "Table VI").copy()
    table6.loc["SI global"] = table6.loc["GAP global"]
    ours = {"GAP global": {"mAP": 0.30}, "SI global": {"mAP": 0.40}, "seed spread": {"mAP": 0.01}}
    sep = tables.separation(tables.compare(tables.metrics_table(ours, "synthocc", ["mAP"]), table6))
    assert sep.loc["GAP global -> SI global", "verdict"] == "the paper shows none"
    with pytest.raises(TableError, match="spread_row"):
        alone = tables.metrics_table({"Baseline": {"mAP": 0.1}}, "synthocc", ["mAP"])
        tables.separation(tables.compare(alone, reported.table("qpm", "Table V")))


def test_separation_can_read_the_papers_other_data_set():
    """BPSEMA-ReID's Table II reports DukeMTMC-reID first; SynthOcc's occluded protocol compares with its
    Occluded-Duke column."""
    ours = {"D1": {"mAP": 0.30}, "D2": {"mAP": 0.20}, "seed spread": {"mAP": 0.01}}
    table2 = reported.table("bpsema_reid", "Table II")
    df = tables.compare(tables.metrics_table(ours, "synthocc", ["mAP"]), table2)
    assert tables.separation(df)["paper (DukeMTMC-reID)"].tolist() == pytest.approx([0.6])
    occluded = tables.separation(df, paper_dataset="occluded_duke")
    assert occluded["paper (Occluded-Duke)"].tolist() == pytest.approx([52.99 - 54.1])
    assert occluded["verdict"].tolist() == ["as in the paper"]
    with pytest.raises(TableError, match="no 'Market-1501' column"):
        tables.separation(df, paper_dataset="market1501")


def table5_with(ours_map: dict[str, float], reported_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """QPM Table V (paper mAP on Occluded-Duke: Baseline 34.8, Baseline(+triplet) 37.0, Part branch 46.7,
    GAP global 31.7) beside our mAP (fractions) and a seed spread of 2 points."""
    ours = {name: {"mAP": value} for name, value in ours_map.items()}
    ours["seed spread of QPM (max - min, seeds 0-1)"] = {"mAP": 0.02}
    return tables.compare(tables.metrics_table(ours, "synthocc", ["mAP"]),
                          reported.table("qpm", "Table V") if reported_table is None else reported_table)


OURS_T5 = {"Baseline": 0.10, "Baseline(+triplet)": 0.11, "Part branch": 0.20, "GAP global": 0.21}


def test_ordering_share_counts_every_pair_of_rows_against_the_seed_spread():
    # 4 rows -> 6 pairs (paper / ours differences, spread 2):
    #   B -> B+t +2.2 / +1 same sign within;  B -> Part +11.9 / +10 kept;  B -> GAP -3.1 / +11 reversed
    #   B+t -> Part +9.7 / +9 kept;  B+t -> GAP -5.3 / +10 reversed;  Part -> GAP -15 / +1 reversed within
    share = tables.ordering_share(table5_with(OURS_T5))
    assert share == {"pairs": 6, "paper shows none": 0, "kept": 2, "same sign within spread": 1,
                     "reversed beyond spread": 2, "reversed within spread": 1, "share kept": 2 / 6,
                     "same sign": 3, "share same sign": 3 / 6}
    # the consecutive pairs among them are separation's steps
    steps = tables.separation(table5_with(OURS_T5))["verdict"].tolist()
    assert steps == ["within seed spread", "as in the paper", "within seed spread"]


def test_ordering_share_leaves_pairs_the_paper_shows_equal_out_of_the_shares():
    paper = reported.table("qpm", "Table V").copy()
    paper.loc["Baseline(+triplet)"] = paper.loc["Baseline"]
    share = tables.ordering_share(table5_with(OURS_T5, paper))
    assert (share["pairs"], share["paper shows none"]) == (6, 1)
    # B+t now scores as B in the paper: B+t -> Part +11.9 / +9 kept, B+t -> GAP -3.1 / +10 reversed
    assert (share["kept"], share["reversed beyond spread"], share["same sign within spread"]) == (2, 2, 0)
    assert share["share kept"] == pytest.approx(2 / 5) and share["share same sign"] == pytest.approx(2 / 5)
    single = tables.ordering_share(table5_with({"Baseline": 0.1}))
    assert single["pairs"] == 0 and math.isnan(single["share kept"])
    with pytest.raises(TableError, match="spread_row"):
        tables.ordering_share(tables.compare(tables.metrics_table({"Baseline": {"mAP": 0.1}}, "synthocc",
                                                                  ["mAP"]), reported.table("qpm", "Table V")))


def test_read_export_gives_back_the_table_with_its_index_levels(tmp_path):
    df = table5_with(OURS_T5)
    tables.export(df, tmp_path / "t5")
    back = tables.read_export(tmp_path / "t5.csv")
    pd.testing.assert_frame_equal(back, df, check_names=True, check_exact=False)
    tables.export(reported.table("qpm", "Table VI"), tmp_path / "t6")
    assert tables.read_export(tmp_path / "t6.csv").index.names == ["method"]
    tables.export(tables.separation(df), tmp_path / "steps")
    with pytest.raises(TableError, match="not an exported"):
        tables.read_export(tmp_path / "steps.csv")


def test_reproduction_status_lists_orderings_headlines_and_papers_not_run(tmp_path):
    qpm = tmp_path / "results" / "demo" / "qpm"
    tables.export(table5_with(OURS_T5), qpm / "table5")
    tables.export(tables.separation(table5_with(OURS_T5)), qpm / "table5_steps")  # not an ablation table
    table6 = {"GAP global": {"mAP": 0.30}, "SI global": {"mAP": 0.20}, "AGFE global": {"mAP": 0.40},
              "seed spread": {"mAP": 0.01}}
    tables.export(tables.compare(tables.metrics_table(table6, "synthocc", ["mAP"]),
                                 reported.table("qpm", "Table VI")), qpm / "any_name")
    tables.export(tables.metrics_table({"QPM": {"mAP": 0.4}}, "synthocc"), qpm / "plain")  # no source level
    # reported rows only (a table whose reproduced column group sits in `more`, or not run): not ablation
    none_run = tables.metrics_table({}, "synthocc", ["mAP"])
    tables.export(tables.compare(none_run, reported.table("qpm", "Table V")), qpm / "reported_only")
    (qpm / "metrics.json").write_text(json.dumps(
        {"paper": "qpm", "headline": {"mAP": 0.45, "rank1": 0.6, "baseline_mAP": 0.3}}))
    dpm = tmp_path / "results" / "demo" / "dpm"
    dpm.mkdir(parents=True)
    (dpm / "metrics.json").write_text(json.dumps({"paper": "dpm", "headline": {"mAP": 0.5}}))

    status = tables.reproduction_status(tmp_path / "results", "demo")
    assert status.index.names == ["paper", "entry"]
    assert list(status.loc["qpm"].index) == ["Table V", "Table VI", "headline mAP", "headline Rank-1"]
    t5, t6 = status.loc[("qpm", "Table V")], status.loc[("qpm", "Table VI")]
    assert (t5["file"], t5["pairs"], t5["kept"]) == ("table5.csv", 6, 2)
    assert t5["share kept"] == pytest.approx(2 / 6)
    # Table VI (26.6 < 31.7 < 42.2): ours 20 < 30 < 40, every pair kept
    assert (t6["file"], t6["pairs"], t6["share kept"]) == ("any_name.csv", 3, 1.0)
    head = status.loc[("qpm", "headline mAP")]
    assert (head["reproduced"], head["reported"]) == (pytest.approx(45.0), 49.7)
    assert status.loc[("qpm", "headline Rank-1"), "reported"] == 64.4
    assert status.loc[("dpm", "headline mAP"), "reported"] == 61.8
    for paper in ("pab_reid", "bpsema_reid", "rganet"):
        assert status.loc[(paper, "-"), "status"] == "not run"
    assert (status.loc[["qpm", "dpm"], "status"] == "run").all()
