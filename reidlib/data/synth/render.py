"""Render one SynthOcc shot: background, person, occluder or crop, camera response, and its ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from reidlib.data.synth.canvas import Canvas
from reidlib.data.synth.identity import Identity, make_identities, sample_identity
from reidlib.data.synth.occluders import KIND_POSITIONS, KIND_WEIGHTS, occlude
from reidlib.data.synth.person import VIEWPOINTS, draw_person, sample_pose
from reidlib.data.synth.protocols import STREAMS, Shot
from reidlib.data.synth.scene import Camera, background, expose, make_camera

PARSING_LABELS = (
    "background",
    "head",
    "torso",
    "left_arm",
    "right_arm",
    "left_leg",
    "right_leg",
    "left_foot",
    "right_foot",
)
PART_NAMES = PARSING_LABELS[1:]
POSITION_WEIGHTS = {"bottom": 0.4, "left": 0.22, "right": 0.22, "top": 0.16}
PARTIAL_SIDE_CROP_P = 0.25  # share of partial queries cut from the side rather than from below
CROP_MARGIN = 0.06  # background kept around a partial body, as a fraction of the image width
NUM_PASSERS_BY = 64  # extra identities that only ever appear as occluding pedestrians


@dataclass
class World:
    """Everything shared by the shots of one generation: identities, cameras, options."""

    seed: int
    opts: dict
    identities: dict[int, Identity]
    cameras: dict[int, Camera]
    passers_by: list[Identity]

    @classmethod
    def build(cls, seed: int, opts: dict) -> World:
        rng = np.random.default_rng([seed, 0x1D])
        n_train, n_test = opts["num_train_ids"], opts["num_test_ids"]
        family = (opts["family_fraction"], opts["family_size"])
        taken: set = set()  # looks in use: train and test identities never look the same
        train = make_identities(rng, n_train, 1, 1, *family, taken=taken)
        test = make_identities(rng, n_test, n_train + 1, train[-1].family + 1, *family, taken=taken)
        cams = {
            c: make_camera(seed, c, opts["height"], opts["width"], opts["camera_strength"])
            for c in range(1, opts["num_cameras"] + 1)
        }
        return cls(seed, opts, {i.pid: i for i in train + test}, cams, passers_by(seed))

    def pedestrian_pool(self, pid: int) -> list[Identity]:
        """Identities that may occlude `pid`: others of its own split (look-alike crowds) and passers-by."""
        is_train = pid <= self.opts["num_train_ids"]
        same = [
            i
            for i in self.identities.values()
            if i.pid != pid and (i.pid <= self.opts["num_train_ids"]) == is_train
        ]
        return same + self.passers_by


def passers_by(seed: int) -> list[Identity]:
    """The identities of a generation that only ever appear as occluding pedestrians."""
    rng = np.random.default_rng([seed, 0xBE])
    return [sample_identity(rng, pid=0, family=0) for _ in range(NUM_PASSERS_BY)]


def occluder_choice(rng: np.random.Generator, positions: tuple[str, ...], kinds: tuple[str, ...]):
    """A (position, kind) pair: positions keep their relative weights, kinds share a position's weight."""
    pairs, weights = [], []
    for pos in positions:
        fit = [k for k in kinds if pos in KIND_POSITIONS[k]]
        total = sum(KIND_WEIGHTS[k] for k in fit)
        for k in fit:
            pairs.append((pos, k))
            weights.append(POSITION_WEIGHTS[pos] * KIND_WEIGHTS[k] / total)
    w = np.asarray(weights)
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))]


def _crop_window(
    rng: np.random.Generator, person: np.ndarray, keep_range
) -> tuple[str, tuple[int, int, int, int]]:
    """Partial-REID-like window (r0, r1, c0, c1): a loose box around the top (or one side) of the body that
    keeps a `keep_range` share of its height (or width). Returns the side cut away and the window."""
    h, w = person.shape
    rows, cols = np.flatnonzero(person.any(axis=1)), np.flatnonzero(person.any(axis=0))
    margin = max(int(round(CROP_MARGIN * w)), 1)
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)
    keep = rng.uniform(*keep_range)
    if rng.random() < PARTIAL_SIDE_CROP_P:
        kept = max(int(round(keep * (cols[-1] + 1 - cols[0]))), 1)
        if rng.random() < 0.5:
            return "right", (r0, r1, c0, cols[0] + kept)  # the image's right part is cut away
        return "left", (r0, r1, cols[-1] + 1 - kept, c1)
    return "bottom", (r0, max(rows[0] + int(round(keep * (rows[-1] + 1 - rows[0]))), r0 + 1), c0, c1)


