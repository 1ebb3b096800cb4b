"""SynthOcc's occluders drawn over a photograph: the generator's own placement and drawing (occluders.occlude)
on a canvas whose background is the photo and whose label map is the photo's parsing labels, or, without
them, the whole crop marked as person (a re-id crop is the person's bounding box)."""

from __future__ import annotations

import numpy as np

from reidlib.data.synth.canvas import Canvas
from reidlib.data.synth.identity import Identity
from reidlib.data.synth.occluders import occlude
from reidlib.data.synth.render import PARSING_LABELS, occluded_fraction, occluder_choice, part_columns

UNKNOWN_PART = 255  # person pixel of a photo without parsing labels: counted as person, in no part


def person_labels(labels: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The label map the occluder search works on: the photo's parsing labels, or UNKNOWN_PART everywhere."""
    if labels is None:
        return np.full(shape, UNKNOWN_PART, np.uint8)
    if labels.shape != shape:
        raise ValueError(f"parsing labels of shape {labels.shape} for an image of {shape}")
    return labels.astype(np.uint8)


def _person_height(labels: np.ndarray) -> float:
    """Rows the person spans (an occluding pedestrian is drawn at about this height)."""
    rows = np.flatnonzero((labels > 0).any(axis=1))
    return float(rows[-1] + 1 - rows[0]) if len(rows) else float(labels.shape[0])


def occlude_photo(image: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator, opts: dict,
                  pedestrians: list[Identity]) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """One occluder over `image` (uint8 [H, W, 3]) with its parsing labels `labels` ([H, W], SynthOcc's
    PARSING_LABELS, or None: the whole crop is the person), chosen and sized as SynthOcc does from `opts`
    (occlusion_positions, occluder_kinds, occlusion_ratio). Returns the occluded image, the person labels
    with covered pixels set to 0, and two sets of SynthOcc's metadata fields: occluder, position,
    target_fraction, occluded_fraction; and vis_<part> / area_<part> (NaN without parsing labels)."""
    person = person_labels(labels, image.shape[:2])
    canvas = Canvas(*person.shape, image.astype(np.float32) / 255.0)
    canvas.label = person.copy()
    position, kind = occluder_choice(rng, opts["occlusion_positions"], opts["occluder_kinds"])
    target = float(rng.uniform(*opts["occlusion_ratio"]))
    occlude(canvas, rng, kind, position, target, pedestrians, _person_height(person))
    occluded = np.rint(np.clip(canvas.rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    areas, visible = (np.bincount(m.ravel(), minlength=len(PARSING_LABELS)) for m in (person, canvas.label))
    parts = part_columns(areas, visible)
    if labels is None:  # the parts are unknown
        parts = dict.fromkeys(parts, float("nan"))
    fields = {"occluder": kind, "position": position, "target_fraction": round(target, 4),
              "occluded_fraction": occluded_fraction(areas, visible)}
    return occluded, canvas.label, fields, parts
