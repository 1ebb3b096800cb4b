"""Which queries does a method fail on? Rank-1 and mAP of a test split broken down by how the query is
occluded: how much of the person is hidden, by what, and which body part.

The truth comes from a metadata.csv in SynthOcc's format (`reidlib.data.synthocc.read_metadata`): SynthOcc's
own protocols, or a real data set whose queries got synthetic occluders (`synthocc.occlude_queries`).

    meta = synthocc.read_metadata(root).set_index("filename")
    per_query = per_query_metrics(dist, q_pids, g_pids, q_camids, g_camids, names=query_file_names)
    robustness_table(per_query, meta, "occluder")           # Rank-1 / mAP / queries per occluder kind
    df = robustness({"QPM": pq_qpm, "PCB": pq_pcb}, meta)   # long table for seaborn, a `method` column
    sns.barplot(df[df.by == "occluded fraction"], x="bin", y="mAP", hue="method")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from reidlib.evaluation import evaluate
from reidlib.visibility import VISIBLE_AT, occluder_kind

# The occluded fraction of a query is binned as [0], (0, .2], (.2, .4], (.4, .6], (.6, 1].
FRACTION_EDGES = (0.0, 0.2, 0.4, 0.6, 1.0)
FRACTION_LABELS = ("0", "(0, 0.2]", "(0.2, 0.4]", "(0.4, 0.6]", "(0.6, 1]")
OCCLUDER_KINDS = ("none", "object", "pedestrian")
NO_PART_HIDDEN = "no part hidden"
VIS_PREFIX = "vis_"  # SynthOcc's per-part visible fraction columns: vis_head, vis_torso, ...


def per_query_metrics(dist, q_pids, g_pids, q_camids, g_camids, names: Sequence[str] | None = None
                      ) -> pd.DataFrame:
    """Rank-1 hit (0/1) and average precision of every valid query (one with a true match in another
    camera), from `evaluate`'s per-query arrays, as fractions. Indexed by query position, or by `names`
    (e.g. the query file names, to join SynthOcc's metadata)."""
    result = evaluate(dist, q_pids, g_pids, q_camids, g_camids)
    index = pd.RangeIndex(len(result.first_match_rank)) if names is None else pd.Index(names)
    if len(index) != len(result.first_match_rank):
        raise ValueError(f"{len(index)} names for {len(result.first_match_rank)} queries")
    df = pd.DataFrame({"rank1": (result.first_match_rank == 0).astype(float),
                       "AP": result.average_precision}, index=index.rename("query"))
    return df[result.valid_queries]


def _fraction_bins(meta: pd.DataFrame) -> pd.Series:
    # right-closed bins with a first edge just below 0, so that exactly 0 gets a bin of its own
    return pd.cut(meta["occluded_fraction"], [-np.inf, *FRACTION_EDGES], labels=list(FRACTION_LABELS))


def _occluder_bins(meta: pd.DataFrame) -> pd.Series:
    return meta["occluder"].map(occluder_kind).astype(pd.CategoricalDtype(OCCLUDER_KINDS, ordered=True))


def _hidden_part_bins(meta: pd.DataFrame) -> pd.Series:
    """One entry per (query, hidden part): a query appears once per part under VISIBLE_AT, or once as
    NO_PART_HIDDEN. Parts without a visibility value (NaN: hidden by the body itself, or a real image
    without a parsing mask) count as not hidden; queries with no value at all are left out."""
    vis = meta.filter(like=VIS_PREFIX).rename(columns=lambda c: c.removeprefix(VIS_PREFIX))
    vis = vis[vis.notna().any(axis=1)]
    if vis.empty:
        raise ValueError("the metadata has no per-part visibility (vis_<part> values); a real data set "
                         "needs parsing masks for this grouping")
    hidden = vis < VISIBLE_AT  # NaN compares False: not hidden
    pairs = hidden.stack()
    parts = pairs[pairs].reset_index(level=1).iloc[:, 0]  # query -> name of a hidden part
    intact = pd.Series(NO_PART_HIDDEN, index=vis.index[~hidden.any(axis=1)])
    order = pd.CategoricalDtype([*vis.columns, NO_PART_HIDDEN], ordered=True)
    return pd.concat([parts, intact]).astype(order)


BINNERS = {"occluded fraction": _fraction_bins, "occluder": _occluder_bins, "hidden part": _hidden_part_bins}
GROUPINGS = tuple(BINNERS)


def robustness_table(per_query: pd.DataFrame, metadata: pd.DataFrame, by: str) -> pd.DataFrame:
    """Rank-1 and mAP (percent) and the number of queries per bin of `by`: "occluded fraction" (the
    share of the person's pixels hidden), "occluder" (none / object / pedestrian) or "hidden part" (each
    part less than VISIBLE_AT visible; a query counts in every such part's row). `per_query` is
    `per_query_metrics` output, `metadata` SynthOcc's metadata indexed like it (by file name); queries
    missing from the metadata are an error. Every bin is listed, empty ones with 0 queries."""
    missing = per_query.index.difference(metadata.index)
    if len(missing):
        raise ValueError(f"{len(missing)} queries have no metadata (first: {missing[0]!r}); index both by "
                         "file name: per_query_metrics(..., names=...), metadata.set_index('filename')")
    if by not in BINNERS:
        raise ValueError(f"unknown grouping {by!r}; choose from {', '.join(GROUPINGS)}")
    bins = BINNERS[by](metadata.loc[per_query.index]).rename("bin")
    joined = per_query.join(bins, how="inner")
    table = joined.groupby("bin", observed=False).agg(
        **{"Rank-1": ("rank1", "mean"), "mAP": ("AP", "mean"), "queries": ("AP", "size")})
    table[["Rank-1", "mAP"]] *= 100.0
    return table.rename_axis(by)


def robustness(per_method: Mapping[str, pd.DataFrame], metadata: pd.DataFrame,
               by: Sequence[str] = GROUPINGS) -> pd.DataFrame:
    """`robustness_table` of several methods and groupings as one long DataFrame with columns method, by,
    bin, Rank-1, mAP, queries (one row per method, grouping and bin), for seaborn's `hue="method"`."""
    parts = [robustness_table(pq, metadata, grouping).rename_axis("bin").reset_index()
             .assign(method=name, by=grouping)
             for name, pq in per_method.items() for grouping in by]
    out = pd.concat(parts, ignore_index=True)
    out["bin"] = out["bin"].astype(str)
    return out[["method", "by", "bin", "Rank-1", "mAP", "queries"]]


__all__ = ["FRACTION_LABELS", "GROUPINGS", "NO_PART_HIDDEN", "per_query_metrics", "robustness",
           "robustness_table"]
