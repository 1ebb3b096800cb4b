"""Ranking lists of trained runs: the static figure every notebook draws and its interactive browser.

    ranked = {name: rank_test(run, run.config.data) for name, run in runs.items()}  # one extraction each
    ranking_figure(ranked, picks=[0, 5], top=8)   # a row per (query, run): the query, then its top 8
    ranking_browser(ranked, top=8)                # ipywidgets: a slider over every query redraws the rows
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidlib.evaluation import RankList, rank_list


@dataclass(frozen=True)
class RankedTest:
    """A run's test split under the run's own distance."""

    query_paths: list[str]
    gallery_paths: list[str]
    dist: np.ndarray                     # [Q, G]
    q_pids: np.ndarray                   # [Q]
    g_pids: np.ndarray                   # [G]
    q_camids: np.ndarray                 # [Q]
    g_camids: np.ndarray                 # [G]
    size: tuple[int, int]                # (width, height) the images are shown at

    def top(self, q_idx: int, top: int) -> RankList:
        """The query's first `top` gallery items in `evaluate`'s order (same-camera matches left out)."""
        return rank_list(self.dist, q_idx, top, q_pids=self.q_pids, g_pids=self.g_pids,
                         q_camids=self.q_camids, g_camids=self.g_camids)

    def image(self, path: str) -> np.ndarray:
        from reidlib.data.images import read_image

        return np.asarray(read_image(path).resize(self.size)) / 255.0

    def first_query_per_identity(self, n: int) -> list[int]:
        """Indices of the first query of each of the first `n` identities (in pid order)."""
        return [int(np.flatnonzero(self.q_pids == pid)[0]) for pid in np.unique(self.q_pids)[:n]]


def rank_test(run, data_cfg, device: str = "cpu", extracted=None, model_overrides: dict | None = None
              ) -> RankedTest:
    """Rank `run`'s query and gallery embeddings on `data_cfg`'s test split: `extracted` (what
    `engine.extract_test` returned, e.g. cached by the Workbook), else extracted here as its evaluation
    does (flip-averaged when `train.flip_test`); `model_overrides`: matching-only switches of the method
    config, applied to the distance only."""
    from dataclasses import replace

    from reidlib.data.loader import load_from_config
    from reidlib.engine import extract_test

    ds, model = load_from_config(data_cfg), run.load_model(device)
    if extracted is None:
        extracted = extract_test(model, ds, data_cfg, run.config.train.flip_test)
    if model_overrides:
        model.cfg = replace(model.cfg, **model_overrides)
    (q, q_pids, q_cams), (g, g_pids, g_cams) = extracted
    dist = model.distance(q, g).cpu().numpy()
    return RankedTest([r.path for r in ds.query], [r.path for r in ds.gallery], dist,
                      np.asarray(q_pids), np.asarray(g_pids), np.asarray(q_cams), np.asarray(g_cams),
                      (data_cfg.width, data_cfg.height))


def _same_queries(ranked: dict[str, RankedTest]) -> RankedTest:
    first = next(iter(ranked.values()))
    for name, r in ranked.items():
        if r.query_paths != first.query_paths or r.gallery_paths != first.gallery_paths:
            raise ValueError(f"ranking lists side by side need one test split; {name!r} was evaluated on "
                             "another (give every run the same data_overrides)")
    return first


def ranking_figure(ranked: dict[str, RankedTest], picks: list[int], top: int = 8):
    """One row per picked query and run: the query, then its top gallery images framed green (match) or
    red; with several runs their rows for one query sit together, so the lists compare directly."""
    from reidlib.viz import ranking_grid

    first = _same_queries(ranked)
    queries, gallery, matches, labels = [], [], [], []
    for q_idx in picks:
        query = first.image(first.query_paths[q_idx])
        for name, r in ranked.items():
            lst = r.top(q_idx, top)
            queries.append(query)
            gallery.append(np.stack([r.image(r.gallery_paths[j]) for j in lst.gallery_indices]))
            matches.append(lst.matches)
            labels.append(f"{name}\nquery {r.q_pids[q_idx]}" if name else f"query {r.q_pids[q_idx]}")
    return ranking_grid(np.stack(queries), gallery, matches, row_labels=labels)


def ranking_browser(ranked: dict[str, RankedTest], top: int = 8, dpi: int = 100):
    """ipywidgets: a slider over every query; each move redraws `ranking_figure` for that query."""
    import ipywidgets as widgets

    from reidlib.viz import png_bytes

    first = _same_queries(ranked)
    slider = widgets.IntSlider(value=0, min=0, max=len(first.query_paths) - 1, description="query",
                               continuous_update=False)
    picture = widgets.Image(format="png")

    def draw(_change=None) -> None:
        picture.value = png_bytes(ranking_figure(ranked, [slider.value], top), dpi)

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, picture])


__all__ = ["RankedTest", "rank_test", "ranking_figure", "ranking_browser"]
