"""Typed configs: dataclasses built from nested dicts, validated, merged and round-tripped through YAML.

A run's config is `RunConfig` (data, optimisation, schedule, seed) plus the method's own dataclass
config. Paper hyper-parameters live in `reidlib/configs/<method>.yaml` under `paper:`; the `ci` and
`demo` profiles are overrides on top of them in the same file, so every scaled-down value is visible
next to the paper's.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

PROFILES = ("ci", "demo", "paper")
# The seeds NumPy accepts (np.random.seed; SeedSequence refuses negative ones), checked before they reach it.
SEED_RANGE = (0, 2**32 - 1)

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what is allowed."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return `base` updated by `override`, recursing into nested dicts (inputs are not modified)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        check_finite(where, value)  # every float key, also those without a range check
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[C], data: dict | None, where: str = "") -> C:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain nested dict/list (YAML- and JSON-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def replace(obj: C, **changes: Any) -> C:
    """Like dataclasses.replace, but nested dict changes are merged and the result re-validated."""
    return from_dict(type(obj), deep_merge(to_dict(obj), changes))


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a config (dataclass or dict): the key of a run."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def check_finite(where: str, value: float) -> None:
    """Raise ConfigError for NaN and infinity: no config value means either, and NaN passes every range
    comparison."""
    if not math.isfinite(value):
        raise ConfigError(f"{where}={value!r} is not a finite number; give a number (NaN and infinity are "
                          "not allowed)")


def check_range(where: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise ConfigError unless low <= value <= high (either bound may be None) and value is finite."""
    check_finite(where, value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{where}={value!r} is out of range {bounds}")


def check_image_size(image_size: tuple[int, int], minimum: tuple[int, int], needs: str) -> None:
    """Raise ConfigError naming data.height / data.width when `image_size` (height, width) is below `minimum`;
    `needs` says who sets the minimum. Smaller images would run, on feature maps that are mostly padding."""
    for key, size, low in zip(("data.height", "data.width"), image_size, minimum, strict=True):
        try:
            check_range(key, size, low)
        except ConfigError as exc:
            raise ConfigError(f"{exc}: {needs} needs images of at least {minimum[0]} x {minimum[1]} pixels "
                              f"(height x width); raise {key} to {low} or more") from None


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; use one of {list(PROFILES)}")
    return profile


def load_yaml(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def save_yaml(data: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(data), sort_keys=False))


def packaged_config(name: str) -> dict:
    """Read `reidlib/configs/<name>.yaml` shipped with the package."""
    ref = resources.files("reidlib") / "configs" / f"{name}.yaml"
    if not ref.is_file():
        known = sorted(p.name[:-5] for p in (resources.files("reidlib") / "configs").iterdir()
                       if p.name.endswith(".yaml"))
        raise ConfigError(f"no config file reidlib/configs/{name}.yaml; known: {known}")
    return yaml.safe_load(ref.read_text()) or {}


def profile_config(name: str, profile: str, overrides: dict | None = None) -> dict:
    """The `paper:` section of configs/<name>.yaml, with the profile's overrides and then the caller's.

    File shape:  paper: {...}   ci: {preset: synthocc_ci, ...overrides}   demo: {...}
    A profile section's `preset:` names a block of configs/presets.yaml (the data and schedule every ci or
    demo run shares), merged before the section's own keys, which win.
    """
    check_profile(profile)
    raw = packaged_config(name)
    if "paper" not in raw:
        raise ConfigError(f"reidlib/configs/{name}.yaml has no 'paper:' section")
    merged = raw["paper"]
    if profile != "paper":
        section = dict(raw.get(profile) or {})
        preset = section.pop("preset", None)
        if preset is not None:
            merged = deep_merge(merged, preset_config(preset, where=f"{name}.yaml {profile}.preset"))
        merged = deep_merge(merged, section)
    return deep_merge(merged, overrides or {})


def preset_config(preset: str, where: str = "preset") -> dict:
    """A block of reidlib/configs/presets.yaml."""
    presets = packaged_config("presets")
    if preset not in presets:
        raise ConfigError(f"{where}: unknown preset {preset!r}; presets.yaml has {sorted(presets)}")
    return presets[preset]


@dataclass
class DataConfig:
    """Which images, at what size, in what batches, with which augmentations (torchreid-style defaults)."""

    dataset: str = "synthocc"          # a name from reidlib.data.DATASETS
    root: str | None = None            # None: the SynthOcc cache, generated on first use
    protocol: str = "occluded_duke"    # SynthOcc: occluded_duke, holistic, occluded_reid, partial_reid
    synth_size: str = "demo"           # SynthOcc size preset (ci, demo, paper)
    height: int = 256
    width: int = 128
    batch_p: int = 16                  # identities per training batch (P)
    batch_k: int = 4                   # images per identity (K)
    test_batch_size: int = 128
    workers: int = 0
    preload: bool = True               # decode the training images (and masks) once and keep them in memory
    flip_p: float = 0.5                # random horizontal flip
    pad: int = 10                      # pad-and-random-crop margin in pixels (0: off)
    erasing_p: float = 0.5             # random erasing probability (0: off)
    color_jitter: float = 0.0          # brightness/contrast/saturation strength (0: off)
    masks: str | None = None           # human-parsing source: None, "parsing" (label PNGs) or "pifpaf"
    mask_grouping: str = "five"        # how labels / PifPaf fields group into K parts (reidlib.data.masks)
    erase_masks: bool = True           # random erasing also marks the erased box as background in the masks
    flip_swap_sides: bool = True       # a flip swaps left/right part channels (left_arm <-> right_arm)
    # per-channel normalisation: ImageNet by default; CLIP (0.4815, 0.4578, 0.4082) / (0.2686, 0.2613, 0.2758)
    norm_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    norm_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    on_corrupt: str = "error"          # unreadable image: "error" (stop, naming it) or "skip" (count it)

    def validate(self) -> None:
        for name in ("height", "width", "batch_p", "batch_k", "test_batch_size"):
            check_range(f"data.{name}", getattr(self, name), 1)
        check_range("data.batch_k", self.batch_k, 2)  # batch-hard triplets need a positive per anchor
        for name in ("flip_p", "erasing_p"):
            check_range(f"data.{name}", getattr(self, name), 0.0, 1.0)
        check_range("data.workers", self.workers, 0)
        if self.masks not in (None, "parsing", "pifpaf"):
            raise ConfigError(f"data.masks={self.masks!r}; use null, 'parsing' or 'pifpaf'")
        if self.masks is not None:
            from reidlib.data.masks import get_grouping

            try:
                get_grouping(self.mask_grouping, self.masks)
            except ValueError as exc:
                raise ConfigError(f"data.mask_grouping: {exc}") from None
        for name in ("norm_mean", "norm_std"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"data.{name}={getattr(self, name)!r}; give one value per RGB channel")
        for i, std in enumerate(self.norm_std):
            check_range(f"data.norm_std[{i}]", std, 1e-6)
        if self.on_corrupt not in ("error", "skip"):
            raise ConfigError(f"data.on_corrupt={self.on_corrupt!r}; use 'error' or 'skip'")


@dataclass
class TrainConfig:
    """Optimisation and schedule (defaults: BoT's Adam recipe, Luo et al. 2019) and run-time options.

    The learning rate of epoch e (0-based) is lr * warmup(e) * decay(e):
      warmup: linear from `warmup_factor` to 1 over `warmup_epochs` ("constant": `warmup_factor` flat)
      decay:  multistep: gamma ** (number of milestones <= e)
              cosine:    from 1 down to min_lr / lr over the epochs after warm-up
    Per-module learning rates come from `method.param_groups(lr)`; every group follows the same factor.
    """

    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 3.5e-4
    momentum: float = 0.9              # sgd only
    nesterov: bool = False             # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw only
    weight_decay: float = 5e-4
    epochs: int = 120
    warmup_epochs: int = 10
    warmup_factor: float = 0.01        # lr multiplier at the first warm-up epoch
    warmup_method: Literal["linear", "constant"] = "linear"
    scheduler: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [40, 70])  # epochs (0-based) where lr *= gamma
    gamma: float = 0.1
    min_lr: float = 0.0                # cosine floor for the base lr (other groups scale alike)
    eval_every: int = 0                # evaluate every N epochs during training (0: only at the end)
    amp: bool = False                  # autocast: float16 on CUDA, bfloat16 on CPUs with native support
    channels_last: bool = True         # 4-D weights in channels-last memory: faster convolutions
    grad_clip: float | None = None     # max global L2 norm of the gradients (None: no clipping)
    flip_test: bool = False            # final evaluation averages original and flipped embeddings
    max_iters_per_epoch: int | None = None  # cap on iterations per epoch (demo budgets)
    log_every: int = 20                # iterations per history record (print-only: not part of the run key)

    def validate(self) -> None:
        check_range("train.lr", self.lr, 0.0)
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr!r}; use a positive learning rate")
        check_range("train.momentum", self.momentum, 0.0, 1.0)
        for i, beta in enumerate(self.betas):
            check_range(f"train.betas[{i}]", beta, 0.0, 1.0)
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_range("train.epochs", self.epochs, 1)
        check_range("train.warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range("train.warmup_factor", self.warmup_factor, 0.0, 1.0)
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"train.milestones={self.milestones!r}; list them in increasing order")
        check_range("train.gamma", self.gamma, 0.0, 1.0)
        check_range("train.min_lr", self.min_lr, 0.0, self.lr)
        check_range("train.eval_every", self.eval_every, 0)
        if self.grad_clip is not None:
            check_range("train.grad_clip", self.grad_clip, 1e-12)
        if self.max_iters_per_epoch is not None:
            check_range("train.max_iters_per_epoch", self.max_iters_per_epoch, 1)
        check_range("train.log_every", self.log_every, 1)
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas={self.betas!r}; give two values (beta1, beta2)")


