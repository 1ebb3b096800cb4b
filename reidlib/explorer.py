"""The interactive explorer: pick a method, a query, how many of its ranks and an overlay, and see the query's
ranking list (green: match, red: not) above the chosen map on the query.

The logic is plain functions of an `ExplorerState` and the data, so it is tested without a browser; the
ipywidgets layer (`explorer_widget`) only turns controls into states and figures into PNG bytes.

    data = {"BoT": MethodData(ranked_bot, method_overlays(bot_model, load_query)),   # maps on demand
            "QPM": MethodData(ranked_qpm, precomputed({**qpm_explain, "gradcam": qpm_cams}),
                              part_names=["stripe 1", ...])}
    options(data)                                   # {"BoT": ("none", "activation", "gradcam"), ...}
    fig = render(ExplorerState("QPM", query=3, top=8, overlay="part_maps"), data)
    explorer_widget(data)                           # the same, driven by dropdowns and sliders

Overlays of one query, keyed as `explain`'s (reidlib.methods.base.EXPLAIN_KEYS) without the batch
dimension, plus "gradcam" (reidlib.gradcam, the query against itself):
    activation, activation_before, attention, gradcam   [h, w]      one panel
    part_maps                                           [K, h, w]   a panel per part (framed by its score)
    head_attention                                      [H, h, w]   a panel per head
    part_scores                                         [K]         a bar per part
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reidlib.methods.base import _EXPLAIN_RANK, Batch
from reidlib.rankings import RankedTest

NONE = "none"
# dimensions of one query's overlay (explain's ranks without the batch dimension)
OVERLAY_RANK: dict[str, int] = {**{k: r - 1 for k, r in _EXPLAIN_RANK.items()}, "gradcam": 2}
# overlays on the absolute 0-1 scale (probabilities, masks, Grad-CAM); the others are min-max scaled
ABSOLUTE = ("attention", "part_maps", "gradcam")
DEFAULT_TOP = 8
MAX_TOP = 20                             # the top slider's end: more images do not fit one row

Overlays = Callable[[int], Mapping[str, Tensor]]  # query index -> that query's maps


# ------------------------------------------------------------------------------------------ data
@dataclass
class MethodData:
    """One method in the explorer: its ranked test split and, optionally, a provider of each query's
    overlays (called once per query; the result is cached). `part_names` label part maps and scores."""

    ranked: RankedTest
    overlays: Overlays | None = None
    part_names: Sequence[str] = ()
    _cache: dict[int, dict[str, Tensor]] = field(default_factory=dict, init=False, repr=False)

    def maps(self, q_idx: int) -> dict[str, Tensor]:
        if self.overlays is None:
            return {}
        if q_idx not in self._cache:
            self._cache[q_idx] = {k: torch.as_tensor(v).detach().float().cpu()
                                  for k, v in self.overlays(q_idx).items()}
        return self._cache[q_idx]

    def overlay_kinds(self) -> tuple[str, ...]:
        """The overlays this method has (those of its first query), in OVERLAY_RANK's order."""
        given = self.maps(0)
        unknown = sorted(set(given) - set(OVERLAY_RANK))
        if unknown:
            raise ValueError(f"overlays {unknown} are not known kinds; use {list(OVERLAY_RANK)}")
        return tuple(k for k in OVERLAY_RANK if k in given)


def precomputed(maps: Mapping[str, Tensor | np.ndarray]) -> Overlays:
    """A provider from maps of every query at once, {kind: [Q, ...]} (e.g. `explain` over the query set)."""
    return lambda q_idx: {kind: m[q_idx] for kind, m in maps.items()}


def method_overlays(method, load_query: Callable[[int], Batch], with_gradcam: bool = True) -> Overlays:
    """A provider computing a query's overlays on demand: `explain` of the method (in eval mode, as
    `run.load_model` gives it) on the one-image Batch `load_query(q)`, and with `with_gradcam` its Grad-CAM
    (the query against itself)."""
    from reidlib.engine.inference import device_of
    from reidlib.gradcam import gradcam

    def provide(q_idx: int) -> dict[str, Tensor]:
        batch = load_query(q_idx).to(device_of(method))
        maps = {k: v[0] for k, v in method.explain(batch).items()}
        if with_gradcam:
            maps["gradcam"] = gradcam(method, batch)[0]                       # [H, W]
        return maps

    return provide


def _entries(data: Mapping[str, MethodData | RankedTest]) -> dict[str, MethodData]:
    if not data:
        raise ValueError("nothing to explore: pass {method name: MethodData(ranked, overlays)}")
    return {name: d if isinstance(d, MethodData) else MethodData(d) for name, d in data.items()}


