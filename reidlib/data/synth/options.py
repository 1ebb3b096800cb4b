"""SynthOcc options: size presets, defaults, validation with errors that say what is allowed, cache key."""

from __future__ import annotations

import hashlib
import json
import math

from reidlib.config import ConfigError
from reidlib.data.synth.occluders import KIND_POSITIONS, OCCLUDER_KINDS, POSITIONS
from reidlib.data.synth.protocols import PROTOCOLS

VERSION = 2  # bump whenever the pictures or the layout change: cached sets are regenerated
PRESETS: dict[str, dict] = {
    # tiny: every code path in tests, in about a second
    "ci": dict(height=64, width=32, num_train_ids=16, num_test_ids=8, num_cameras=4, train_per_id=(4, 4),
               query_per_id=(1, 2), gallery_per_id=(3, 3), reid_images_per_id=2),
    # the default: large enough that methods differ, generated in well under a minute on one core
    "demo": dict(height=128, width=64, num_train_ids=180, num_test_ids=100, num_cameras=6,
                 train_per_id=(8, 12), query_per_id=(1, 3), gallery_per_id=(6, 10), reid_images_per_id=3),
    # larger and at the papers' resolution (Occluded-Duke has 702 train / 1,110 test identities)
    "paper": dict(height=256, width=128, num_train_ids=500, num_test_ids=500, num_cameras=8,
                  train_per_id=(12, 20), query_per_id=(1, 3), gallery_per_id=(8, 12), reid_images_per_id=5),
}
DEFAULTS: dict = dict(
    occlusion_ratio=(0.2, 0.55),  # fraction of the body's pixels an occluder hides, drawn uniformly
    occlusion_positions=POSITIONS,  # where occluders enter from ("side" = left and right)
    occluder_kinds=OCCLUDER_KINDS,
    train_occluded=0.5,  # occluded_duke: share of occluded training images
    query_occluded=1.0,  # occluded_duke: share of occluded queries
    gallery_occluded=0.1,  # occluded_duke: share of occluded gallery images
    family_fraction=0.5,  # share of identities with look-alikes differing in one body region
    family_size=3,  # largest family
    partial_keep=(0.45, 0.8),  # partial_reid: share of the body's height (or width) a crop keeps
    camera_strength=1.0,  # 0: identical illumination in all cameras, 1: full differences
    jpeg_quality=92,
)
_INT_MIN = {"height": 32, "width": 16, "num_train_ids": 2, "num_test_ids": 1, "num_cameras": 2,
            "reid_images_per_id": 1, "family_size": 1}
_INT_RANGES = ("train_per_id", "query_per_id", "gallery_per_id")
_FRACTIONS = ("train_occluded", "query_occluded", "gallery_occluded", "family_fraction", "camera_strength")
_FRACTION_RANGES = ("occlusion_ratio", "partial_keep")
_CHOICES = {"occlusion_positions": POSITIONS, "occluder_kinds": OCCLUDER_KINDS}


def _pair(name: str, value) -> tuple:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return tuple(value)
    raise ConfigError(f"synthocc option {name}={value!r}: give one number or a (low, high) pair")


def _number(name: str, value, integer: bool):
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or (not integer and not math.isfinite(value)):
        raise ConfigError(
            f"synthocc option {name}={value!r}: expected {'an integer' if integer else 'a number'}"
        )
    return int(value) if integer else float(value)


def resolve_options(size: str = "demo", **options) -> dict:
    """The full, validated option set: the `size` preset and DEFAULTS, overridden by `options`."""
    if size not in PRESETS:
        raise ConfigError(f"unknown SynthOcc size {size!r}; choose one of {', '.join(PRESETS)}")
    known = {**PRESETS[size], **DEFAULTS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown SynthOcc option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    opts = {**known, **options}
    for name, low in _INT_MIN.items():
        opts[name] = _number(name, opts[name], integer=True)
        if opts[name] < low:
            raise ConfigError(f"synthocc option {name}={opts[name]} is too small; use at least {low}")
    q = _number("jpeg_quality", opts["jpeg_quality"], integer=True)
    if not 1 <= q <= 100:
        raise ConfigError(f"synthocc option jpeg_quality={q} must lie in [1, 100]")
    for name in _INT_RANGES:
        lo, hi = (_number(name, v, integer=True) for v in _pair(name, opts[name]))
        if not 1 <= lo <= hi:
            raise ConfigError(f"synthocc option {name}=({lo}, {hi}): need 1 <= low <= high")
        opts[name] = (lo, hi)
    for name in _FRACTIONS:
        v = _number(name, opts[name], integer=False)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"synthocc option {name}={v} is out of [0, 1]")
        opts[name] = v
    for name in _FRACTION_RANGES:
        lo, hi = (_number(name, v, integer=False) for v in _pair(name, opts[name]))
        if not (0.0 <= lo <= hi <= 1.0):
            raise ConfigError(
                f"synthocc option {name}=({lo}, {hi}) is out of range: need 0 <= low <= high <= 1"
            )
        opts[name] = (lo, hi)
    if opts["partial_keep"][0] <= 0:
        raise ConfigError("synthocc option partial_keep must keep something: its low end must be > 0")
    for name, allowed in _CHOICES.items():
        values = [opts[name]] if isinstance(opts[name], str) else list(opts[name])
        if name == "occlusion_positions":  # "side" is shorthand for both sides
            values = [v for item in values for v in (("left", "right") if item == "side" else (item,))]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            extra = " or 'side'" if name == "occlusion_positions" else ""
            raise ConfigError(
                f"synthocc option {name}={opts[name]!r}: choose from {', '.join(allowed)}{extra}"
            )
        opts[name] = tuple(v for v in allowed if v in values)  # canonical order: same set, same hash
    if not any(p in KIND_POSITIONS[k] for p in opts["occlusion_positions"] for k in opts["occluder_kinds"]):
        fits = {k: KIND_POSITIONS[k] for k in opts["occluder_kinds"]}
        raise ConfigError(
            f"no occluder kind fits positions {opts['occlusion_positions']}: {fits}; add a position or a kind"
        )
    return opts


def resolve_protocols(protocols) -> tuple[str, ...]:
    if protocols is None:
        return PROTOCOLS
    chosen = [protocols] if isinstance(protocols, str) else list(protocols)
    bad = [p for p in chosen if p not in PROTOCOLS]
    if bad or not chosen:
        raise ConfigError(f"unknown SynthOcc protocol(s) {bad or chosen}; choose from {', '.join(PROTOCOLS)}")
    return tuple(p for p in PROTOCOLS if p in chosen)


def parameters_key(seed: int, size: str, protocols, opts: dict) -> str:
    """Hash of everything that determines the files (including VERSION): the cache key."""
    payload = {"version": VERSION, "seed": int(seed), "size": size, "protocols": list(protocols),
               "options": jsonable(opts)}
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def jsonable(opts: dict) -> dict:
    """Options with tuples as lists (JSON has no tuples; the hash must not depend on the type)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
