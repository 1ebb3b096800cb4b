"""Ranking lists: the static figure's rows and frames, and the interactive browser redrawing per query."""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ranked_data import grey_ranked_test  # noqa: E402

from reidlib.rankings import ranking_browser, ranking_figure  # noqa: E402
from reidlib.viz import MATCH_COLOUR, MISMATCH_COLOUR  # noqa: E402


@pytest.fixture
def ranked(tmp_path):
    """3 queries, 4 gallery images; query 0 (pid 1, cam 0) nearest to gallery 2 (pid 1, cam 1)."""
    return grey_ranked_test(tmp_path, g_camids=(1, 0, 1, 1))


def frame_colours(ax) -> set:
    return {tuple(spine.get_edgecolor()) for spine in ax.spines.values()}


def test_figure_has_a_row_per_query_and_run_with_match_frames(ranked):
    other = replace(ranked, dist=ranked.dist[:, ::-1].copy())
    fig = ranking_figure({"A": ranked, "B": other}, picks=[0, 2], top=2)
    axes = np.array(fig.axes).reshape(4, 3)                       # 2 queries x 2 runs, query + top 2
    assert [ax.get_title() for ax in axes[:, 0]] == ["A\nquery 1", "B\nquery 1", "A\nquery 2", "B\nquery 2"]
    # query 0 under A: gallery 2 (pid 1, other camera: a match), then 3 (pid 3); gallery 1 (pid 1, same
    # camera) is junk and left out
    assert ranked.top(0, 2).gallery_indices.tolist() == [2, 3]
    green, red = (tuple(matplotlib.colors.to_rgba(c)) for c in (MATCH_COLOUR, MISMATCH_COLOUR))
    assert frame_colours(axes[0, 1]) == {green} and frame_colours(axes[0, 2]) == {red}


def test_runs_on_different_test_splits_are_refused(ranked):
    other = replace(ranked, query_paths=ranked.query_paths[::-1])
    with pytest.raises(ValueError, match="'B' was evaluated on another"):
        ranking_figure({"A": ranked, "B": other}, picks=[0])


def test_browser_redraws_for_the_chosen_query(ranked):
    slider, picture = ranking_browser({"A": ranked}, top=2).children
    assert (slider.min, slider.max) == (0, 2)
    first = picture.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    slider.value = 1
    assert picture.value != first and picture.value[:8] == b"\x89PNG\r\n\x1a\n"