# ------------------------------------------------------------------------------------------ state
@dataclass(frozen=True)
class ExplorerState:
    """What the explorer shows: a method's ranking list for one query, its first `top` ranks, and one
    overlay on the query ("none": the ranking list alone)."""

    method: str
    query: int = 0
    top: int = DEFAULT_TOP
    overlay: str = NONE


def options(data: Mapping[str, MethodData | RankedTest]) -> dict[str, tuple[str, ...]]:
    """The overlays each method offers, "none" first."""
    return {name: (NONE, *entry.overlay_kinds()) for name, entry in _entries(data).items()}


def initial_state(data: Mapping[str, MethodData | RankedTest]) -> ExplorerState:
    """The first method's first query, `DEFAULT_TOP` ranks and its first overlay (if any)."""
    name, entry = next(iter(_entries(data).items()))
    kinds = entry.overlay_kinds()
    return ExplorerState(name, 0, min(DEFAULT_TOP, len(entry.ranked.gallery_paths)),
                         kinds[0] if kinds else NONE)


def check(state: ExplorerState, data: Mapping[str, MethodData | RankedTest]) -> MethodData:
    """The state's method data; ValueError naming the fix for an unknown method or overlay or a query / top
    out of range."""
    entries = _entries(data)
    if state.method not in entries:
        raise ValueError(f"unknown method {state.method!r}: pick one of {list(entries)}")
    entry = entries[state.method]
    queries, gallery = len(entry.ranked.query_paths), len(entry.ranked.gallery_paths)
    if not 0 <= state.query < queries:
        raise ValueError(f"query {state.query} is out of range: {state.method!r} has {queries} queries, "
                         f"pick 0..{queries - 1}")
    if not 1 <= state.top <= gallery:
        raise ValueError(f"top={state.top} is out of range: {state.method!r} ranks {gallery} gallery "
                         f"images, pick 1..{gallery}")
    offered = (NONE, *entry.overlay_kinds())
    if state.overlay not in offered:
        raise ValueError(f"{state.method!r} has no overlay {state.overlay!r}: pick one of {list(offered)}")
    return entry


# ------------------------------------------------------------------------------------------ figure
def render(state: ExplorerState, data: Mapping[str, MethodData | RankedTest]):
    """The figure of a state: row 1 the query and its top ranks framed green / red, row 2 the overlay's
    panels on the query (no row 2 for "none")."""
    import matplotlib.pyplot as plt

    from reidlib.viz import draw_ranking_row

    entry = check(state, data)
    ranked, q = entry.ranked, state.query
    ranks = ranked.top(q, state.top)
    query = ranked.image(ranked.query_paths[q])                                   # [H, W, 3]
    gallery = [ranked.image(ranked.gallery_paths[j]) for j in ranks.gallery_indices]
    panels = _panel_count(state, entry)
    columns = max(len(gallery) + 1, panels)
    rows = 1 + (panels > 0)
    fig = plt.figure(figsize=(1.0 * columns, 2.2 * rows))
    grid = fig.add_gridspec(rows, columns)
    draw_ranking_row([fig.add_subplot(grid[0, c]) for c in range(len(gallery) + 1)], query, gallery,
                     ranks.matches, f"query {q}\nid {ranked.q_pids[q]}")
    if panels:
        _draw_overlay(fig, grid, state.overlay, query, entry, q)
    fig.suptitle(f"{state.method}: query {q}, top {state.top}"
                 + ("" if state.overlay == NONE else f", {state.overlay}"), fontsize=8)
    fig.tight_layout()
    return fig


def _overlay(entry: MethodData, kind: str, q_idx: int) -> Tensor:
    value = entry.maps(q_idx)[kind]
    if value.dim() != OVERLAY_RANK[kind]:
        raise ValueError(f"overlay {kind!r} of query {q_idx} has shape {tuple(value.shape)}: give one "
                         f"query's map with {OVERLAY_RANK[kind]} dimensions (no batch dimension)")
    return value


def _panel_count(state: ExplorerState, entry: MethodData) -> int:
    """Axes of the overlay row: one per part / head for stacked maps, one for a map or the score bars."""
    if state.overlay == NONE:
        return 0
    value = _overlay(entry, state.overlay, state.query)
    return value.shape[0] if value.dim() == 3 else 1


def _part_names(entry: MethodData, count: int, prefix: str = "part") -> list[str]:
    names = list(entry.part_names)
    return names if len(names) == count else [f"{prefix} {k + 1}" for k in range(count)]


