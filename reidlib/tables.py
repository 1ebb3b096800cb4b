"""Reproduced-vs-reported tables: our rows beside the paper's, with deltas, styled and exported.

Layout shared with `reidlib.reported.table`: rows are methods, columns a MultiIndex (dataset, metric) with
the metric names of `reidlib.reported.METRICS`, ranking metrics in percent. `metrics_table` brings engine
results (fractions) into that layout; `compare` stacks both with a `source` level and adds delta rows;
`style` and `export` render the result.

    reproduced = metrics_table({"QPM": run.metrics}, "occluded_duke")
    df = compare(reproduced, reported.table("qpm", "Table I"))
    export(df, "runs/qpm/table_I")          # table_I.csv, table_I.md, table_I.tex
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from reidlib.reported import DATASETS, METRICS, PERCENT_METRICS
from reidlib.runs import atomic_write_text

REPRODUCED = "reproduced"
REPORTED = "reported"  # the paper's own experiments: its method, its ablations and sweeps
COMPETITOR = "competitor (reported)"  # other methods' numbers as the paper quotes them
DELTA = "delta (reproduced - reported)"
SOURCES = (REPRODUCED, REPORTED, COMPETITOR, DELTA)

# Table kinds whose rows, apart from the paper's own, are other people's methods.
_KINDS_WITH_COMPETITORS = ("sota", "cost")

# The one mapping from engine / cost-measurement keys to reported metric names: key -> (name, scale).
# Ranking metrics come from the engine as fractions and are reported in percent.
ENGINE_METRICS: dict[str, tuple[str, float]] = {
    **{f"rank{k}": (f"Rank-{k}", 100.0) for k in (1, 3, 5, 10, 20)},
    "map": ("mAP", 100.0),
    "minp": ("mINP", 100.0),
    # reidlib.cost.cost_row keys (measured on this machine, so comparable in kind, not in value)
    "params (M)": ("Params (M)", 1.0),
    "GFLOPs / image": ("GFLOPs", 1.0),
    "train s / iter": ("Train (s/iter)", 1.0),
    "inference ms / image": ("Inference (s/img)", 1e-3),
    "fps": ("FPS", 1.0),
    "inference_images_per_s": ("FPS", 1.0),  # reidlib.engine.inference.evaluate_model
}
CMC_RANKS = (1, 3, 5, 10, 20)  # ranks read off a `cmc` curve


class TableError(ValueError):
    """A table has the wrong layout or a metric the wrong scale; the message says how to fix it."""


# ------------------------------------------------------------------------------------ engine metrics


def dataset_name(dataset: str) -> str:
    """'occluded_duke' or 'Occluded-Duke' -> 'Occluded-Duke' (the column-group name of reported tables)."""
    for display, loader in DATASETS.items():
        if dataset.lower() in (display.lower(), loader):
            return display
    raise TableError(f"unknown dataset {dataset!r}; use one of {list(DATASETS)} or {list(DATASETS.values())}")


def _engine_key(key: str) -> tuple[str, float] | None:
    if key in ENGINE_METRICS:
        return ENGINE_METRICS[key]
    norm = re.sub(r"[\s_\-@]", "", key).lower()
    norm = re.sub(r"^(r|top)(\d+)$", r"rank\2", norm)
    return ENGINE_METRICS.get(norm)


def _as_mapping(raw: Any, where: str) -> Mapping:
    if isinstance(raw, Mapping):
        return raw
    if hasattr(raw, "cmc") and hasattr(raw, "mAP"):  # the object reidlib.evaluation.evaluate returns
        return {"cmc": raw.cmc, "mAP": raw.mAP, "mINP": getattr(raw, "mINP", None)}
    raise TableError(f"{where}: expected a dict of metrics or an evaluation result, got {type(raw).__name__}")


def _scaled(value: Any, name: str, scale: float, where: str) -> float:
    value = float(value)
    if name in PERCENT_METRICS and not 0.0 <= value <= 1.0:
        raise TableError(
            f"{where}: {name} = {value} is not a fraction; metrics_table expects the engine's fractions "
            "(0-1) and converts them to percent"
        )
    return value * scale


def _reported_metrics(raw: Any, where: str) -> dict[str, float]:
    metrics = _as_mapping(raw, where)
    out: dict[str, float] = {}
    cmc = metrics.get("cmc")
    if cmc is not None:
        cmc = np.asarray(cmc, dtype=float).ravel()
        for k in CMC_RANKS:
            if len(cmc) >= k:
                out[f"Rank-{k}"] = _scaled(cmc[k - 1], f"Rank-{k}", 100.0, where)
    for key, value in metrics.items():
        target = None if key == "cmc" else _engine_key(str(key))
        if target is None or value is None:
            continue  # other entries of a metrics.json (epoch, losses, ...) are not table columns
        name, scale = target
        out[name] = _scaled(value, name, scale, where)
    if not out:
        raise TableError(
            f"{where}: no known metric among {sorted(map(str, metrics))}; "
            f"expected a `cmc` curve or keys like {sorted(ENGINE_METRICS)}"
        )
    return out


def metrics_table(
    results: Mapping[str, Any], dataset: str, metrics: Sequence[str] | None = None, label: str | None = None
) -> pd.DataFrame:
    """Engine results -> a table laid out like the reported ones.

    results: {row name: {metric: fraction}} (keys like rank1 / mAP / mINP, or a `cmc` curve) or
    {row name: evaluation result}; cost keys of `reidlib.cost.cost_row` are mapped too.
    metrics: the columns to keep, in order (e.g. the reported table's metrics); default: all found.
    label: the column group's name (default: the data set's display name), e.g. for another protocol
    of the same data set.
    """
    name = label or dataset_name(dataset)
    rows = {method: _reported_metrics(raw, f"results[{method!r}]") for method, raw in results.items()}
    if metrics is None:
        order = [m for m in METRICS if any(m in row for row in rows.values())]
    else:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise TableError(f"unknown metric(s) {unknown}; use names from {list(METRICS)}")
        order = list(metrics)
    columns = pd.MultiIndex.from_product([[name], order], names=["dataset", "metric"])
    data = [[row.get(metric, math.nan) for metric in order] for row in rows.values()]
    df = pd.DataFrame(data, index=pd.Index(list(rows), name="method"), columns=columns, dtype=float)
    df.attrs = {"kind": REPRODUCED, "dataset": name}
    return df


# ------------------------------------------------------------------------------------------- compare


def _check_layout(df: Any, name: str) -> None:
    layout_ok = isinstance(df, pd.DataFrame) and isinstance(df.columns, pd.MultiIndex)
    if not layout_ok or df.columns.nlevels != 2:
        raise TableError(
            f"{name} must be a DataFrame with (dataset, metric) MultiIndex columns; build it with "
            "reidlib.tables.metrics_table(...) or reidlib.reported.table(...)"
        )
    if not df.index.is_unique:
        dupes = sorted(set(df.index[df.index.duplicated()]))
        raise TableError(f"{name} has duplicate row names {dupes}; row names must be unique")


def _reported_source(reported: pd.DataFrame, method: str, matched: set[str]) -> str:
    kind = reported.attrs.get("kind")
    if kind is None:  # a hand-made table: only rows we reproduced count as the paper's own
        return REPORTED if method in matched else COMPETITOR
    if kind in _KINDS_WITH_COMPETITORS and method not in reported.attrs.get("ours", []):
        return COMPETITOR
    return REPORTED


def compare(
    reproduced: pd.DataFrame, reported: pd.DataFrame, mapping: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Our rows and the paper's in one table with a (method, source) row index.

    Rows follow the reported table; a reproduced row sits just above the reported row of the same name
    (after `mapping`: {reproduced name: reported name}), followed by a delta row (reproduced - reported)
    where both have a value for the same (dataset, metric). Reproduced rows with no reported counterpart
    come last. Columns: the reported table's, then any the reproduced table adds (e.g. another dataset).
    Sources: 'reproduced', 'reported' (the paper's own method, ablation and sweep rows), 'competitor
    (reported)' (other methods as the paper quotes them), and the delta rows.
    """
    _check_layout(reproduced, "reproduced")
    _check_layout(reported, "reported")
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(reproduced.index))
    if unknown:
        raise TableError(f"mapping keys {unknown} are not reproduced rows; rows: {list(reproduced.index)}")
    missing = sorted(set(mapping.values()) - set(reported.index))
    if missing:
        raise TableError(f"mapping targets {missing} are not reported rows; rows: {list(reported.index)}")
    ours = reproduced.rename(index=lambda name: mapping.get(name, name))
    if not ours.index.is_unique:
        raise TableError("two reproduced rows map to the same reported row; map each to a distinct row")

    extra = [c for c in ours.columns if c not in reported.columns]
    columns = pd.MultiIndex.from_tuples(list(reported.columns) + extra, names=["dataset", "metric"])
    ours = ours.reindex(columns=columns)
    theirs = reported.reindex(columns=columns)
    matched = set(ours.index) & set(theirs.index)

    rows: list[tuple[str, str, pd.Series]] = []
    for method in theirs.index:
        source = _reported_source(reported, method, matched)
        if method in matched:
            delta = ours.loc[method] - theirs.loc[method]
            rows += [(method, REPRODUCED, ours.loc[method]), (method, source, theirs.loc[method])]
            if delta.notna().any():
                rows.append((method, DELTA, delta))
        else:
            rows.append((method, source, theirs.loc[method]))
    rows += [(method, REPRODUCED, ours.loc[method]) for method in ours.index if method not in matched]

    index = pd.MultiIndex.from_tuples([(m, s) for m, s, _ in rows], names=["method", "source"])
    data = np.array([series.to_numpy(dtype=float) for *_, series in rows]).reshape(len(rows), len(columns))
    out = pd.DataFrame(data, index=index, columns=columns)
    out.attrs = {**reported.attrs, "compared": True}
    return out


