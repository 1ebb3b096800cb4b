"""Vectorised 2-D drawing for SynthOcc: anti-aliased primitives composited into RGB + alpha + label planes.

Every primitive is evaluated only on the pixels of its clipped bounding box, as a signed distance turned into
a soft coverage `clip(0.5 - d, 0, 1)` (one pixel of anti-aliasing); a pixel takes a primitive's label when
the primitive covers at least half of it, so the label map matches what the eye sees in the RGB image.
Colours are linear floats in [0, 1]; the RGB plane is premultiplied by alpha, which makes a transparent
canvas a layer that `composite` lays over another canvas (occluders are drawn this way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

Colour = np.ndarray  # [3] float32 in [0, 1]
Texture = Callable[["Patch"], np.ndarray]  # patch -> [h, w, 3] colours


@dataclass
class Patch:
    """A primitive rasterised on its bounding box `(ys, xs)` of the canvas."""

    ys: slice
    xs: slice
    yy: np.ndarray  # [h, 1] pixel-centre rows (canvas coordinates)
    xx: np.ndarray  # [1, w] pixel-centre columns
    cover: np.ndarray  # [h, w] soft coverage in [0, 1]
    shade: np.ndarray | float  # [h, w] 1 on the medial line of the shape, 0 on its rim (fake volume)

    def clip(self, keep: np.ndarray) -> Patch:
        """Keep coverage only where `keep` ([h, w] or broadcastable) is true or positive (used to cut
        shapes, e.g. the upper half of an ellipse for a cap)."""
        self.cover = self.cover * keep
        return self


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Soft coverage clip(0.5 - d, 0, 1), with ufuncs (np.clip is slow on the small arrays used here)."""
    cover = np.subtract(np.float32(0.5), signed_distance)
    np.maximum(cover, 0.0, out=cover)
    return np.minimum(cover, 1.0, out=cover)


