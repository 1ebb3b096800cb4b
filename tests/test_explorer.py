"""The explorer: options per method, rendered figures and refusals without widgets, then the widget redrawing
when its controls change."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from ranked_data import grey_ranked_test  # noqa: E402
from test_gradcam import ColourMethod, colour_batch  # noqa: E402

from reidlib.explorer import (  # noqa: E402
    ExplorerState,
    MethodData,
    explorer_widget,
    method_overlays,
    options,
    precomputed,
    render,
)
from reidlib.rankings import RankedTest  # noqa: E402
from reidlib.viz import png_bytes  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ranked(tmp_path) -> RankedTest:
    """3 queries, 4 gallery images (16 x 8), each image a different grey."""
    return grey_ranked_test(tmp_path)


def query_maps(queries: int = 3) -> dict[str, torch.Tensor]:
    """What `explain` and `gradcam` give over the query set: a map, 3 part maps with scores, a Grad-CAM."""
    torch.manual_seed(0)
    return {"activation": torch.rand(queries, 4, 2), "part_maps": torch.rand(queries, 3, 4, 2),
            "part_scores": torch.rand(queries, 3), "gradcam": torch.rand(queries, 16, 8)}


@pytest.fixture
def data(ranked) -> dict[str, MethodData | RankedTest]:
    """A part method with overlays, and a second method with its ranking only (gallery order reversed)."""
    other = RankedTest(**{**ranked.__dict__, "dist": ranked.dist[:, ::-1].copy()})
    return {"parts": MethodData(ranked, precomputed(query_maps()), part_names=["head", "torso", "legs"]),
            "plain": other}


def test_options_list_each_methods_overlays(data):
    assert options(data) == {"parts": ("none", "activation", "part_maps", "part_scores", "gradcam"),
                             "plain": ("none",)}


@pytest.mark.parametrize("overlay, top, panels", [("none", 2, 0), ("activation", 2, 1), ("gradcam", 3, 1),
                                                  ("part_maps", 2, 3), ("part_scores", 4, 1)])
def test_render_draws_the_ranking_row_and_the_overlays_panels(data, overlay, top, panels):
    fig = render(ExplorerState("parts", query=0, top=top, overlay=overlay), data)
    assert len(fig.axes) == 1 + top + panels                      # query, its ranks, the overlay's panels
    assert fig.axes[0].get_title() == "query 0\nid 1"
    if overlay == "part_maps":
        assert [ax.get_title() for ax in fig.axes[-3:]] == ["head", "torso", "legs"]
        score = float(query_maps()["part_scores"][0, 0])
        assert fig.axes[-3].get_xlabel() == f"score {score:.2f}"  # framed by its part score


def test_changing_the_query_changes_the_picture(data):
    first, second = (png_bytes(render(ExplorerState("parts", query=q, top=2, overlay="gradcam"), data))
                     for q in (0, 1))
    assert first[:8] == PNG and second[:8] == PNG and first != second


@pytest.mark.parametrize("state, message", [
    (ExplorerState("nope"), r"unknown method 'nope': pick one of \['parts', 'plain'\]"),
    (ExplorerState("parts", query=3), r"query 3 is out of range: 'parts' has 3 queries, pick 0..2"),
    (ExplorerState("parts", query=-1), r"pick 0..2"),
    (ExplorerState("parts", top=0), r"top=0 is out of range: 'parts' ranks 4 gallery images, pick 1..4"),
    (ExplorerState("plain", top=2, overlay="gradcam"),
     r"'plain' has no overlay 'gradcam': pick one of \['none'\]"),
])
def test_bad_states_are_refused_naming_the_fix(data, state, message):
    with pytest.raises(ValueError, match=message):
        render(state, data)


def test_overlays_are_fetched_once_per_query_and_checked(ranked):
    calls = []

    def batched(q_idx):                                           # a provider that forgot to drop the batch
        calls.append(q_idx)
        return {"activation": torch.rand(1, 4, 2)}

    data = {"m": MethodData(ranked, batched)}
    with pytest.raises(ValueError, match=r"shape \(1, 4, 2\): give one query's map with 2 dimensions"):
        render(ExplorerState("m", top=2, overlay="activation"), data)
    render(ExplorerState("m", top=2), data)
    assert calls == [0]                                           # cached
    with pytest.raises(ValueError, match="not known kinds"):
        options({"m": MethodData(ranked, lambda q: {"saliency": torch.rand(4, 2)})})


class ExplainedColour(ColourMethod):
    @torch.no_grad()
    def explain(self, batch):
        return {"activation": self.backbone(batch.images).norm(dim=1)}


def test_method_overlays_give_explain_and_gradcam_maps(ranked):
    provider = method_overlays(ExplainedColour(), lambda q: colour_batch())
    maps = provider(0)
    assert set(maps) == {"activation", "gradcam"}
    assert maps["activation"].shape == maps["gradcam"].shape == (12, 8)
    data = {"colour": MethodData(ranked, provider)}
    assert options(data) == {"colour": ("none", "activation", "gradcam")}
    assert len(render(ExplorerState("colour", top=2, overlay="gradcam"), data).axes) == 4


def test_widget_redraws_when_its_controls_change(data):
    explorer = explorer_widget(data, ExplorerState("parts", query=0, top=2, overlay="part_maps"))
    first = explorer.image.value
    assert first[:8] == PNG
    explorer.query.value = 1
    assert explorer.state == ExplorerState("parts", query=1, top=2, overlay="part_maps")
    assert explorer.image.value[:8] == PNG and explorer.image.value != first
    before = explorer.image.value
    explorer.method.value = "plain"                               # no overlays: back to "none"
    assert tuple(explorer.overlay.options) == ("none",) and explorer.overlay.value == "none"
    assert explorer.image.value != before
    assert (len(explorer.query.options), explorer.top.max) == (3, 4)
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()  # shows as its box