SPREAD_PREFIX = "seed spread"  # Workbook.ablation_table's label of the seed-spread row


@dataclass(frozen=True)
class _AblationValues:
    """One metric of an ablation table: the paper's and our values of the rows both have (paper order),
    our seed spread, and the data sets they were read on."""

    paper: pd.Series
    ours: pd.Series
    spread: float
    paper_data: str
    ours_data: str


def _ablation_values(table: pd.DataFrame, metric: str, paper_dataset: str | None) -> _AblationValues:
    methods = list(dict.fromkeys(table.index.get_level_values("method")))
    spread_rows = [m for m in methods if m.startswith(SPREAD_PREFIX)]
    if not spread_rows:
        raise TableError("the table has no seed-spread row: build it with "
                         "Workbook.ablation_table(..., spread_row=...)")
    ours_by_data = table.xs(REPRODUCED, level="source").xs(metric, level="metric", axis=1)
    ours_data = ours_by_data.columns[ours_by_data.notna().any()][0]
    spread = float(ours_by_data.loc[spread_rows[0], ours_data])
    paper = table.xs(REPORTED, level="source").xs(metric, level="metric", axis=1)
    first = paper.columns[paper.notna().any()][0]
    paper_data = first if paper_dataset is None else dataset_name(paper_dataset)
    if paper_data not in paper.columns:
        raise TableError(f"the paper's table has no {paper_data!r} column; it has {list(paper.columns)}")
    both = [m for m in methods if m in paper.index and m in ours_by_data.index
            and not math.isnan(paper.loc[m, paper_data]) and not math.isnan(ours_by_data.loc[m, ours_data])]
    return _AblationValues(paper.loc[both, paper_data], ours_by_data.loc[both, ours_data], spread,
                           paper_data, ours_data)


