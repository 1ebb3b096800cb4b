"""The numbers the five papers report, as data: one YAML file per paper, validated on load.

Every numeric table of a paper (state of the art, ablations, hyper-parameter sweeps, cost) is transcribed
with all its rows, competitors included, so a notebook can put its reproduced rows next to the paper's.

YAML schema (``reidlib/reported/<key>.yaml``)::

    paper: QPM                      # display name        key: qpm (file stem)
    title, authors, venue: ...      method: QPM           # the paper's own method
    notes: [..]                     figures_without_numbers: [{id, caption}]   # optional
    tables:
      - id: "Table I"               # exactly as the paper numbers it
        caption: ...
        kind: sota | ablation | sweep | cost | scores
        datasets: [Occluded-Duke]   # column groups (canonical names, see DATASETS; free labels for `scores`)
        metrics: [Rank-1, mAP]      # canonical names, see METRICS
        columns: [[Occluded-Duke, Rank-1], ..]   # optional; default: every dataset x every metric
        labels: {Rank-1: R-1}       # optional: how the paper itself labels a canonical name
        protocol: ...               # optional: str or {dataset: str}, e.g. "transfer: trained on Market-1501"
        parameter: K                # sweeps only: the swept hyper-parameter, present in every row's `setting`
        notes: [..]                 # optional
        rows:
          - {method: PCB, ref: "[3]", group: holistic, values: [42.6, 33.7]}    # values in column order
          - {method: QPM, ours: true, values: {Occluded-Duke: {Rank-1: 64.4, mAP: 49.7}}}  # or nested
        # optional row keys: ours (the paper's own method), group, ref, venue, backbone,
        # setting ({switch: value} for ablations and sweeps), note (why a value is odd or missing)

Values are percent for ranking metrics (as printed); `null` is a value the paper does not report ("-"),
or, when the row has a `note`, one that could not be read from the PDF text.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd
import yaml

PAPERS = ("pab_reid", "bpsema_reid", "qpm", "dpm", "rganet")
KINDS = ("sota", "ablation", "sweep", "cost", "scores")


@dataclass(frozen=True)
class Metric:
    unit: str
    higher_is_better: bool | None
    description: str


# The one vocabulary of metric names; reidlib.tables.metrics_table maps engine outputs onto it.
METRICS: dict[str, Metric] = {
    **{
        f"Rank-{k}": Metric("%", True, f"CMC at rank {k}, single query")
        for k in (1, 3, 5, 10, 20)
    },
    "mAP": Metric("%", True, "mean average precision"),
    "mINP": Metric("%", True, "mean inverse negative penalty"),
    "Train (s/iter)": Metric("s/iter", False, "training time per iteration"),
    "Inference (s/img)": Metric("s/img", False, "inference time per query image, matching included"),
    "FPS": Metric("img/s", True, "inference images per second"),
    "Params (M)": Metric("M", False, "parameters, millions"),
    "GFLOPs": Metric("GFLOPs", False, "inference FLOPs per image, billions"),
    "w": Metric("score", None, "RGANet final region confidence score"),
    "alpha": Metric("score", None, "RGANet discrimination-aware score"),
    "beta": Metric("score", None, "RGANet invariance-aware score"),
}
PERCENT_METRICS = frozenset(name for name, m in METRICS.items() if m.unit == "%")

# Canonical data set names used as column groups -> name for reidlib.data.load_dataset.
DATASETS: dict[str, str] = {
    "Market-1501": "market1501",
    "DukeMTMC-reID": "dukemtmc",
    "Occluded-Duke": "occluded_duke",
    "Occluded-REID": "occluded_reid",
    "Partial-REID": "partial_reid",
    "Partial-iLIDS": "partial_ilids",
    "P-DukeMTMC": "p_dukemtmc",
    "MSMT17": "msmt17",
    "SynthOcc": "synthocc",
}

_TOP_KEYS = {"paper", "key", "title", "authors", "venue", "method", "notes", "figures_without_numbers",
             "tables"}
_TABLE_KEYS = {"id", "caption", "kind", "datasets", "metrics", "columns", "labels", "protocol", "parameter",
               "notes", "rows"}
_ROW_KEYS = {"method", "ours", "group", "ref", "venue", "backbone", "setting", "note", "values"}


class ReportedError(ValueError):
    """A reported-numbers file or lookup is wrong; the message names the place and the fix."""


def paper_key(paper: str) -> str:
    """'QPM', 'PAB-ReID', 'pab_reid' -> the file stem ('qpm', 'pab_reid')."""
    key = re.sub(r"[\s-]+", "_", paper.strip()).lower()
    if key not in PAPERS:
        raise ReportedError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    return key


def load(paper: str) -> dict:
    """The paper's validated data; each row's `values` normalised to {dataset: {metric: float | None}}."""
    return copy.deepcopy(_load_cached(paper_key(paper)))


def tables(paper: str) -> list[str]:
    """Table ids of the paper, in the paper's order."""
    return [t["id"] for t in _load_cached(paper_key(paper))["tables"]]