def _row(
    shot: Shot,
    ident: Identity,
    viewpoint: str,
    areas: np.ndarray,
    visible: np.ndarray,
    occluder: str = "none",
    position: str = "none",
    target: float = 0.0,
) -> dict:
    """The metadata of one image (without split and filename, which the writer adds)."""
    row = {
        "pid": shot.pid,
        "camid": shot.camid,
        "scene": shot.scene,
        "viewpoint": viewpoint,
        "occluder": occluder,
        "position": position,
        "target_fraction": round(float(target), 4),
        "occluded_fraction": occluded_fraction(areas, visible),
        "family": ident.family,
    }
    return {**row, **part_columns(areas, visible)}


def occluded_fraction(areas: np.ndarray, visible: np.ndarray) -> float:
    """Share of the person's pixels hidden: `areas` / `visible` are pixel counts per label (label 0 is
    background and occluders) before and after the occluder (or crop)."""
    return round(1.0 - float(visible[1:].sum()) / max(int(areas[1:].sum()), 1), 4)


def part_columns(areas: np.ndarray, visible: np.ndarray) -> dict:
    """vis_<part> (visible share of the part's pixels; NaN where the body itself hides the part) and
    area_<part> (its pixels without the occluder) for each of PART_NAMES, from per-label pixel counts."""
    vis = {f"vis_{name}": round(float(visible[k]) / float(areas[k]), 4) if areas[k] else float("nan")
           for k, name in enumerate(PART_NAMES, start=1)}
    return {**vis, **{f"area_{name}": int(areas[k]) for k, name in enumerate(PART_NAMES, start=1)}}


def render(shot: Shot, world: World, variants) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """The requested variants (clean, occluded, partial) of one shot, each as
    (image uint8 [H, W, 3], parsing labels uint8 [H, W], metadata row).

    The variants are one photograph: same scene, pose and sensor noise; the occluded one adds an occluder,
    the partial one crops the clean one. Each step draws from its own random stream, so a variant does not
    depend on which other variants are requested."""
    opts = world.opts
    h, w = opts["height"], opts["width"]
    key = [world.seed, STREAMS[shot.stream], shot.index]
    rng = np.random.default_rng(key + [1])
    cam = world.cameras[shot.scene]
    ident = world.identities[shot.pid]

    canvas = Canvas(h, w, background(cam, rng, h, w))
    viewpoint = VIEWPOINTS[int(rng.choice(len(VIEWPOINTS), p=cam.view_probs))]
    body_h = min(h * cam.scale * ident.height * rng.uniform(0.95, 1.04), h - 3.0)
    slack = h - body_h - 2.0
    foot_y = body_h + 1.0 + slack * rng.uniform(0.55, 1.0)
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    draw_person(canvas, ident, sample_pose(rng, viewpoint, body_h, cx, foot_y))
    areas = np.bincount(canvas.label.ravel(), minlength=len(PARSING_LABELS))

    def exposed(rgb: np.ndarray) -> np.ndarray:  # the same sensor response for every variant
        return expose(rgb, cam, np.random.default_rng(key + [2]))

    out = {}
    if "clean" in variants or "partial" in variants:
        image, label = exposed(canvas.rgb), canvas.label.copy()
        if "clean" in variants:
            out["clean"] = (image, label, _row(shot, ident, viewpoint, areas, areas))
        if "partial" in variants:
            out["partial"] = _partial(
                shot, ident, viewpoint, image, label, areas, np.random.default_rng(key + [3]), opts
            )
    if "occluded" in variants:
        occ_rng = np.random.default_rng(key + [4])
        position, occluder = occluder_choice(occ_rng, opts["occlusion_positions"], opts["occluder_kinds"])
        target = float(occ_rng.uniform(*opts["occlusion_ratio"]))
        occlude(canvas, occ_rng, occluder, position, target, world.pedestrian_pool(shot.pid), body_h)
        visible = np.bincount(canvas.label.ravel(), minlength=len(PARSING_LABELS))
        out["occluded"] = (
            exposed(canvas.rgb),
            canvas.label,
            _row(shot, ident, viewpoint, areas, visible, occluder, position, target),
        )
    return out


def _partial(shot, ident, viewpoint, image, label, areas, rng, opts):
    """Partial-REID-like query: a window of the clean picture holding part of the body, resized back to the
    full image size (stretched, as Partial-REID's crops are). Visibility is counted in the uncropped frame."""
    h, w = label.shape
    position, (r0, r1, c0, c1) = _crop_window(rng, label > 0, opts["partial_keep"])
    window = label[r0:r1, c0:c1]
    visible = np.bincount(window.ravel(), minlength=len(PARSING_LABELS))
    image = np.asarray(Image.fromarray(image[r0:r1, c0:c1]).resize((w, h), Image.BILINEAR))
    label = np.asarray(Image.fromarray(np.ascontiguousarray(window)).resize((w, h), Image.NEAREST))
    return image, label, _row(shot, ident, viewpoint, areas, visible, "crop", position, 0.0)