def separation(table: pd.DataFrame, metric: str = "mAP", paper_dataset: str | None = None) -> pd.DataFrame:
    """Which of an ablation table's steps our runs reproduce. Reading the paper's table down, each row is
    compared with the row above it (both with a reported and a reproduced value): the paper's difference
    in `metric` on `paper_dataset` (default: its first data set; e.g. "Occluded-Duke" for SynthOcc's
    occluded protocol), ours on our data set, and a verdict against the table's seed-spread
    row (`Workbook.ablation_table(..., spread_row=...)`): "as in the paper" or "reversed" when our
    difference is larger than the spread ("the paper shows none" when its difference is 0), "within seed
    spread" (not shown by our runs) otherwise."""
    values = _ablation_values(table, metric, paper_dataset)
    spread, rows = values.spread, {}
    names = list(values.paper.index)
    for above, row in zip(names[:-1], names[1:], strict=True):
        theirs = float(values.paper[row] - values.paper[above])
        ours = float(values.ours[row] - values.ours[above])
        verdict = ("within seed spread" if abs(ours) <= spread else "the paper shows none" if theirs == 0
                   else "as in the paper" if ours * theirs > 0 else "reversed")
        rows[f"{above} -> {row}"] = [theirs, ours, spread, verdict]
    columns = [f"paper ({values.paper_data})", f"ours ({values.ours_data})", "seed spread", "verdict"]
    out = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    return out.rename_axis(index="step", columns=f"{metric} difference")


