"""Method registry: `build(name, cfg)` returns a `ReIDMethod` configured from a dict or dataclass.

Each method module registers itself with `@METHODS.register("name")` on its class; the module list
below is imported lazily on first use so that `import reidlib` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from reidlib.config import from_dict
from reidlib.methods.base import Embedding, ReIDMethod
from reidlib.registry import Registry

METHODS: Registry[type[ReIDMethod]] = Registry("method")

# One module per method; extend when a paper lands.
_MODULES: list[str] = [
    "qpm",
    "bot",
    "pcb",
    "vit_baseline",
    "clip_baseline",
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


def build(name: str, cfg: Any = None, **kwargs) -> ReIDMethod:
    """Instantiate method `name`. `cfg` is its config dataclass or a dict of its fields; `kwargs` are
    data-dependent constructor arguments such as `num_classes` and `num_cameras`."""
    _load_all()
    cls = METHODS.get(name)
    if cfg is None or isinstance(cfg, dict):
        cfg = from_dict(cls.config_class, cfg or {}, where=name)
    return cls(cfg, **kwargs)


__all__ = ["METHODS", "Embedding", "ReIDMethod", "build", "names"]
