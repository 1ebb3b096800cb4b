"""Method registry: `build(name, cfg, info)` returns a `ReIDMethod` configured from a dict or dataclass and
sized by a `DataInfo` (reidlib.methods.base has the contract).

Each method module registers itself with `@METHODS.register("name")` on its class; the module list
below is imported lazily on first use so that `import reidlib` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from reidlib.config import check_image_size, from_dict
from reidlib.methods.base import Batch, DataInfo, Embedding, ReIDMethod
from reidlib.registry import Registry

METHODS: Registry[type[ReIDMethod]] = Registry("method")

# One module per method; extend when a paper lands.
_MODULES: list[str] = [
    "qpm",
    "bpbreid",
    "pab",
    "bpsema",
    "bot",
    "pcb",
    "vit_baseline",
    "dpm",
    "clip_baseline",
    "rganet",
]

_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in _MODULES:
            importlib.import_module(f"reidlib.methods.{mod}")
        _loaded = True


def names() -> list[str]:
    _load_all()
    return METHODS.names()


def get(name: str) -> type[ReIDMethod]:
    """The registered class of method `name` (an unknown name raises, listing the known ones)."""
    _load_all()
    return METHODS.get(name)


def build_config(name: str, cfg: Any = None) -> Any:
    """Method `name`'s config dataclass from a dict of its fields (validated: a bad key or value raises
    ConfigError naming it), or `cfg` itself when it is already one."""
    cls = get(name)
    if cfg is None or isinstance(cfg, dict):
        return from_dict(cls.config_class, cfg or {}, where="model")
    return cfg


def build(name: str, cfg: Any, info: DataInfo) -> ReIDMethod:
    """Instantiate method `name` from its config (dataclass or dict of its fields), sized by `info`; images
    smaller than the method's `min_image_size` raise ConfigError naming data.height / data.width."""
    model = get(name)(build_config(name, cfg), info)
    check_image_size(info.image_size, model.min_image_size(), _size_needs(name, model))
    return model


def _size_needs(name: str, model: ReIDMethod) -> str:
    """Who sets the method's minimum image size, for the error message."""
    backbone = getattr(model.cfg, "backbone", None)
    rows = model.feature_rows()
    return (f"method {name!r}" + (f" with backbone {backbone!r}" if backbone else "")
            + (f" and {rows} stripes, one feature-map row each," if rows > 1 else ""))


__all__ = ["METHODS", "Batch", "DataInfo", "Embedding", "ReIDMethod", "build", "build_config", "get", "names"]