def ordering_share(table: pd.DataFrame, metric: str = "mAP", paper_dataset: str | None = None) -> dict:
    """How much of an ablation table's ordering our runs keep: over every PAIR of the paper's rows that
    we reproduced (not only consecutive steps, as `separation` reads them), the pairs where our
    difference in `metric` has the paper's sign and exceeds the seed-spread row ("kept"), has its sign
    but lies within the spread, or has the other sign (reversed) beyond or within the spread. Pairs the
    paper shows as equal are counted apart and left out of the shares. Data sets as in `separation`.

    Returns {"pairs", "paper shows none", "kept", "same sign within spread", "reversed beyond spread",
    "reversed within spread", "share kept", "same sign", "share same sign"} (shares of the pairs the
    paper orders; NaN when it orders none)."""
    values = _ablation_values(table, metric, paper_dataset)
    first, second = np.triu_indices(len(values.paper), k=1)   # every pair of rows, in paper order
    theirs = values.paper.to_numpy()[second] - values.paper.to_numpy()[first]
    ours = values.ours.to_numpy()[second] - values.ours.to_numpy()[first]
    ordered, agree, beyond = theirs != 0, ours * theirs > 0, np.abs(ours) > values.spread
    compared = int(ordered.sum())

    def count(mask) -> int:
        return int((ordered & mask).sum())

    def share(n: int) -> float:
        return n / compared if compared else math.nan

    kept, same = count(agree & beyond), count(agree)
    return {"pairs": len(theirs), "paper shows none": len(theirs) - compared, "kept": kept,
            "same sign within spread": count(agree & ~beyond),
            "reversed beyond spread": count(~agree & beyond),
            "reversed within spread": count(~agree & ~beyond),
            "share kept": share(kept), "same sign": same, "share same sign": share(same)}


# ------------------------------------------------------------------------------ reproduction status

NOT_RUN = "not run"


def read_export(path: str | os.PathLike) -> pd.DataFrame:
    """A table `export` wrote to CSV, read back with its (dataset, metric) column levels and its row
    index (one level, or `compare`'s method and source)."""
    with open(path, newline="") as fh:
        head = [row for _, row in zip(range(3), csv.reader(fh), strict=False)]
    if len(head) < 3 or [row[0] for row in head[:2]] != ["dataset", "metric"]:
        raise TableError(f"{path} is not an exported (dataset, metric) table")
    n_index = next((i for i, cell in enumerate(head[2]) if not cell), len(head[2]))
    return pd.read_csv(path, header=[0, 1], index_col=list(range(n_index)))


def _is_ablation(table: pd.DataFrame) -> bool:
    """A `compare` table with a seed-spread row: what `ordering_share` reads."""
    if table.index.names != ["method", "source"]:
        return False
    ours = table.index[table.index.get_level_values("source") == REPRODUCED].get_level_values("method")
    return any(str(m).startswith(SPREAD_PREFIX) for m in ours)  # a table of reported rows only: False


def _reported_table_id(paper: str, table: pd.DataFrame) -> str | None:
    """The id of the paper's table whose rows and values the exported table shows (exports keep no id)."""
    from reidlib import reported

    theirs = table[table.index.get_level_values("source").isin([REPORTED, COMPETITOR])].droplevel("source")
    for table_id in reported.tables(paper):
        candidate = reported.table(paper, table_id)
        if set(candidate.index) != set(theirs.index) or not candidate.columns.isin(theirs.columns).all():
            continue
        shown = theirs.loc[candidate.index, candidate.columns].to_numpy(dtype=float)
        if np.allclose(shown, candidate.to_numpy(dtype=float), equal_nan=True):
            return table_id
    return None