def table_spec(paper: str, table_id: str) -> dict:
    """The table's metadata and rows as stored (a copy)."""
    return copy.deepcopy(_find_table(paper_key(paper), table_id))


def table(paper: str, table_id: str) -> pd.DataFrame:
    """Rows = methods (paper order), columns = MultiIndex (dataset, metric), values as printed.

    `df.attrs` carries the table's metadata: paper, table_id, caption, kind, ours (names of the paper's own
    method rows), groups and settings ({method: ...}), parameter (sweeps), protocol, labels, and notes.
    """
    key = paper_key(paper)
    spec = _find_table(key, table_id)
    columns = pd.MultiIndex.from_tuples([tuple(c) for c in spec["columns"]], names=["dataset", "metric"])
    data = [[row["values"][d][m] for d, m in spec["columns"]] for row in spec["rows"]]
    index = pd.Index([row["method"] for row in spec["rows"]], name="method")
    df = pd.DataFrame(data, index=index, columns=columns, dtype=float)
    df.attrs = {
        "paper": key,
        "table_id": spec["id"],
        "caption": spec.get("caption", ""),
        "kind": spec["kind"],
        "ours": [row["method"] for row in spec["rows"] if row.get("ours")],
        "groups": {row["method"]: row["group"] for row in spec["rows"] if "group" in row},
        "settings": {row["method"]: row["setting"] for row in spec["rows"] if "setting" in row},
        "parameter": spec.get("parameter"),
        "protocol": spec.get("protocol"),
        "labels": dict(spec.get("labels") or {}),
        "notes": list(spec.get("notes", []))
        + [f"{r['method']}: {r['note']}" for r in spec["rows"] if "note" in r],
    }
    return df


def paper_method_row(paper: str, table_id: str) -> pd.Series:
    """The first row marked `ours` (the paper's own method); `.name` is its row name."""
    df = table(paper, table_id)
    if not df.attrs["ours"]:
        raise ReportedError(
            f"{paper_key(paper)} {table_id!r} has no row of the paper's own method (ours: true)"
        )
    return df.loc[df.attrs["ours"][0]]


# ---------------------------------------------------------------------------------------------- loading


@functools.cache
def _load_cached(key: str) -> dict:
    name = f"{key}.yaml"
    resource = resources.files(__package__) / name
    if not resource.is_file():
        raise ReportedError(
            f"reidlib/reported/{name} is missing; it ships with the package (reinstall reidlib)"
        )
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    _validate_paper(data, key, where=f"reidlib/reported/{name}")
    return data


def _find_table(key: str, table_id: str) -> dict:
    data = _load_cached(key)
    wanted = _norm_id(table_id)
    for spec in data["tables"]:
        if _norm_id(spec["id"]) == wanted:
            return spec
    ids = ", ".join(repr(t["id"]) for t in data["tables"])
    raise ReportedError(f"{key} has no table {table_id!r}; its tables: {ids}")


def _norm_id(table_id: str) -> str:
    return re.sub(r"\s+", " ", str(table_id)).strip().lower()


def _fail(where: str, problem: str, fix: str) -> None:
    raise ReportedError(f"{where}: {problem}; {fix}")


