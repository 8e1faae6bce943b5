"""The callback contract: what the Trainer calls, when, and how callbacks are registered.

A callback is a :class:`Callback` subclass; every event is optional (a no-op by default). The
Trainer runs all callbacks of a run -- its built-in ones and the user's -- for each event in
ascending ``order`` (ties keep the order they were given in; built-ins first). The events::

    on_fit_start(trainer)                          after the run folder is ready (resumed state loaded)
    on_epoch_start(trainer, epoch)                 0-based epoch, before its first training step
    on_train_batch_end(trainer, step_output, batch)  after each optimizer step; step_output has
                                                   .logits (B, classes), .terms {name: scalar},
                                                   .teacher_logits (B, classes) or None;
                                                   batch = (images, targets, indices)
    on_epoch_end(trainer, record)                  after evaluation; ``record`` is the epoch's
                                                   metrics row and may be extended in place
    on_checkpoint(trainer, state)                  before last.pt is written; may add entries
    on_fit_end(trainer, summary)                   after the last epoch (summary may be extended)
    on_exception(trainer, exc)                     when the run stops with an exception

A callback that can be named in a config registers itself with ``@register_callback("name")``
(loggers with ``@register_logger("name")``; same base class) and may declare its options as a
pydantic ``Params`` class (unknown options are errors); it is then built as ``cls(params)``.
YAML: ``callbacks: [name, {name: other, option: value}]`` and ``loggers: [...]``.
Python: ``softlabels.train(exp, callbacks=[MyCallback()])``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from softlabels.errors import ConfigError
from softlabels.registry import Registry


class CallbackParams(BaseModel):
    """Base for a callback's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Callback:
    """Base class of every callback and logger; override the events you need.

    ``order``: smaller runs earlier for every event (built-ins use 10-90; 100 is the default for
    user callbacks, so they see the finished epoch record). ``Params``: the options model, or None.
    """

    order: ClassVar[int] = 100
    Params: ClassVar[type[BaseModel] | None] = None

    def __init__(self, params: BaseModel | None = None) -> None:
        if params is None and self.Params is not None:
            params = self.Params()
        self.params = params

    def on_fit_start(self, trainer) -> None:
        """After the run folder is locked and prepared and any resumed state is loaded."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Before the first training step of ``epoch`` (0-based, counting init-phase epochs)."""

    def on_train_batch_end(self, trainer, step_output, batch: tuple) -> None:
        """After each optimizer step: ``step_output`` (.logits, .terms, .teacher_logits), ``batch``
        = (images, targets, indices)."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        """After evaluation; add fields to ``record`` (the epoch's metrics.jsonl row) in place."""

    def on_checkpoint(self, trainer, state: dict) -> None:
        """Before ``last.pt`` is written; entries added to ``state`` are saved with it."""

    def on_fit_end(self, trainer, summary: dict) -> None:
        """After the last epoch, before summary.json is written; may add fields to ``summary``."""

    def on_exception(self, trainer, exc: BaseException) -> None:
        """The run stops with ``exc`` (re-raised after every callback has seen it)."""


CALLBACKS: Registry[type[Callback]] = Registry("callback")
LOGGERS: Registry[type[Callback]] = Registry("logger")


def register_callback(name: str, *aliases: str):
    """Class decorator: a :class:`Callback` subclass that configs can name under ``callbacks:``."""
    return CALLBACKS.register(name, *aliases)


def register_logger(name: str, *aliases: str):
    """Class decorator: a :class:`Callback` subclass that configs can name under ``loggers:``."""
    return LOGGERS.register(name, *aliases)


_loaded = False


def _import_all() -> None:
    """Import every module of ``softlabels.callbacks`` once, so each registers its classes."""
    global _loaded
    if _loaded:
        return
    import softlabels.callbacks as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package.__name__}.{info.name}")
    _loaded = True


def list_callbacks(kind: str = "callback") -> list[str]:
    """Registered callback (or, with ``kind="logger"``, logger) names."""
    _import_all()
    return (LOGGERS if kind == "logger" else CALLBACKS).names()


def build_callbacks(specs: list[Any] | None, kind: str = "callback") -> list[Callback]:
    """Callbacks from config entries: a name, ``{name: ..., option: ...}``, or a Callback instance.

    ``kind`` "callback" looks names up among ``register_callback`` classes (the ``callbacks:`` key),
    "logger" among ``register_logger`` classes (``loggers:``). ConfigError naming the entry when a
    name is unknown or an option is wrong.
    """
    _import_all()
    registry = LOGGERS if kind == "logger" else CALLBACKS
    key = "loggers" if kind == "logger" else "callbacks"
    out: list[Callback] = []
    for i, spec in enumerate(specs or []):
        if isinstance(spec, Callback):
            out.append(spec)
            continue
        if hasattr(spec, "model_dump"):  # a pydantic entry model from the config
            spec = spec.model_dump(exclude_none=True)
        if isinstance(spec, str):
            name, options = spec, {}
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            name, options = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        else:
            raise ConfigError(f"{key}[{i}]: expected a name or a mapping with 'name', got {spec!r}")
        if name not in registry:
            known = ", ".join(registry.names()) or "none"
            raise ConfigError(f"{key}[{i}]: unknown {kind} {name!r}; known: {known}")
        cls = registry.get(name)
        if cls.Params is None:
            if options:
                raise ConfigError(f"{key}[{i}] ({name}): takes no options, got {', '.join(sorted(options))}")
            out.append(cls())
            continue
        try:
            params = cls.Params.model_validate(options)
        except ValidationError as err:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"{key}[{i}] ({name}): {detail}") from None
        out.append(cls(params))
    return out


def sort_callbacks(callbacks: list[Callback]) -> list[Callback]:
    """Ascending ``order``; stable, so equal orders keep the given order."""
    return sorted(callbacks, key=lambda c: getattr(c, "order", 100))
