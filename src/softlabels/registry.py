"""A tiny name -> object registry shared by models, methods and datasets."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from softlabels.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; ``@registry.register("name")`` adds one.

    Lookups of unknown names raise :class:`UserError` listing the known names, so a
    typo in a config stops with a message instead of a ``KeyError`` traceback.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items and self._items[key] is not obj:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:  # maybe an installed plugin's (entry points load once per process)
            from softlabels.plugins import load_entry_points

            load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UserError(
                f"unknown {self.kind} {name!r}; known: {known} (one of your own? --import MODULE or `imports:`)"
            ) from None

    def __contains__(self, name: Any) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