def _ordering_rows(paper: str, folder: Path, metric: str) -> list[dict]:
    """`ordering_share` of every exported ablation table of the paper, in the paper's table order."""
    from reidlib import reported

    rows = []
    for path in sorted(folder.glob("*.csv")):
        try:
            table = read_export(path)
        except (TableError, ValueError):
            continue  # another kind of table (the steps, the scaling settings, a figure's grid)
        if _is_ablation(table):
            entry = _reported_table_id(paper, table) or path.stem
            rows.append({"paper": paper, "entry": entry, "file": path.name, "status": "run",
                         "metric": metric, **ordering_share(table, metric)})
    order = reported.tables(paper)
    return sorted(rows, key=lambda row: order.index(row["entry"]) if row["entry"] in order else len(order))


def _headline_rows(paper: str, folder: Path, paper_dataset: str) -> list[dict]:
    """The notebook's headline ranking metrics (metrics.json, fractions) in percent beside the paper's
    own method in its first state-of-the-art table on `paper_dataset`."""
    from reidlib import reported

    path = folder / "metrics.json"
    if not path.is_file():
        return []
    headline = json.loads(path.read_text()).get("headline") or {}
    sota = [t for t in reported.tables(paper) if reported.table_spec(paper, t)["kind"] == "sota"]
    theirs = reported.paper_method_row(paper, sota[0]) if sota else pd.Series(dtype=float)
    rows = []
    for key, value in headline.items():
        target = _engine_key(key)
        if target is None or target[0] not in PERCENT_METRICS:
            continue  # other headline numbers (a baseline's mAP, an AUC) have no reported counterpart
        name, scale = target
        rows.append({"paper": paper, "entry": f"headline {name}", "file": path.name, "status": "run",
                     "metric": name, "reproduced": float(value) * scale,
                     "reported": theirs.get((paper_dataset, name), math.nan)})
    return rows


def reproduction_status(results_root: str | os.PathLike, profile: str = "demo", metric: str = "mAP",
                        paper_dataset: str = "Occluded-Duke") -> pd.DataFrame:
    """Where each paper's reproduction stands, from what its notebook exported under
    `results_root`/<profile>/<paper>/ (`results_root` is runs/results): per ablation table with a seed
    spread (rows "Table V", ...: the paper's table id, found from the reported rows the CSV shows), the
    `ordering_share` counts of `metric`; per paper, the headline Rank-1 / mAP of metrics.json (rows
    "headline mAP", ...) beside the paper's own method on `paper_dataset` in its first state-of-the-art
    table. A paper without any of these is one row with status "not run". Indexed by (paper, entry)."""
    from reidlib import reported

    rows = []
    for paper in reported.PAPERS:
        folder = Path(results_root) / profile / paper
        found = _ordering_rows(paper, folder, metric) + _headline_rows(paper, folder, paper_dataset)
        rows += found or [{"paper": paper, "entry": "-", "status": NOT_RUN}]
    return pd.DataFrame(rows).set_index(["paper", "entry"])


# ---------------------------------------------------------------------------------------------- style


def _fmt_value(value: Any) -> str:
    """Up to two decimals, at least one, as papers print them: 47.0, 64.4, 68.55 (text passes through)."""
    if isinstance(value, str):
        return value
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _fmt_delta(value: float) -> str:
    return ("+" if value >= 0 else "-") + _fmt_value(abs(value))


def _delta_mask(df: pd.DataFrame) -> np.ndarray:
    if "source" in (df.index.names or []):
        return (df.index.get_level_values("source") == DELTA)
    return np.zeros(len(df), dtype=bool)


def _higher_is_better(column: Any) -> bool | None:
    metric = column[-1] if isinstance(column, tuple) else column
    spec = METRICS.get(str(metric))
    return True if spec is None else spec.higher_is_better


