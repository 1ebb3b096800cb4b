"""A name -> factory registry, the one mechanism behind data sets, backbones and methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reidlib.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Unknown names fail with the list of known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str, where: str = "") -> T:
        """The factory registered as `name`; ConfigError listing the known names otherwise, prefixed with
        `where` (the config key or flag the name came from)."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
