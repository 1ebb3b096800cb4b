"""SynthOcc cameras: each has its own background (wall + ground textures), illumination, colour cast,
sensor noise and blur, person scale and preferred viewpoints.

A camera's background is rendered once as a strip wider than an image; every image crops it at a random
offset, so the images of one camera share a scene without being identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from reidlib.data.synth.person import VIEWPOINTS

WALLS = ("brick", "facade", "foliage", "glass", "plain")
GROUNDS = ("tiles", "asphalt", "grass", "floor")
DOMINANT_VIEW_PROB = 0.6  # a camera sees mostly one side of people (walking direction past it)


@dataclass
class Camera:
    camid: int  # 1-based
    wall: str
    ground: str
    horizon: float  # fraction of the image height where the wall meets the ground
    gain: float  # overall brightness
    cast: np.ndarray  # [3] colour cast multipliers
    contrast: float
    gradient: float  # left-to-right illumination slope
    noise: float  # sensor noise standard deviation (fraction of full scale)
    blur: float  # Gaussian blur radius in pixels (low-resolution cameras)
    scale: float  # body height / image height
    view_probs: tuple[float, float, float]  # P(front), P(back), P(side)
    strip: np.ndarray = field(repr=False, default=None)  # [h * 5/4, 3w, 3] background texture
    noise_field: np.ndarray = field(repr=False, default=None)  # [2h, 2w, 3] sensor noise, 0..255 scale


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled to h x w."""
    gh, gw = max(int(h / cell) + 2, 2), max(int(w / cell) + 2, 2)
    grid = rng.random((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR))