def _draw_overlay(fig, grid, kind: str, query: np.ndarray, entry: MethodData, q_idx: int) -> None:
    from reidlib.viz import overlay, upsample

    value = _overlay(entry, kind, q_idx)
    size = query.shape[:2]
    if kind == "part_scores":
        _score_bars(fig.add_subplot(grid[1, : min(3, grid.ncols)]), value, _part_names(entry, len(value)))
        return
    stack = value if value.dim() == 3 else value[None]                           # [P, h, w]
    heat = upsample(stack[None], size)[0]                                         # [P, H, W]
    titles = ([kind] if value.dim() == 2 else
              _part_names(entry, len(stack), "head" if kind == "head_attention" else "part"))
    scores = entry.maps(q_idx).get("part_scores") if kind == "part_maps" else None
    framed = scores is not None and len(scores) == len(stack)
    for p, title in enumerate(titles):
        ax = fig.add_subplot(grid[1, p])
        overlay(ax, query, heat[p], "magma" if kind == "part_maps" else "jet", 0.5, kind in ABSOLUTE)
        ax.set_title(title, fontsize=7)
        if framed:
            _score_frame(ax, float(scores[p]))
        else:
            ax.axis("off")


def _score_frame(ax, score: float) -> None:
    """A part map framed by its score's colour (red 0 .. green 1), the score written under it."""
    import matplotlib.pyplot as plt

    from reidlib.viz import frame

    frame(ax, plt.get_cmap("RdYlGn")(score), 2.5)
    ax.set_xlabel(f"score {score:.2f}", fontsize=6, labelpad=1)


def _score_bars(ax, scores: Tensor, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    values = scores.numpy()
    ax.barh(names[::-1], values[::-1], color=plt.get_cmap("RdYlGn")(values[::-1]))
    ax.set_xlim(0, 1)
    ax.set_title("part scores", fontsize=7)
    ax.tick_params(labelsize=6)


# ------------------------------------------------------------------------------------------ widget
class Explorer:
    """The explorer's widgets: `method`, `query`, `top` and `overlay` controls and the `image` they redraw
    (PNG bytes). A notebook shows it as its `box`; `state` is what the controls say."""

    def __init__(self, data: Mapping[str, MethodData | RankedTest], state: ExplorerState | None = None,
                 dpi: int = 100):
        import ipywidgets as widgets

        self.data, self.dpi = _entries(data), dpi
        state = state or initial_state(self.data)
        entry = check(state, self.data)
        self._holding = False
        self.method = widgets.Dropdown(options=list(self.data), value=state.method, description="method")
        self.overlay = widgets.Dropdown(options=options(self.data)[state.method], value=state.overlay,
                                        description="overlay")
        # a dropdown of the queries by file name (a slider over hundreds of images is hard to aim)
        self.query = widgets.Dropdown(options=self._queries(entry), value=state.query, description="query")
        self.top = widgets.IntSlider(value=state.top, min=1, max=self._top_limit(entry), description="top",
                                     continuous_update=False)
        self.image = widgets.Image(format="png")
        self.box = widgets.VBox([widgets.HBox([self.method, self.overlay]),
                                 widgets.HBox([self.query, self.top]), self.image])
        self.method.observe(self._method_changed, names="value")
        for control in (self.overlay, self.query, self.top):
            control.observe(self.redraw, names="value")
        self.redraw()

    @staticmethod
    def _queries(entry: MethodData) -> list[tuple[str, int]]:
        from pathlib import Path

        return [(f"{i}: {Path(path).name}", i) for i, path in enumerate(entry.ranked.query_paths)]

    @staticmethod
    def _top_limit(entry: MethodData) -> int:
        return min(MAX_TOP, len(entry.ranked.gallery_paths))

    @property
    def state(self) -> ExplorerState:
        return ExplorerState(self.method.value, self.query.value, self.top.value, self.overlay.value)

    def redraw(self, _change: Any = None) -> None:
        if self._holding:
            return
        from reidlib.viz import png_bytes

        self.image.value = png_bytes(render(self.state, self.data), self.dpi)

    def _method_changed(self, change: Any) -> None:
        """The new method's overlays and ranges (keeping the overlay if it has it), then one redraw."""
        entry = self.data[change["new"]]
        offered = options(self.data)[change["new"]]
        kept = self.overlay.value if self.overlay.value in offered else NONE
        self._holding = True
        try:
            self.overlay.options = offered
            self.overlay.value = kept
            queries = self._queries(entry)
            if list(self.query.options) != queries:  # another test split: keep the index where it exists
                index = min(self.query.value, len(queries) - 1)
                self.query.options = queries
                self.query.value = index
            self.top.max = self._top_limit(entry)
        finally:
            self._holding = False
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)


def explorer_widget(data: Mapping[str, MethodData | RankedTest], state: ExplorerState | None = None,
                    dpi: int = 100) -> Explorer:
    """ipywidgets: dropdowns for the method, the overlay and the query, a slider for top k; any change
    redraws `render` into the widget's image."""
    return Explorer(data, state, dpi)


__all__ = ["ABSOLUTE", "Explorer", "ExplorerState", "MethodData", "NONE", "OVERLAY_RANK", "check",
           "explorer_widget", "initial_state", "method_overlays", "options", "precomputed", "render"]
