"""Plugins: user modules that register models, datasets, methods and callbacks.

Three ways to load one, all explicit acts of the user:

* ``softlabels --import MODULE ...`` (repeatable, on every subcommand);
* ``imports: [MODULE, ...]`` in an experiment config (imported by :func:`softlabels.config.validate_config`
  before any name is looked up);
* an installed distribution that declares the entry-point group ``softlabels.plugins``
  (``[project.entry-points."softlabels.plugins"] NAME = "my_package.module"``), loaded once per process.

A run folder's ``config.yaml`` records the modules the run needed (``imports``), so ``eval``, ``train --resume``,
``report`` and ``reproduce`` of that run import them again without flags. Nothing else from a config is
executed: ``imports`` holds dotted module names only, and a module that fails to import stops with a
one-line :class:`~softlabels.errors.UserError` naming it.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from softlabels.errors import UserError

ENTRY_POINT_GROUP = "softlabels.plugins"
#: comma-separated modules every softlabels process imports (set by ``--import`` for the workers it starts).
ENV_VAR = "SOFTLABELS_IMPORTS"

__all__ = [
    "ENTRY_POINT_GROUP",
    "import_module",
    "import_modules",
    "load_entry_points",
    "load_plugins",
    "merge_imports",
    "modules_providing",
    "pop_import_flags",
]

_entry_points_loaded: list[str] | None = None


def import_module(name: str, source: str | None = None) -> ModuleType:
    """Import ``name``; any failure becomes one UserError line naming the module (and ``source``)."""
    where = f" (from {source})" if source else ""
    if not isinstance(name, str) or not name or any(not p.isidentifier() for p in name.split(".")):
        raise UserError(f"cannot import {name!r}{where}: not a module name (like my_package.models)")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UserError(
                f"cannot import module {name!r}{where}: no such module; install it, or add its folder to PYTHONPATH"
            ) from None
        raise UserError(f"cannot import module {name!r}{where}: ModuleNotFoundError: {exc}") from None
    except UserError as exc:
        raise UserError(f"cannot import module {name!r}{where}: {exc}") from None
    except Exception as exc:  # the plugin's own code failed: say which module, in one line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise UserError(f"cannot import module {name!r}{where}: {type(exc).__name__}: {first}") from None


def import_modules(names: Iterable[str], source: str | None = None) -> list[str]:
    """Import every module in ``names`` (in order); returns the names."""
    names = list(names or [])
    for name in names:
        import_module(name, source)
    return names


def load_entry_points(*, force: bool = False) -> list[str]:
    """Load the installed ``softlabels.plugins`` entry points once per process; returns their ``name=value``."""
    global _entry_points_loaded
    if _entry_points_loaded is not None and not force:
        return list(_entry_points_loaded)
    from importlib.metadata import entry_points

    loaded: list[str] = []
    _entry_points_loaded = loaded  # a plugin that looks a name up while it is imported must not loop back here
    try:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            module = ep.value.split(":", 1)[0].strip()
            import_module(module, f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}")
            if ":" in ep.value:  # `module:function`: a registration function to call
                try:
                    ep.load()()
                except Exception as exc:
                    raise UserError(f"plugin entry point {ep.name!r} ({ep.value}) failed: {type(exc).__name__}: "
                                    f"{(str(exc).splitlines() or [''])[0][:300]}") from None
            loaded.append(f"{ep.name}={ep.value}")
    except UserError:
        _entry_points_loaded = None  # the next lookup reports the broken plugin again
        raise
    return list(loaded)


def load_plugins(imports: Iterable[str] = (), source: str | None = None, *, export: bool = False) -> list[str]:
    """Installed entry points (once), the modules of ``$SOFTLABELS_IMPORTS``, then ``imports``.

    With ``export`` the ``imports`` are appended to ``$SOFTLABELS_IMPORTS`` so that worker processes this
    process starts (``reproduce --jobs``, data loader workers) import them too. Returns the module names.
    """
    load_entry_points()
    inherited = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
    import_modules(inherited, f"${ENV_VAR}")
    names = import_modules(imports, source)
    if export and names:
        os.environ[ENV_VAR] = ",".join(merge_imports(inherited, names))
    return names


def merge_imports(*lists: Iterable[str]) -> list[str]:
    """Concatenate module lists keeping the first occurrence of each name."""
    out: list[str] = []
    for names in lists:
        for name in names or []:
            if name not in out:
                out.append(name)
    return out


def pop_import_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--import MODULE`` / ``--import=MODULE`` (anywhere in ``argv``) from the other arguments.

    Returns ``(modules, remaining_argv)``. Raises UserError when ``--import`` has no module after it.
    """
    modules: list[str] = []
    rest: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--import":
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise UserError("--import needs a module name, e.g. --import my_package.models")
            modules.append(argv[i + 1])
            next(it, None)
        elif arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return modules, rest


def _module_of(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__" or module == "softlabels" or module.startswith("softlabels."):
        return None
    return module if module in sys.modules else None


def modules_providing(exp: Any) -> list[str]:
    """Non-softlabels modules that registered the experiment's models, dataset, method and callbacks.

    These are what a later process must import to rebuild the run; registrations made in ``__main__``
    (a script) cannot be re-imported and are left out (use a module, or ``--import``).
    """
    from softlabels.data import DATASETS
    from softlabels.methods import METHODS
    from softlabels.models import MODELS

    found: list[Any] = []
    for cfg in (exp.student, exp.teacher):
        if cfg is not None and cfg.name in MODELS:
            found.append(MODELS.get(cfg.name))
    if exp.data.name in DATASETS:
        found.append(DATASETS.get(exp.data.name))
    if exp.method.name in METHODS:
        found.append(METHODS.get(exp.method.name))
    try:
        from softlabels.callbacks.base import CALLBACKS, LOGGERS
    except ImportError:  # pragma: no cover - callbacks package absent
        CALLBACKS = LOGGERS = None
    for registry, specs in ((CALLBACKS, getattr(exp, "callbacks", [])), (LOGGERS, getattr(exp, "loggers", []))):
        for spec in specs or []:
            name = spec.get("name") if isinstance(spec, dict) else spec
            if registry is not None and name in registry:
                found.append(registry.get(name))
    return merge_imports([m for m in (_module_of(obj) for obj in found) if m])


def with_recorded_imports(exp: Any, extra: Iterable[str] = ()) -> Any:
    """``exp`` with ``imports`` extended by ``extra`` and :func:`modules_providing` (same object if unchanged)."""
    merged = merge_imports(getattr(exp, "imports", []), extra, modules_providing(exp))
    if merged == list(getattr(exp, "imports", [])):
        return exp
    return exp.model_copy(update={"imports": merged})