def _wall(rng: np.random.Generator, kind: str, h: int, w: int, unit: float) -> np.ndarray:
    """[h, w, 3] wall texture; `unit` is the image height (texture scales with the image)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0.25, 0.8, size=3).astype(np.float32)
    if kind == "brick":
        bh = unit / 14
        bw = 2.2 * bh
        row = np.floor(yy / bh)
        shift = (row % 2) * bw / 2
        col = np.floor((xx + shift) / bw)
        brick_id = (row * 7919 + col * 104729) % 97 / 97.0  # per-brick tone, no extra randomness needed
        base = np.array([0.55, 0.28, 0.2], np.float32) * rng.uniform(0.7, 1.2, size=3).astype(np.float32)
        tex = base * (0.8 + 0.35 * brick_id)[..., None]
        mortar = ((yy % bh) < max(bh * 0.12, 1)) | (((xx + shift) % bw) < max(bw * 0.06, 1))
        return np.where(mortar[..., None], np.float32(0.72), tex)
    if kind == "facade":
        period_y, period_x = unit / 4.5, unit / 5.0
        win = (
            ((yy % period_y) > 0.25 * period_y)
            & ((yy % period_y) < 0.8 * period_y)
            & ((xx % period_x) > 0.25 * period_x)
            & ((xx % period_x) < 0.75 * period_x)
        )
        glass = np.array([0.25, 0.3, 0.38], np.float32) * rng.uniform(0.7, 1.3)
        noise = _smooth_noise(rng, h, w, unit / 10)[..., None]
        return np.where(win[..., None], glass * (0.8 + 0.4 * noise), base * (0.9 + 0.15 * noise))
    if kind == "foliage":
        n = 0.6 * _smooth_noise(rng, h, w, unit / 10) + 0.4 * _smooth_noise(rng, h, w, unit / 30)
        green = np.array([0.2, 0.42, 0.16], np.float32) * rng.uniform(0.75, 1.25, size=3).astype(np.float32)
        return green * (0.45 + 0.9 * n)[..., None]
    if kind == "glass":
        panel = unit / 3
        frame = (xx % panel) < max(unit / 40, 1)
        reflect = 0.5 + 0.5 * np.sin((xx + yy * 0.6) / unit * 9.0)
        tex = (base * 0.5 + 0.25) * (0.7 + 0.35 * reflect)[..., None]
        return np.where(frame[..., None], np.float32(0.2), tex)
    # plain painted wall: a vertical light gradient and faint stains
    stains = 0.95 + 0.1 * _smooth_noise(rng, h, w, unit / 6)
    return base * ((0.85 + 0.25 * yy / h) * stains)[..., None]


def _ground(rng: np.random.Generator, kind: str, h: int, w: int, unit: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.0 + 2.0 * yy / max(h, 1)  # perspective: features grow towards the camera
    if kind == "tiles":
        size = unit / 16 * depth
        tone = rng.uniform(0.45, 0.75)
        gy, gx = np.floor(yy / size * 2), np.floor(xx / size)
        tile = ((gy * 31 + gx * 17) % 13) / 13.0
        joint = ((yy * 2 / size) % 1 < 0.12) | ((xx / size) % 1 < 0.08)
        tex = np.float32(tone) * (0.9 + 0.15 * tile)[..., None] * np.array([1.0, 0.97, 0.92], np.float32)
        return np.where(joint[..., None], np.float32(tone * 0.7), tex)
    if kind == "asphalt":
        n = _smooth_noise(rng, h, w, 2.0)
        tex = np.float32(rng.uniform(0.22, 0.36)) * (0.85 + 0.3 * n)[..., None] * np.ones(3, np.float32)
        line_y = h * rng.uniform(0.4, 0.8)
        line = np.abs(yy - line_y) < max(unit / 60, 0.8) * depth
        paint = np.array([0.85, 0.8, 0.4], np.float32) if rng.random() < 0.4 else np.float32(0.85)
        return np.where(line[..., None], paint, tex)
    if kind == "grass":
        n = 0.5 * _smooth_noise(rng, h, w, unit / 20) + 0.5 * _smooth_noise(rng, h, w, 1.5)
        return np.array([0.28, 0.45, 0.18], np.float32) * (0.6 + 0.7 * n)[..., None]
    tone = rng.uniform(0.5, 0.8)  # floor: polished, brighter far away
    tex = (
        np.float32(tone)
        * (1.05 - 0.25 * yy / max(h, 1))[..., None]
        * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    )
    seams = xx % (unit / 3) < 1
    return np.where(seams[..., None], np.float32(tone * 0.75), tex)


def make_camera(seed: int, camid: int, height: int, width: int, strength: float = 1.0) -> Camera:
    """Camera `camid` of the set drawn from `seed`; `strength` in [0, 1] scales how much cameras differ."""
    rng = np.random.default_rng([seed, 0xCA, camid])
    wall, ground = WALLS[int(rng.integers(len(WALLS)))], GROUNDS[int(rng.integers(len(GROUNDS)))]
    horizon = float(rng.uniform(0.45, 0.75))
    dominant = (camid - 1) % len(VIEWPOINTS)
    probs = [(1 - DOMINANT_VIEW_PROB) / 2] * 3
    probs[dominant] = DOMINANT_VIEW_PROB

    def towards(value, neutral):
        return neutral + strength * (value - neutral)

    cast = rng.uniform(0.78, 1.22, size=3)
    cast = cast / cast.mean()
    cam = Camera(
        camid=camid,
        wall=wall,
        ground=ground,
        horizon=horizon,
        gain=float(towards(rng.uniform(0.62, 1.3), 1.0)),
        cast=towards(cast, 1.0).astype(np.float32),
        contrast=float(towards(rng.uniform(0.75, 1.15), 1.0)),
        gradient=float(towards(rng.uniform(-0.35, 0.35), 0.0)),
        noise=float(towards(rng.uniform(0.005, 0.04), 0.0)),
        blur=float(towards(rng.choice([0.0, 0.0, 0.35, 0.6]), 0.0) * height / 128),
        scale=float(rng.uniform(0.74, 0.92)),
        view_probs=tuple(probs),
    )
    sh, sw = height + height // 4, 3 * width
    split = int(sh * horizon)
    strip = np.empty((sh, sw, 3), np.float32)
    strip[:split] = _wall(rng, wall, split, sw, height)
    strip[split:] = _ground(rng, ground, sh - split, sw, height)
    cam.strip = np.clip(strip, 0, 1)
    noise = rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
    cam.noise_field = noise * np.float32(255.0 * cam.noise)
    return cam


def background(cam: Camera, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[h, w, 3] random crop of the camera's background strip."""
    sh, sw = cam.strip.shape[:2]
    y0, x0 = int(rng.integers(0, sh - height + 1)), int(rng.integers(0, sw - width + 1))
    return cam.strip[y0 : y0 + height, x0 : x0 + width].copy()


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an [h, w, 3] float image (edges replicated)."""
    radius = max(int(np.ceil(2 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
        n = img.shape[axis]
        padded = np.concatenate([np.repeat(img.take([0], axis), radius, axis), img,
                                 np.repeat(img.take([n - 1], axis), radius, axis)], axis)
        out = np.zeros_like(img)
        for i, t in enumerate(taps):
            out += t * (padded[i:i + n] if axis == 0 else padded[:, i:i + n])
        img = out
    return img


def expose(rgb: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Camera response: optics blur, then contrast, gain, colour cast, lateral light ramp and sensor noise
    -> uint8 [h, w, 3]. The noise is a random window of the camera's noise field (cheaper than fresh noise
    for every image, and as random at this scale)."""
    h, w = rgb.shape[:2]
    if cam.blur > 0.05:
        rgb = _blur(rgb, cam.blur)
    gain = cam.gain * rng.uniform(0.92, 1.08)  # light changes between frames
    ramp = 1.0 + cam.gradient * (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)  # [w]
    k = (255.0 * gain * cam.cast)[None, None, :] * ramp[None, :, None]  # [1, w, 3] per-column channel gains
    # ((rgb - 0.5) * contrast + 0.5) * k, as one multiply-add
    out = rgb * (cam.contrast * k).astype(np.float32)
    out += ((0.5 - 0.5 * cam.contrast) * k + 0.5).astype(np.float32)
    if cam.noise > 0:
        nh, nw = cam.noise_field.shape[:2]
        y0, x0 = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        out += cam.noise_field[y0:y0 + h, x0:x0 + w]
    np.maximum(out, 0, out=out)
    return np.minimum(out, 255, out=out).astype(np.uint8)