def _css(data: pd.DataFrame) -> pd.DataFrame:
    """Bold the best value of each column (direction from METRICS), colour deltas by better/worse."""
    css = pd.DataFrame("", index=data.index, columns=data.columns)
    is_delta = _delta_mask(data)
    for j, column in enumerate(data.columns):
        higher = _higher_is_better(column)
        if higher is None or not pd.api.types.is_numeric_dtype(data.iloc[:, j]):
            continue
        values = data.iloc[:, j].to_numpy(dtype=float)
        candidates = np.where(~is_delta & ~np.isnan(values))[0]
        if len(candidates):
            best = values[candidates].max() if higher else values[candidates].min()
            for i in candidates[np.isclose(values[candidates], best)]:
                css.iat[i, j] = "font-weight: bold"
        for i in np.where(is_delta & ~np.isnan(values) & (values != 0))[0]:
            css.iat[i, j] = "color: green" if (values[i] > 0) == higher else "color: red"
    return css


def style(df: pd.DataFrame, na_rep: str = "–", escape: str | None = "html") -> Styler:
    """A Styler: best value per column in bold, deltas signed and coloured (green = better), NaN as '–'."""
    styler = df.style.format(_fmt_value, na_rep=na_rep, escape=escape)
    deltas = list(df.index[_delta_mask(df)])
    if deltas:
        styler = styler.format(_fmt_delta, na_rep=na_rep, subset=pd.IndexSlice[deltas, :])
    styler = styler.format_index(escape=escape, axis=0).format_index(escape=escape, axis=1)
    return styler.apply(_css, axis=None)


# --------------------------------------------------------------------------------------------- export


def _flat(df: pd.DataFrame, na_rep: str) -> pd.DataFrame:
    """Strings as `style` shows them, one header row, the row index as leading columns."""
    is_delta = _delta_mask(df)

    def cell(v: Any, delta: bool) -> str:
        if isinstance(v, str):
            return v
        return na_rep if v is None or math.isnan(v) else (_fmt_delta(v) if delta else _fmt_value(v))

    cells = [[cell(v, is_delta[i]) for v in row] for i, row in enumerate(df.to_numpy(dtype=object))]
    names = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    flat = pd.DataFrame(cells, index=df.index, columns=names)
    if flat.index.nlevels == 1 and flat.index.name is None:
        flat.index.name = "method"
    return flat.reset_index()


def to_markdown(df: pd.DataFrame, caption: str | None = None, na_rep: str = "–") -> str:
    flat = _flat(df, na_rep)
    n_labels = df.index.nlevels
    align = ["left"] * n_labels + ["right"] * (flat.shape[1] - n_labels)
    body = flat.to_markdown(index=False, disable_numparse=True, colalign=align)
    return (f"**{caption}**\n\n" if caption else "") + body + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def to_latex(df: pd.DataFrame, caption: str | None = None) -> str:
    styler = style(df, na_rep="--", escape="latex")
    latex = styler.to_latex(caption=_latex_escape(caption) if caption else None, hrules=True,
                            convert_css=True, multicol_align="c", position_float="centering")
    return "% needs \\usepackage{booktabs} and \\usepackage{xcolor}\n" + latex


def export(df: pd.DataFrame, stem: str | os.PathLike, caption: str | None = None) -> list[Path]:
    """Write <stem>.csv, <stem>.md and <stem>.tex atomically; returns the three paths.

    The caption defaults to the reported table's caption (df.attrs['caption']) when there is one.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if caption is None:
        caption = df.attrs.get("caption") or None
    outputs = {
        ".csv": df.to_csv(),
        ".md": to_markdown(df, caption),
        ".tex": to_latex(df, caption),
    }
    paths = []
    for suffix, text in outputs.items():
        path = stem.with_name(stem.name + suffix)
        atomic_write_text(path, text)
        paths.append(path)
    return paths


__all__ = [
    "COMPETITOR", "DELTA", "ENGINE_METRICS", "REPORTED", "REPRODUCED", "SOURCES",
    "TableError", "compare", "dataset_name", "export", "metrics_table", "ordering_share", "read_export",
    "reproduction_status", "separation", "style", "to_latex", "to_markdown",
]