def _check_keys(obj: Any, allowed: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        _fail(where, f"expected a mapping, got {type(obj).__name__}",
              "see the schema in reidlib/reported/__init__.py")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        _fail(where, f"unknown key(s) {unknown}", f"allowed keys: {sorted(allowed)}")


def _validate_paper(data: Any, key: str, where: str) -> None:
    _check_keys(data, _TOP_KEYS, where)
    for required in ("paper", "key", "title", "method", "tables"):
        if required not in data:
            _fail(where, f"missing {required!r}",
                  "every paper file needs paper, key, title, method and tables")
    if data["key"] != key:
        _fail(where, f"key {data['key']!r} differs from the file name", f"set key: {key}")
    ids: set[str] = set()
    for i, spec in enumerate(data["tables"]):
        table_where = f"{where}: table #{i} ({spec.get('id', '?') if isinstance(spec, dict) else '?'})"
        _validate_table(spec, table_where)
        norm = _norm_id(spec["id"])
        if norm in ids:
            _fail(table_where, f"table id {spec['id']!r} appears twice", "give every table a distinct id")
        ids.add(norm)


def _validate_table(spec: Any, where: str) -> None:
    _check_keys(spec, _TABLE_KEYS, where)
    for required in ("id", "kind", "datasets", "metrics", "rows"):
        if required not in spec:
            _fail(where, f"missing {required!r}", "tables need id, kind, datasets, metrics and rows")
    if spec["kind"] not in KINDS:
        _fail(where, f"kind {spec['kind']!r} is not allowed", f"use one of {list(KINDS)}")
    for metric in spec["metrics"]:
        if metric not in METRICS:
            _fail(where, f"unknown metric {metric!r}",
                  f"use one of {list(METRICS)} (add new ones to METRICS)")
    if spec["kind"] != "scores":  # `scores` tables group columns by figure panel, not by data set
        for dataset in spec["datasets"]:
            if dataset not in DATASETS:
                _fail(where, f"unknown dataset {dataset!r}", f"use one of {list(DATASETS)}")
    columns = spec.get("columns") or [[d, m] for d in spec["datasets"] for m in spec["metrics"]]
    for column in columns:
        if len(column) != 2 or column[0] not in spec["datasets"] or column[1] not in spec["metrics"]:
            _fail(where, f"column {column!r} is not a declared [dataset, metric] pair",
                  f"declare it in datasets {spec['datasets']} and metrics {spec['metrics']}")
    spec["columns"] = [list(c) for c in columns]
    for label in spec.get("labels") or {}:
        if label not in spec["datasets"] and label not in spec["metrics"]:
            _fail(where, f"label for {label!r}, which is neither a declared dataset nor metric",
                  "labels map a declared canonical name to the paper's own spelling")
    if spec["kind"] == "sweep" and not spec.get("parameter"):
        _fail(where, "a sweep without `parameter`", "name the swept hyper-parameter, e.g. parameter: K")
    if not spec["rows"]:
        _fail(where, "no rows", "transcribe every row of the table")
    seen: set[str] = set()
    for row in spec["rows"]:
        _validate_row(row, spec, where)
        if row["method"] in seen:
            _fail(where, f"row {row['method']!r} appears twice", "row names must be unique within a table")
        seen.add(row["method"])
    if spec["kind"] == "sota" and not any(row.get("ours") for row in spec["rows"]):
        _fail(where, "no row marked `ours: true`", "mark the paper's own method row(s)")


def _validate_row(row: Any, spec: dict, table_where: str) -> None:
    where = f"{table_where}: row {row.get('method', '?') if isinstance(row, dict) else row!r}"
    _check_keys(row, _ROW_KEYS, where)
    if not isinstance(row.get("method"), str) or not row["method"].strip():
        _fail(where, "missing `method` name", "every row needs the name the paper prints")
    if "values" not in row:
        _fail(where, "missing `values`",
              "give a list in column order or a {dataset: {metric: value}} mapping")
    if not isinstance(row.get("ours", False), bool):
        _fail(where, f"ours={row['ours']!r}", "ours must be true or false")
    if spec["kind"] == "sweep" and spec["parameter"] not in (row.get("setting") or {}):
        _fail(where, f"no setting for the swept parameter {spec['parameter']!r}",
              f"add setting: {{{spec['parameter']}: <value>}}")
    columns = spec["columns"]
    values = row["values"]
    if isinstance(values, list):
        if len(values) != len(columns):
            _fail(where, f"{len(values)} values for {len(columns)} columns {columns}",
                  "give one value per column (null where the paper prints '-')")
        pairs = list(zip(map(tuple, columns), values, strict=True))
    elif isinstance(values, dict):
        declared = {tuple(c) for c in columns}
        pairs = []
        for dataset, by_metric in values.items():
            if not isinstance(by_metric, dict):
                _fail(where, f"values[{dataset!r}] is not a mapping", "use {dataset: {metric: value}}")
            for metric, value in by_metric.items():
                if (dataset, metric) not in declared:
                    _fail(where, f"value for undeclared column ({dataset!r}, {metric!r})",
                          f"declare it in the table's datasets/metrics/columns; declared: {sorted(declared)}")
                pairs.append(((dataset, metric), value))
    else:
        _fail(where, f"values is a {type(values).__name__}", "use a list or a nested mapping")
    normalised: dict[str, dict[str, float | None]] = {d: {m: None for dd, m in columns if dd == d}
                                                      for d in spec["datasets"]}
    for (dataset, metric), value in pairs:
        normalised[dataset][metric] = _check_value(value, metric, f"{where} [{dataset} {metric}]")
    row["values"] = normalised


def _check_value(value: Any, metric: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        _fail(where, f"value {value!r} is not a number", "write the printed number, or null")
    if metric in PERCENT_METRICS and not 0 <= value <= 100:
        _fail(where, f"{value} is outside 0-100", "ranking metrics are percent, as printed in the papers")
    return float(value)
