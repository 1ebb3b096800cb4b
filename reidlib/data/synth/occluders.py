"""SynthOcc occluders: objects (car, pole, board, tree, luggage) and other pedestrians, placed in front of
the person so that they hide a requested fraction of its pixels from a requested side.

Placement is a 1-D search on how far the occluder reaches into the image from its side:
- bottom / top occluders are redrawn for each extent `e` (a car whose roof is `e` rows above the bottom
  edge, a tree canopy hanging `e` rows down), and the smallest `e` hiding at least the target is kept;
- side occluders (left, right) are rigid: drawn once on a layer three images wide and slid in from the
  side until they hide the target (never past the person's centre line, where cover would drop again).
Right-hand placements are left-hand ones mirrored. The achieved fraction is measured on the label map and
reported; it can fall short of the target when the occluder is too small (a thin pole).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reidlib.data.synth.canvas import Canvas, stripes
from reidlib.data.synth.identity import Identity
from reidlib.data.synth.person import VIEWPOINTS, draw_person, sample_pose

OCCLUDER_KINDS = ("car", "pole", "board", "tree", "luggage", "pedestrian")
POSITIONS = ("bottom", "left", "right", "top")
KIND_POSITIONS = {
    "car": ("bottom",),
    "pole": ("left", "right"),
    "board": ("bottom", "left", "right", "top"),
    "tree": ("left", "right", "top"),
    "luggage": ("bottom",),
    "pedestrian": ("left", "right"),
}
# How often each kind is picked among those that fit a position; other pedestrians are the commonest
# occluder of real crowded scenes (Occluded-Duke), hence the double weight.
KIND_WEIGHTS = {"car": 1.0, "pole": 1.0, "board": 1.0, "tree": 1.0, "luggage": 1.0, "pedestrian": 2.0}
CAR_COLOURS = np.array(
    [
        [0.75, 0.1, 0.1],
        [0.9, 0.9, 0.9],
        [0.1, 0.1, 0.12],
        [0.5, 0.52, 0.55],
        [0.15, 0.25, 0.55],
        [0.85, 0.75, 0.2],
        [0.2, 0.4, 0.25],
    ],
    np.float32,
)
BOARD_COLOURS = np.array(
    [
        [0.9, 0.9, 0.85],
        [0.85, 0.2, 0.15],
        [0.95, 0.8, 0.1],
        [0.2, 0.45, 0.75],
        [0.3, 0.3, 0.32],
        [0.35, 0.6, 0.3],
    ],
    np.float32,
)
LEAF = np.array([0.22, 0.45, 0.17], np.float32)
BARK = np.array([0.35, 0.25, 0.17], np.float32)


def choose_kind(rng: np.random.Generator, position: str, kinds: tuple[str, ...]) -> str | None:
    fit = [k for k in kinds if position in KIND_POSITIONS[k]]
    if not fit:
        return None
    w = np.array([KIND_WEIGHTS[k] for k in fit])
    return fit[int(rng.choice(len(fit), p=w / w.sum()))]


# ---- extent-parametrised occluders (bottom, top) -----------------------------------------------------------
def _car(layer: Canvas, e: float, p: dict) -> None:
    h, w = layer.h, layer.w
    y0 = h - e
    hc = max(e + 2, p["height"] * h)  # a car closer than its size allows reaches below the image
    x0, x1 = p["x0"] * w, p["x1"] * w
    length = x1 - x0
    body = p["colour"]
    cab_top, cab_bot = y0, y0 + 0.4 * hc
    layer.paint(
        layer.trapezoid(cab_top, cab_bot, x0 + 0.5 * length, x0 + 0.5 * length, 0.28 * length, 0.36 * length),
        body,
        shading=0.15,
    )
    layer.paint(layer.box(cab_bot - 0.04 * hc, y0 + 0.85 * hc, x0, x1, radius=0.12 * hc), body, shading=0.35)
    layer.paint(
        layer.box(y0 + 0.85 * hc, h + 2, x0 + 0.05 * length, x1 - 0.05 * length), body * 0.35, shading=0
    )  # shadowed underbody, so nothing shows between the wheels
    if layer.silhouette:  # the rest lies inside the outline
        return
    for a, b in ((0.27, 0.49), (0.51, 0.72)):  # two side windows
        layer.paint(
            layer.box(
                cab_top + 0.12 * hc, cab_bot - 0.02 * hc, x0 + a * length, x0 + b * length, radius=0.03 * hc
            ),
            np.array([0.3, 0.38, 0.45], np.float32),
            shading=0,
        )
    layer.paint(
        layer.box(y0 + 0.55 * hc, y0 + 0.58 * hc, x0 + 0.05 * length, x1 - 0.05 * length),
        body * 0.6,
        shading=0,
    )
    for fx in (0.18, 0.82):
        layer.paint(
            layer.ellipse(y0 + 0.85 * hc, x0 + fx * length, 0.16 * hc, 0.16 * hc),
            np.array([0.08, 0.08, 0.08], np.float32),
            shading=0.4,
        )


def _luggage(layer: Canvas, e: float, p: dict) -> None:
    h, w = layer.h, layer.w
    for (cx, cw, rel_h), col in zip(p["cases"], p["colours"], strict=True):
        top = h - e * rel_h
        x0, x1 = (cx - cw / 2) * w, (cx + cw / 2) * w
        ribs = stripes(col, col * 0.78, x0, max((x1 - x0) / 3, 2.0), vertical=True)
        layer.paint(layer.box(top, h + 2, x0, x1, radius=0.08 * (x1 - x0)), col, texture=ribs, shading=0)
        if layer.silhouette:  # handles are thin: the search ignores them
            continue
        handle_h = 0.12 * e
        for fx in (0.3, 0.7):
            layer.paint(
                layer.box(top - handle_h, top + 1, x0 + fx * (x1 - x0) - 0.6, x0 + fx * (x1 - x0) + 0.6),
                np.array([0.15, 0.15, 0.15], np.float32),
                shading=0,
            )
        layer.paint(
            layer.box(
                top - handle_h - 0.8, top - handle_h + 0.8, x0 + 0.28 * (x1 - x0), x0 + 0.72 * (x1 - x0)
            ),
            np.array([0.15, 0.15, 0.15], np.float32),
            shading=0,
        )


def _text_lines(layer: Canvas, y0: float, y1: float, x0: float, x1: float, colour, rng_vals) -> None:
    """Dark bars that read as lettering on a board."""
    rows = len(rng_vals)
    for i, frac in enumerate(rng_vals):
        ya = y0 + (i + 0.6) * (y1 - y0) / (rows + 1)
        layer.paint(
            layer.box(
                ya,
                ya + max((y1 - y0) / (rows * 3.5), 0.8),
                x0 + 0.12 * (x1 - x0),
                x0 + (0.12 + 0.76 * frac) * (x1 - x0),
            ),
            colour,
            shading=0,
        )


def _board_vertical(layer: Canvas, e: float, p: dict, from_top: bool) -> None:
    h, w = layer.h, layer.w
    x0, x1 = p["x0"] * w, p["x1"] * w
    y0, y1 = (-2, e) if from_top else (h - e, h + 2)
    frame = p["colour"] * 0.45
    layer.paint(layer.box(y0, y1, x0, x1, radius=1.0), frame, shading=0)
    if layer.silhouette:
        return
    inset = max(0.03 * h, 1.0)
    layer.paint(layer.box(y0 + inset, y1 - inset, x0 + inset, x1 - inset), p["colour"], shading=0.1)
    _text_lines(layer, y0 + inset, min(y1, h) - inset, x0 + inset, x1 - inset, frame, p["text"])


def _canopy(layer: Canvas, e: float, p: dict) -> None:
    h, w = layer.h, layer.w
    r = p["radius"] * h
    layer.paint(layer.box(-2, max(e - r, 0), -2, w + 2), LEAF * 0.8, shading=0)
    for fx, fr, tone in p["blobs"]:
        rr = r * fr
        layer.paint(layer.ellipse(e - rr, fx * w, rr, rr * 1.1), LEAF * tone, shading=0.35)


# ---- rigid side occluders, drawn centred on a layer three images wide --------------------------------------
def _side_pole(layer: Canvas, p: dict) -> None:
    h, cx, half = layer.h, layer.w / 2, p["width"] / 2
    layer.paint(layer.trapezoid(-2, h + 2, cx, cx, half, half), p["colour"], shading=0.5)
    if p["sign"]:
        r = 0.09 * h
        layer.paint(layer.ellipse(0.12 * h, cx, r, r), np.array([0.8, 0.1, 0.1], np.float32), shading=0)
        layer.paint(layer.ellipse(0.12 * h, cx, 0.7 * r, 0.7 * r), np.float32([0.92] * 3), shading=0)


def _side_tree(layer: Canvas, p: dict) -> None:
    h, cx, half = layer.h, layer.w / 2, p["width"] / 2
    bark = stripes(BARK, BARK * 0.7, cx - half, max(p["width"] / 2.5, 2.0), vertical=True)
    layer.paint(layer.trapezoid(-2, h + 2, cx, cx, half, half * 1.2), BARK, texture=bark, shading=0.4)
    r = p["radius"] * h
    for fx, fy, fr, tone in p["blobs"]:
        layer.paint(layer.ellipse(fy * h, cx + fx * r, r * fr, r * fr * 1.15), LEAF * tone, shading=0.35)


def _side_board(layer: Canvas, p: dict) -> None:
    h, cx, half = layer.h, layer.w / 2, p["width"] / 2
    x0, x1, y0 = cx - half, cx + half, p["top"] * h
    frame = p["colour"] * 0.45
    layer.paint(layer.box(y0, h + 2, x0, x1), frame, shading=0)
    inset = max(0.025 * h, 1.0)
    layer.paint(layer.box(y0 + inset, h * 0.85, x0 + inset, x1 - inset), p["colour"], shading=0.1)
    _text_lines(layer, y0 + inset, h * 0.85, x0 + inset, x1 - inset, frame, p["text"])


def _side_pedestrian(layer: Canvas, p: dict) -> None:
    draw_person(layer, p["identity"], p["pose"])


# ---- placement ---------------------------------------------------------------------------------------------
def _cover(person: np.ndarray, alpha: np.ndarray) -> int:
    return int(np.count_nonzero(person & (alpha >= 0.5)))


def _search(lo: int, hi: int, cover_at: Callable[[int], int], target: int) -> int:
    """Smallest integer e in [lo, hi] with cover_at(e) >= target (cover assumed non-decreasing), else hi."""
    if cover_at(hi) < target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if cover_at(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _sample_params(
    rng: np.random.Generator,
    kind: str,
    position: str,
    h: int,
    w: int,
    person_w: float,
    target: float,
    pedestrians: list[Identity],
    person_height: float,
) -> dict:
    if kind == "car":
        x0 = rng.uniform(-0.9, 0.0)
        return {
            "height": rng.uniform(0.45, 0.65),
            "x0": x0,
            "x1": x0 + rng.uniform(1.8, 2.4),
            "colour": CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1),
        }
    if kind == "luggage":
        n = int(rng.integers(1, 3))
        centre = rng.uniform(0.35, 0.65)
        cases = [(centre, rng.uniform(0.35, 0.6), 1.0)]
        if n == 2:
            side = 1 if rng.random() < 0.5 else -1
            cases.append(
                (centre + side * rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.45), rng.uniform(0.6, 0.85))
            )
        colours = [BOARD_COLOURS[rng.integers(len(BOARD_COLOURS))] * rng.uniform(0.6, 1.0) for _ in cases]
        return {"cases": cases, "colours": colours}
    if kind == "tree" and position == "top":
        blobs = [(fx, rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.2)) for fx in np.linspace(-0.1, 1.1, 6)]
        return {"radius": rng.uniform(0.1, 0.16), "blobs": blobs}
    text = list(rng.uniform(0.3, 1.0, size=int(rng.integers(2, 5))))
    colour = BOARD_COLOURS[rng.integers(len(BOARD_COLOURS))]
    if kind == "board" and position in ("bottom", "top"):
        x0 = rng.uniform(-0.3, 0.15)
        return {"x0": x0, "x1": rng.uniform(0.85, 1.3), "colour": colour, "text": text}
    # side kinds: width chosen so that the target is reachable (a pole hides a band of the body)
    need = float(np.clip(target * person_w * rng.uniform(1.0, 1.5), 0.05 * w, 0.9 * w))
    if kind == "pole":
        grey = rng.uniform(0.35, 0.75)
        return {"width": need, "colour": np.float32([grey, grey, grey * 1.03]), "sign": rng.random() < 0.3}
    if kind == "tree":
        blobs = [
            (rng.uniform(-1, 1), rng.uniform(-0.05, 0.15), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.2))
            for _ in range(5)
        ]
        return {"width": need, "radius": rng.uniform(0.15, 0.25), "blobs": blobs}
    if kind == "board":
        return {"width": max(need, 0.25 * w), "top": rng.uniform(0.05, 0.45), "colour": colour, "text": text}
    if kind == "pedestrian":
        ident = pedestrians[int(rng.integers(len(pedestrians)))]
        u = person_height * rng.uniform(0.95, 1.15) * ident.height  # a little closer to the camera
        view = VIEWPOINTS[int(rng.integers(3))]
        pose = sample_pose(rng, view, u, 1.5 * w, h * rng.uniform(1.0, 1.08))
        return {"identity": ident, "pose": pose, "width": 0.25 * u}
    raise ValueError(f"occluder kind {kind!r} cannot be placed at {position!r}")


VERTICAL_DRAW = {
    "car": _car,
    "luggage": _luggage,
    "board": lambda layer, e, p: _board_vertical(layer, e, p, from_top=False),
}
TOP_DRAW = {"tree": _canopy, "board": lambda layer, e, p: _board_vertical(layer, e, p, from_top=True)}
SIDE_DRAW = {"pole": _side_pole, "tree": _side_tree, "board": _side_board, "pedestrian": _side_pedestrian}


def occlude(
    canvas: Canvas,
    rng: np.random.Generator,
    kind: str,
    position: str,
    target: float,
    pedestrians: list[Identity],
    person_height: float,
) -> None:
    """Draw occluder `kind` entering from `position` over the person already on `canvas` (label > 0),
    hiding about `target` of its pixels; occluder pixels get label 0."""
    h, w = canvas.h, canvas.w
    person = canvas.label > 0
    total = int(person.sum())
    if total == 0:
        return
    cols = np.flatnonzero(person.any(axis=0))
    person_w = float(cols[-1] - cols[0] + 1)
    p = _sample_params(rng, kind, position, h, w, person_w, target, pedestrians, person_height)
    need = max(int(np.ceil(target * total)), 1)

    if position in ("bottom", "top"):
        draw = (VERTICAL_DRAW if position == "bottom" else TOP_DRAW)[kind]

        def layer_at(e: int, silhouette: bool = False) -> Canvas:
            layer = Canvas(h, w, silhouette=silhouette)
            draw(layer, float(e), p)
            return layer

        e = _search(1, h, lambda e: _cover(person, layer_at(e, silhouette=True).alpha), need)
        canvas.composite(layer_at(e), label=0)
        return

    # side: slide a rigid layer in from the left (mirror everything for the right). Layer column
    # x + shift is shown in image column x; the object's centre line is layer column 1.5 w.
    mirror = position == "right"
    target_mask = person[:, ::-1] if mirror else person
    wide = Canvas(h, 3 * w)
    SIDE_DRAW[kind](wide, p)
    centre = (cols[0] + cols[-1]) / 2
    centre = (w - 1 - centre) if mirror else centre
    outside = int(np.ceil(1.5 * w + p["width"] / 2))  # the object's body is left of the image
    centred = max(int(round(1.5 * w - centre)), 0)  # the object is centred on the person: cover peaks

    def cover_at(progress: int) -> int:
        shift = outside - progress
        return _cover(target_mask, wide.alpha[:, shift : shift + w])

    shift = outside - _search(0, max(outside - centred, 0), cover_at, need)
    layer = Canvas(h, w)
    layer.rgb = np.ascontiguousarray(wide.rgb[:, shift : shift + w])
    layer.alpha = np.ascontiguousarray(wide.alpha[:, shift : shift + w])
    canvas.composite(layer.flipped() if mirror else layer, label=0)
