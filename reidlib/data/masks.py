"""Human-parsing part masks: label-map PNGs and BPBreID's PifPaf confidence fields, grouped into K parts.

Two sources, one output. Every loader returns float32 masks `[K+1, h, w]` in [0, 1] whose channel 0 is
the background, `1 - max_k part_k` (BPBreID's "diff_from_max" background), and channels 1..K the parts of
a named grouping:

* ``source="parsing"``: a uint8 label map (one label per pixel, `PARSING_LABELS`), as SynthOcc writes
  and as any human parser can be made to write. Each part is the one-hot indicator of its labels.
* ``source="pifpaf"``: BPBreID's `.npy` of 36 PifPaf fields (17 keypoint confidence fields followed by
  19 part-affinity fields, `PIFPAF_FIELDS`). Each part is the channel-wise max over its fields, as in
  BPBreID's `MaskGroupingTransform` (combine_mode "max").

Groupings keep BPBreID's names (`masks.preprocess` in its configs: "five", "eight", "four_v", ...) and its
PifPaf field lists; the label-map version of each is the closest union of parsing labels. BPBreID also
renormalises the K+1 channels to sum to one; that is a modelling choice left to the method.

Where masks live (BPBreID's layout, `infer_masks_path`), `<root>` being the data set root:
    parsing: <root>/masks/parsing/<split_dir>/<image stem>.png
    pifpaf:  <root>/masks/pifpaf/<split_dir>/<image file name>.confidence_fields.npy
`<split_dir>` is the image's folder below the root (e.g. bounding_box_train). A record's own `mask_path`
(`load_dataset` fills it where a label map exists) takes precedence when it has the source's file type.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidlib.data.records import Record
from reidlib.registry import Registry

MASK_SOURCES = ("parsing", "pifpaf")

# Label ids of a parsing label map (SynthOcc's; occluder pixels are background).
PARSING_LABELS = {
    0: "background", 1: "head", 2: "torso", 3: "left_arm", 4: "right_arm",
    5: "left_leg", 6: "right_leg", 7: "left_foot", 8: "right_foot",
}

# Channel order of BPBreID's PifPaf `.confidence_fields.npy`: 17 keypoint fields, then 19 joint fields.
PIFPAF_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
PIFPAF_JOINTS = (
    "left_ankle_to_left_knee", "left_knee_to_left_hip", "right_ankle_to_right_knee",
    "right_knee_to_right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
    "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder", "left_shoulder_to_left_elbow",
    "right_shoulder_to_right_elbow", "left_elbow_to_left_wrist", "right_elbow_to_right_wrist",
    "left_eye_to_right_eye", "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear",
    "right_eye_to_right_ear", "left_ear_to_left_shoulder", "right_ear_to_right_shoulder",
)
PIFPAF_FIELDS = PIFPAF_KEYPOINTS + PIFPAF_JOINTS
_PIFPAF_INDEX = {name: i for i, name in enumerate(PIFPAF_FIELDS)}

MASK_SUFFIX = {"parsing": ".png", "pifpaf": ".confidence_fields.npy"}


class MissingMasksError(FileNotFoundError):
    """A method needs part masks and an image has none; the message says where and how to make them.

    Message first (like CorruptImageError) so the error survives a DataLoader worker's re-raise.
    """

    def __init__(self, message: str, looked_for: Sequence[str | Path] = ()):
        super().__init__(message)
        self.looked_for = [str(p) for p in looked_for]

    def __str__(self) -> str:  # OSError would format (errno, strerror) otherwise
        return self.args[0]

    def __reduce__(self):
        return type(self), (self.args[0], self.looked_for)

    @classmethod
    def for_image(cls, image: str, looked_for: Sequence[Path], source: str, missing: int = 1,
                  total: int = 1) -> MissingMasksError:
        paths = " or ".join(str(p) for p in looked_for)
        count = f" ({missing} of {total} images have none)" if total > 1 else ""
        return cls(
            f"no {source!r} part masks for image {image}{count}: looked for {paths}. "
            f"Make them: run a human parser and save uint8 label PNGs (labels {_label_legend()}) at "
            f"<root>/masks/parsing/<split_dir>/<image stem>.png, or save BPBreID's PifPaf fields "
            f"(36 x h x w) at <root>/masks/pifpaf/<split_dir>/<image file name>.confidence_fields.npy, "
            f"<split_dir> being the image's folder below the data set root; the SynthOcc data set ships "
            f"parsing masks (data.masks: parsing). Or set data.masks to null for a method that needs none.",
            looked_for,
        )


def _label_legend() -> str:
    return ", ".join(f"{i} {name}" for i, name in PARSING_LABELS.items())


# ------------------------------------------------------------------------------------------ groupings
@dataclass(frozen=True)
class MaskGrouping:
    """K named parts; each is a max over PifPaf fields and a union of parsing labels."""

    name: str
    bpbreid: str                                   # BPBreID's class for the PifPaf grouping
    parts: tuple[str, ...]
    pifpaf: tuple[tuple[str, ...], ...]            # per part: PifPaf field names
    parsing: tuple[tuple[int, ...], ...] | None    # per part: label ids; None when labels cannot express it

    def __post_init__(self):
        if len(self.pifpaf) != len(self.parts) or (self.parsing and len(self.parsing) != len(self.parts)):
            raise ValueError(f"mask grouping {self.name!r}: one field/label group per part")
        unknown = {f for group in self.pifpaf for f in group} - set(_PIFPAF_INDEX)
        if unknown:
            raise ValueError(f"mask grouping {self.name!r}: unknown PifPaf fields {sorted(unknown)}")

    @property
    def num_parts(self) -> int:
        return len(self.parts)

    def pifpaf_channels(self) -> list[list[int]]:
        return [[_PIFPAF_INDEX[f] for f in group] for group in self.pifpaf]

    def flip_pairs(self) -> list[tuple[int, int]]:
        """Part indices (0-based, background excluded) of left/right twins a horizontal flip swaps."""
        index = {p: i for i, p in enumerate(self.parts)}
        return [(i, index["right_" + p[5:]]) for i, p in enumerate(self.parts)
                if p.startswith("left_") and "right_" + p[5:] in index]


MASK_GROUPINGS: Registry[MaskGrouping] = Registry("mask grouping")


def _register(grouping: MaskGrouping) -> None:
    MASK_GROUPINGS.register(grouping.name)(grouping)


# BPBreID's recurring field groups (pifpaf_mask_transform.py); the groupings below are unions of them.
_HEAD = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_eye_to_right_eye",
         "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear", "right_eye_to_right_ear",
         "left_ear_to_left_shoulder", "right_ear_to_right_shoulder")
_LEFT_ARM = ("left_shoulder", "left_elbow", "left_wrist", "left_shoulder_to_left_elbow",
             "left_elbow_to_left_wrist")
_RIGHT_ARM = ("right_shoulder", "right_elbow", "right_wrist", "right_shoulder_to_right_elbow",
              "right_elbow_to_right_wrist")
_ARMS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
         "left_shoulder_to_left_elbow", "right_shoulder_to_right_elbow", "left_elbow_to_left_wrist",
         "right_elbow_to_right_wrist")
_TORSO = ("left_hip", "right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
          "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder")
_TORSO_WITH_SHOULDERS = ("left_shoulder", "right_shoulder") + _TORSO
_TORSO_ARMS = ("left_shoulder", "right_shoulder", "left_shoulder_to_left_hip", "right_shoulder_to_right_hip",
               "left_shoulder_to_right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_shoulder_to_left_elbow", "right_shoulder_to_right_elbow", "left_elbow_to_left_wrist",
               "right_elbow_to_right_wrist")
_THIGHS_SHINS = ("left_ankle_to_left_knee", "left_knee_to_left_hip", "right_ankle_to_right_knee",
                 "right_knee_to_right_hip")
_LEGS_NO_FEET = ("left_hip", "right_hip", "left_knee", "right_knee") + _THIGHS_SHINS
_LEGS_WITH_FEET = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
                   *_THIGHS_SHINS, "left_hip_to_right_hip")
_FEET = ("left_ankle", "right_ankle")

# Parsing label sets (PARSING_LABELS).
_L_HEAD, _L_TORSO, _L_ARMS, _L_LEGS, _L_FEET = (1,), (2,), (3, 4), (5, 6), (7, 8)
_L_BODY = (1, 2, 3, 4, 5, 6, 7, 8)

for _g in (
    MaskGrouping("full", "CombinePifPafIntoFullBodyMask", ("full_body",), (PIFPAF_FIELDS,), (_L_BODY,)),
    MaskGrouping("one", "CombinePifPafIntoOneBodyMasks", ("full_body",), (PIFPAF_FIELDS,), (_L_BODY,)),
    MaskGrouping("two_v", "CombinePifPafIntoTwoBodyMasks", ("torso_arms_head", "legs"),
                 (_HEAD + _TORSO_ARMS, _LEGS_WITH_FEET), (_L_HEAD + _L_TORSO + _L_ARMS, _L_LEGS + _L_FEET)),
    MaskGrouping("three_v", "CombinePifPafIntoThreeBodyMasks", ("head", "torso_arms", "legs"),
                 (_HEAD, _TORSO_ARMS, _LEGS_WITH_FEET), (_L_HEAD, _L_TORSO + _L_ARMS, _L_LEGS + _L_FEET)),
    MaskGrouping("four", "CombinePifPafIntoFourBodyMasks", ("head", "arms", "torso", "legs"),
                 (_HEAD, _ARMS, _TORSO_WITH_SHOULDERS, _LEGS_WITH_FEET),
                 (_L_HEAD, _L_ARMS, _L_TORSO, _L_LEGS + _L_FEET)),
    # RGANet's four regions: head, upper body, lower body, foot.
    MaskGrouping("four_v", "CombinePifPafIntoFourVerticalParts", ("head", "arms_torso", "legs", "feet"),
                 (_HEAD, _ARMS[2:] + _TORSO_WITH_SHOULDERS, _LEGS_NO_FEET, _FEET),
                 (_L_HEAD, _L_TORSO + _L_ARMS, _L_LEGS, _L_FEET)),
    # Horizontal bands through the torso cannot be read off a label map: PifPaf only.
    MaskGrouping("five_v", "CombinePifPafIntoFiveVerticalParts",
                 ("head", "upper_arms_torso", "lower_arms_torso", "legs", "feet"),
                 (_HEAD,
                  ("left_elbow", "right_elbow", "left_shoulder_to_left_elbow",
                   "right_shoulder_to_right_elbow", "left_shoulder", "right_shoulder",
                   "left_shoulder_to_right_shoulder"),
                  # BPBreID lists only the right shoulder-to-hip field here; kept as published.
                  ("left_wrist", "right_wrist", "left_elbow_to_left_wrist", "right_elbow_to_right_wrist",
                   "left_hip", "right_hip", "right_shoulder_to_right_hip"),
                  _LEGS_NO_FEET, _FEET),
                 None),
    # BPSEMA's K=5 (holistic data sets).
    MaskGrouping("five", "CombinePifPafIntoFiveBodyMasks", ("head", "arms", "torso", "legs", "feet"),
                 (_HEAD, _ARMS, _TORSO, ("left_hip_to_right_hip",) + _LEGS_NO_FEET, _FEET),
                 (_L_HEAD, _L_ARMS, _L_TORSO, _L_LEGS, _L_FEET)),
    # PAB-ReID's X=6: head, left/right arm, torso, left/right leg.
    MaskGrouping("six", "CombinePifPafIntoSixBodyMasks",
                 ("head", "left_arm", "right_arm", "torso", "left_leg", "right_leg"),
                 (_HEAD, _LEFT_ARM, _RIGHT_ARM, _TORSO,
                  ("left_knee", "left_ankle", "left_ankle_to_left_knee", "left_knee_to_left_hip",
                   "left_hip_to_right_hip"),
                  ("right_knee", "right_ankle", "right_ankle_to_right_knee", "right_knee_to_right_hip")),
                 ((1,), (3,), (4,), (2,), (5, 7), (6, 8))),
    # BPSEMA's K=8 (occluded data sets); BPBreID's default.
    MaskGrouping("eight", "CombinePifPafIntoEightBodyMasks",
                 ("head", "left_arm", "right_arm", "torso", "left_leg", "right_leg", "left_feet",
                  "right_feet"),
                 (_HEAD, _LEFT_ARM, _RIGHT_ARM, _TORSO,
                  ("left_knee", "left_ankle_to_left_knee", "left_knee_to_left_hip", "left_hip_to_right_hip"),
                  ("right_knee", "right_ankle_to_right_knee", "right_knee_to_right_hip"),
                  ("left_ankle",), ("right_ankle",)),
                 ((1,), (3,), (4,), (2,), (5,), (6,), (7,), (8,))),
):
    _register(_g)


def get_grouping(grouping: str, source: str | None = None) -> MaskGrouping:
    """The named grouping; with `source`, also check that the source can express it."""
    g = MASK_GROUPINGS.get(grouping)
    if source is not None:
        _check_source(source)
        if source == "parsing" and g.parsing is None:
            raise ValueError(f"mask grouping {grouping!r} needs PifPaf fields (its parts cut through "
                             f"labels); with parsing label maps use one of {grouping_names('parsing')}")
    return g


def grouping_names(source: str | None = None) -> list[str]:
    """Registered grouping names; with `source`, only those that source can express."""
    names = MASK_GROUPINGS.names()
    if source == "parsing":
        return [n for n in names if MASK_GROUPINGS.get(n).parsing is not None]
    if source is not None:
        _check_source(source)
    return names


def num_parts(grouping: str) -> int:
    """K, the number of body parts (the mask tensors have K+1 channels with the background)."""
    return get_grouping(grouping).num_parts


def part_names(grouping: str) -> list[str]:
    """Names of the K parts, in channel order 1..K (channel 0 is the background)."""
    return list(get_grouping(grouping).parts)


def _check_source(source: str) -> None:
    if source not in MASK_SOURCES:
        raise ValueError(f"unknown mask source {source!r}; use one of {list(MASK_SOURCES)}")


# ------------------------------------------------------------------------------------------ grouping
def with_background(parts: np.ndarray) -> np.ndarray:
    """[K, h, w] parts in [0, 1] -> [K+1, h, w] with channel 0 = 1 - max_k parts (BPBreID's background)."""
    background = 1.0 - parts.max(axis=0, keepdims=True)  # [1, h, w]
    return np.concatenate([background, parts], axis=0).astype(np.float32)


@functools.cache
def _label_table(grouping: str) -> np.ndarray:
    """[K, 256] float32: table[k, label] = 1 when part k contains `label` (one gather groups a map)."""
    g = get_grouping(grouping, "parsing")
    table = np.zeros((g.num_parts, 256), dtype=np.float32)
    for k, labels in enumerate(g.parsing):
        table[k, list(labels)] = 1.0
    return table


def group_label_map(labels: np.ndarray, grouping: str) -> np.ndarray:
    """[h, w] uint8 labels -> [K+1, h, w] float32 one-hot per group, background first."""
    parts = np.ascontiguousarray(np.take(_label_table(grouping), labels, axis=1))  # [K, h, w]
    return with_background(parts)


def group_pifpaf(fields: np.ndarray, grouping: str) -> np.ndarray:
    """[36, h, w] PifPaf fields -> [K+1, h, w] float32: per part the channel-wise max, clipped to [0, 1]."""
    g = get_grouping(grouping, "pifpaf")
    parts = np.stack([fields[idx].max(axis=0) for idx in g.pifpaf_channels()])  # [K, h, w]
    return with_background(np.clip(parts, 0.0, 1.0))


# ------------------------------------------------------------------------------------------ reading
def read_label_map(path: str | Path) -> np.ndarray:
    """A single-channel label PNG as an [h, w] uint8 array with labels in PARSING_LABELS."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise ValueError(f"part-mask label map {path} has mode {im.mode}; save it as a "
                                 f"single-channel (mode L or P) uint8 PNG with one label per pixel: "
                                 f"{_label_legend()}")
            labels = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read part-mask label map {path}: {exc}; re-create it") from exc
    unknown = np.setdiff1d(np.unique(labels), list(PARSING_LABELS))
    if unknown.size:
        raise ValueError(f"part-mask label map {path} has labels {unknown.tolist()}; allowed: "
                         f"{_label_legend()} (map your parser's classes onto these)")
    return labels


def read_pifpaf(path: str | Path) -> np.ndarray:
    """BPBreID's PifPaf confidence fields as a [36, h, w] float32 array."""
    try:
        fields = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read PifPaf fields {path}: {exc}; re-create it") from exc
    if fields.ndim != 3 or fields.shape[0] != len(PIFPAF_FIELDS):
        raise ValueError(f"PifPaf fields {path} have shape {fields.shape}; expected "
                         f"[{len(PIFPAF_FIELDS)}, h, w] (17 keypoint + 19 joint confidence fields)")
    return fields.astype(np.float32, copy=False)


def load_part_masks(path: str | Path, source: str = "parsing", grouping: str = "five") -> np.ndarray:
    """Read one mask file -> float32 [K+1, h, w] in [0, 1], channel 0 the background."""
    _check_source(source)
    if source == "parsing":
        return group_label_map(read_label_map(path), grouping)
    return group_pifpaf(read_pifpaf(path), grouping)


# ------------------------------------------------------------------------------------------ locating
def expected_mask_paths(record_or_path: Record | str | Path, root: str | Path | None,
                        source: str) -> list[Path]:
    """Where the masks of an image may be, in the order they are tried.

    1. the record's own `mask_path`, when it has this source's file type (`load_dataset` fills it);
    2. `<root>/masks/<source>/<split_dir>/<name>`, `<split_dir>` being the image's folder below `root`
       (bounding_box_train, or occluded_body_images/001) -- as `reidlib.data.formats` attaches masks;
    3. BPBreID's `infer_masks_path`: `masks/<source>/<folder name>/<name>` beside the image's folder
       (its `dataset_dir`), when that differs.
    """
    _check_source(source)
    candidates: list[Path] = []
    if isinstance(record_or_path, Record):
        image = Path(record_or_path.path)
        own = record_or_path.mask_path
        if own and str(own).endswith(MASK_SUFFIX[source]):
            own_path = Path(own)
            candidates.append(own_path if own_path.is_absolute() or root is None else Path(root) / own_path)
    else:
        image = Path(record_or_path)
    name = image.stem + ".png" if source == "parsing" else image.name + MASK_SUFFIX["pifpaf"]
    layouts = []
    if root is not None:
        try:
            split_dir = image.parent.relative_to(root)
        except ValueError:  # an image outside root: its folder name
            split_dir = Path(image.parent.name)
        layouts.append(Path(root) / "masks" / source / split_dir / name)
    layouts.append(image.parent.parent / "masks" / source / image.parent.name / name)
    candidates += [p for i, p in enumerate(layouts) if p not in candidates and p not in layouts[:i]]
    return candidates


def locate_mask(record_or_path: Record | str | Path, root: str | Path | None, source: str) -> Path:
    """The mask file of one image, or MissingMasksError naming every place looked at."""
    candidates = expected_mask_paths(record_or_path, root, source)
    for path in candidates:
        if path.is_file():
            return path
    image = record_or_path.path if isinstance(record_or_path, Record) else str(record_or_path)
    raise MissingMasksError.for_image(image, candidates, source)


def check_masks(records: Iterable[Record], root: str | Path | None, source: str) -> None:
    """Raise MissingMasksError (first missing image, and how many) unless every record has a mask."""
    records = list(records)
    missing = []
    for rec in records:
        candidates = expected_mask_paths(rec, root, source)
        if not any(p.is_file() for p in candidates):
            missing.append((rec, candidates))
    if missing:
        rec, candidates = missing[0]
        raise MissingMasksError.for_image(rec.path, candidates, source, missing=len(missing),
                                          total=len(records))


__all__ = [
    "MASK_SOURCES", "PARSING_LABELS", "PIFPAF_KEYPOINTS", "PIFPAF_JOINTS", "PIFPAF_FIELDS", "MASK_SUFFIX",
    "MissingMasksError", "MaskGrouping", "MASK_GROUPINGS", "get_grouping", "grouping_names", "num_parts",
    "part_names", "with_background", "group_label_map", "group_pifpaf", "read_label_map", "read_pifpaf",
    "load_part_masks", "expected_mask_paths", "locate_mask", "check_masks",
]