def _unit_clip(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


@lru_cache(maxsize=16)
def _centres(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) + np.float32(0.5)


class Canvas:
    """RGB (premultiplied), alpha and label planes of one image or one layer.

    Three uses: an image (`background` given: opaque, alpha is not tracked), a transparent layer, and a
    silhouette (`silhouette=True`: only alpha is drawn, which is all an occluder search needs)."""

    def __init__(
        self, height: int, width: int, background: np.ndarray | None = None, silhouette: bool = False
    ):
        self.h, self.w = int(height), int(width)
        self.silhouette = silhouette
        self.opaque = background is not None
        if self.opaque:
            self.rgb = np.ascontiguousarray(background, dtype=np.float32)
            self.alpha = np.ones((self.h, self.w), np.float32)
        else:
            self.rgb = None if silhouette else np.zeros((self.h, self.w, 3), np.float32)
            self.alpha = np.zeros((self.h, self.w), np.float32)
        self.label = np.zeros((self.h, self.w), np.uint8)
        self._rows = _centres(self.h)[:, None]  # pixel centres
        self._cols = _centres(self.w)[None, :]

    def _window(self, y0: float, y1: float, x0: float, x1: float):
        """Bounding box clipped to the canvas as (row slice, column slice, rows [h, 1], columns [1, w]),
        or None when it is empty."""
        r0, r1 = max(int(y0) - 2, 0), min(int(y1) + 2, self.h)
        c0, c1 = max(int(x0) - 2, 0), min(int(x1) + 2, self.w)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1), self._rows[r0:r1], self._cols[:, c0:c1]

    # ---- primitives -------------------------------------------------------------------------------------
    def capsule(self, p0, p1, r0: float, r1: float | None = None) -> Patch | None:
        """Segment p0-p1 (points as (y, x)) swept by a disc of radius r0 -> r1 (a tapered limb)."""
        r1 = r0 if r1 is None else r1
        (ya, xa), (yb, xb) = p0, p1
        rmax = max(r0, r1)
        win = self._window(min(ya, yb) - rmax, max(ya, yb) + rmax, min(xa, xb) - rmax, max(xa, xb) + rmax)
        if win is None:
            return None
        ys, xs, yy, xx = win
        dy, dx = yb - ya, xb - xa
        inv = 1.0 / max(dy * dy + dx * dx, 1e-6)
        t = _unit_clip((yy - ya) * (dy * inv) + (xx - xa) * (dx * inv))  # projection on the segment
        d = np.sqrt(np.square(yy - ya - t * dy) + np.square(xx - xa - t * dx))
        r = r0 + t * (r1 - r0) if r1 != r0 else np.float32(r0)
        q = d / r
        return Patch(ys, xs, yy, xx, _coverage(d - r), np.maximum(1.0 - q * q, 0.0, out=q))

    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> Patch | None:
        win = self._window(cy - ry, cy + ry, cx - rx, cx + rx)
        if win is None:
            return None
        ys, xs, yy, xx = win
        q2 = np.square((yy - cy) * (1.0 / ry)) + np.square((xx - cx) * (1.0 / rx))
        # (q - 1) * min radius approximates the signed distance well enough for one pixel of anti-aliasing
        cover = _coverage((np.sqrt(q2) - 1.0) * min(rx, ry))
        return Patch(ys, xs, yy, xx, cover, np.maximum(1.0 - q2, 0.0, out=q2))

    def trapezoid(
        self, y_top: float, y_bot: float, cx_top: float, cx_bot: float, hw_top: float, hw_bot: float
    ) -> Patch | None:
        """Rows y_top..y_bot whose centre and half width move linearly from top to bottom (torso, skirt)."""
        hw = max(hw_top, hw_bot)
        win = self._window(y_top, y_bot, min(cx_top, cx_bot) - hw, max(cx_top, cx_bot) + hw)
        if win is None:
            return None
        ys, xs, yy, xx = win
        t = _unit_clip((yy - y_top) * (1.0 / max(y_bot - y_top, 1e-6)))
        centre = cx_top + t * (cx_bot - cx_top)
        half = hw_top + t * (hw_bot - hw_top)
        dx = np.abs(xx - centre) - half
        dy = np.maximum(y_top - yy, yy - y_bot)
        shade = np.maximum(1.0 - np.square((xx - centre) / half), 0.0)
        return Patch(ys, xs, yy, xx, _coverage(np.maximum(dx, dy)), shade)

    def box(self, y0: float, y1: float, x0: float, x1: float, radius: float = 0.0) -> Patch | None:
        """Axis-aligned rectangle with rounded corners of `radius` pixels."""
        win = self._window(y0, y1, x0, x1)
        if win is None:
            return None
        ys, xs, yy, xx = win
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        radius = min(radius, (y1 - y0) / 2, (x1 - x0) / 2)
        qy = np.abs(yy - cy) - ((y1 - y0) / 2 - radius)
        qx = np.abs(xx - cx) - ((x1 - x0) / 2 - radius)
        outside = np.hypot(np.maximum(qy, 0.0), np.maximum(qx, 0.0))
        d = outside + np.minimum(np.maximum(qy, qx), 0.0) - radius  # box signed distance
        return Patch(ys, xs, yy, xx, _coverage(d), 1.0)

    # ---- painting ---------------------------------------------------------------------------------------
    def paint(
        self,
        patch: Patch | None,
        colour,
        label: int | None = None,
        texture: Texture | None = None,
        shading: float = 0.3,
        opacity: float = 1.0,
    ) -> None:
        """Lay `colour` (or `texture(patch)`) over the canvas where the patch covers it ("over" operator).

        `shading` darkens the rim of the shape by that fraction; `label` (when given) is written where the
        patch covers at least half a pixel, `label=0` erases person labels (occluders)."""
        if patch is None:
            return
        a = patch.cover if opacity == 1.0 else patch.cover * np.float32(opacity)  # [h, w]
        if not self.opaque:
            alpha = self.alpha[patch.ys, patch.xs]  # views: updated in place
            alpha += (1.0 - alpha) * a
        if self.silhouette:
            return
        if texture is not None:
            col = texture(patch)
        else:
            col = np.asarray(colour, np.float32)
        if shading:
            col = (
                col
                * (np.asarray(patch.shade, np.float32) * np.float32(shading) + np.float32(1.0 - shading))[
                    ..., None
                ]
            )
        region = self.rgb[patch.ys, patch.xs]
        region += (col - region) * a[..., None]
        if label is not None:
            np.copyto(self.label[patch.ys, patch.xs], np.uint8(label), where=a >= 0.5)

    def composite(self, layer: Canvas, label: int | None = 0) -> None:
        """Lay a (premultiplied) layer of the same size over this canvas; its opaque pixels take `label`."""
        a = layer.alpha[..., None]
        self.rgb = self.rgb * (1.0 - a) + layer.rgb
        if not self.opaque:
            self.alpha = self.alpha * (1.0 - layer.alpha) + layer.alpha
        if label is not None:
            self.label[layer.alpha >= 0.5] = label

    def flipped(self) -> Canvas:
        """A left-right mirror image (layers drawn entering from the left, mirrored for the right)."""
        out = Canvas(self.h, self.w)
        out.rgb = self.rgb[:, ::-1].copy()
        out.alpha = self.alpha[:, ::-1].copy()
        out.label = self.label[:, ::-1].copy()
        return out


# ---- textures ----------------------------------------------------------------------------------------------
def stripes(c1, c2, origin: float, period: float, vertical: bool = False) -> Texture:
    """Alternating bands of `period` pixels (a full cycle), horizontal unless `vertical`."""
    c1, c2 = np.asarray(c1, np.float32), np.asarray(c2, np.float32)

    def texture(p: Patch) -> np.ndarray:
        coord = p.xx if vertical else p.yy
        on = np.floor((coord - origin) / (period / 2)) % 2 == 0
        on = np.broadcast_to(on, p.cover.shape)
        return np.where(on[..., None], c1, c2)

    return texture


def checks(c1, c2, origin_y: float, origin_x: float, period: float) -> Texture:
    c1, c2 = np.asarray(c1, np.float32), np.asarray(c2, np.float32)

    def texture(p: Patch) -> np.ndarray:
        cell = np.floor((p.yy - origin_y) / (period / 2)) + np.floor((p.xx - origin_x) / (period / 2))
        return np.where((cell % 2 == 0)[..., None], c1, c2)

    return texture