@dataclass
class RunConfig:
    """One training run: which method (and its config), on which data, with which schedule and seed.

    `model` holds the method's own config fields (its `config_class`); `tag` is a free label shown in
    `reidlib summary` and is not part of the run key.
    """

    method: str
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    tag: str = ""
    # An earlier training stage this run starts from: "<method>/<run key>" of a finished run in the same
    # runs folder (its weights go through `method.load_stage`). In configs/*.yaml it may name a config
    # instead ("qpm_ide"), which Workbook.train trains first on the same data and then fills in.
    init_from: str | None = None

    def validate(self) -> None:
        check_range("seed", self.seed, *SEED_RANGE)

    @classmethod
    def from_profile(cls, method: str, profile: str, overrides: dict | None = None) -> RunConfig:
        """`reidlib/configs/<method>.yaml` for a profile; its sections hold RunConfig keys (model, data,
        train, seed, tag) and `overrides` is merged on top."""
        merged = profile_config(method, profile, overrides)
        merged.setdefault("method", method)
        return from_dict(cls, merged)

    def to_yaml(self, path: str | Path) -> None:
        save_yaml(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return from_dict(cls, load_yaml(path))


__all__ = [
    "DataConfig", "TrainConfig", "RunConfig",
    "PROFILES", "SEED_RANGE", "ConfigError", "dataclass", "field", "deep_merge", "from_dict", "to_dict",
    "replace", "config_hash", "check_finite", "check_range", "check_image_size",
    "check_profile", "load_yaml", "save_yaml",
    "packaged_config", "profile_config", "preset_config",
]
