"""Distillation methods, one file each, registered by name.

Every non-underscore module in this package is imported on first use, so a new method is a
new file and nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil

from softlabels.methods.base import METHODS, Distiller, MethodParams, register_method

__all__ = ["METHODS", "Distiller", "MethodParams", "get_method", "list_methods", "register_method"]

_loaded = False


def _import_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def list_methods() -> list[str]:
    """Registered method names."""
    _import_all()
    return METHODS.names()


def get_method(name: str) -> type[Distiller]:
    """The :class:`Distiller` class registered as ``name`` (UserError listing the names if unknown).

    ``"a+b"`` returns a combination of registered methods on one forward pass (``methods/combined.py``).
    """
    _import_all()
    if "+" in name:
        from softlabels.methods.combined import make_combined

        return make_combined(name)
    return METHODS.get(name)
