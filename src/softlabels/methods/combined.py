"""Combinations of methods on one forward pass: ``get_method("fitnet+wsl")``, ``crd+kd``, ``at+kd`` ...

:func:`make_combined` builds a :class:`Distiller` whose ``Params`` has one sub-section per
component, named after it (a config's ``method`` section)::

    method: {name: fitnet+wsl, fitnet: {weight: 100}, wsl: {temperature: 4, alpha: 2.25}}

How the components share the work:

* **one forward pass**: each component is an ordinary instance of its own Distiller class built
  on the same student and teacher objects, but its forward hooks are removed right away and its
  feature capture is replaced by the combination's, which hooks the *union* of the components'
  features. The combination's forward (the base class's) runs the student and the teacher once,
  and every component's ``loss_terms`` reads the same :class:`Batch`.
* **auxiliary modules**: ``setup`` calls each component's ``setup``; a component's
  ``auxiliary`` ModuleDict is registered as ``auxiliary[<component name>]``, so it is optimized
  and checkpointed with the student (keys ``<component>.<module>...``). The components themselves
  are not registered as submodules (no duplicate student/teacher in the state dict).
* **train/eval, epochs**: ``train()`` and ``set_epoch()`` are forwarded to every component (CRD's
  memory updates depend on both).
* **loss terms**: merged. ``ce`` is kept **once, from the last component that produces it** (the
  others' ``ce`` are dropped): in RepDistiller's CRD+KD the CE weight appears once, so write
  ``crd+kd`` with ``kd: {ce_weight: 1, kd_weight: 1}`` to get its CE 1, KL 1, CRD 0.8 recipe.
  Any other key produced by more than one component is prefixed with the component's name
  (``crd_kd`` and ``kd_kd`` when CRD's own ``kd_weight`` > 0 meets KD).
* **initialisation phases**: ``init_epochs`` is the largest of the components'. While
  ``epoch < init_epochs`` only the components that declare an init phase contribute (each
  decides by its own ``init_epochs``); the others start with the main phase.
* ``requires_teacher`` / ``logit_based`` are true when any component's is. The parameter model
  exposes ``temperature`` (the first component's that has one, None when none has; the
  regularization statistics run only when it is set) and ``init_epochs``.
* **optimizers, diagnostics, artifacts**: one "main" optimizer over the union of trainable
  parameters, plus every other optimizer a component configures, named ``<component>.<name>``
  (e.g. ``prokt.teacher``); the components' diagnostics and artifacts are merged; the run's
  process group (``dist``) is handed to every component.

A component may appear once. Combinations are built on demand and not listed by
``list_methods()``.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from pydantic import Field, create_model

from softlabels.engine.optim import OptimizerSpec
from softlabels.errors import ConfigError
from softlabels.methods.base import METHODS, Batch, Distiller, MethodParams


class CombinedParams(MethodParams):
    """Base of a combination's parameters: one field per component, holding that component's Params."""

    components: ClassVar[tuple[str, ...]] = ()

    @property
    def temperature(self) -> float | None:
        for name in self.components:
            t = getattr(getattr(self, name), "temperature", None)
            if t is not None:
                return float(t)
        return None

    @property
    def init_epochs(self) -> int:
        return max((int(getattr(getattr(self, n), "init_epochs", 0) or 0) for n in self.components), default=0)


class CombinedDistiller(Distiller):
    """Base of the classes :func:`make_combined` builds; ``component_classes`` maps name -> Distiller class."""

    component_classes: ClassVar[dict[str, type[Distiller]]] = {}
    Params = CombinedParams

    def __init__(self, student, teacher, params: MethodParams | None = None, *, teacher_train_mode: bool = False):
        params = params if params is not None else self.Params()
        parts: dict[str, Distiller] = {}
        for name, cls in self.component_classes.items():
            part = cls(student, teacher, getattr(params, name), teacher_train_mode=teacher_train_mode)
            for capture in (part._student_capture, part._teacher_capture):
                if capture is not None:
                    capture.remove()
            parts[name] = part
        # set before nn.Module.__init__ on purpose: a plain attribute, so the components (which hold
        # the same student and teacher) are not registered as submodules
        object.__setattr__(self, "_parts", parts)
        super().__init__(student, teacher, params, teacher_train_mode=teacher_train_mode)
        for name, part in parts.items():
            part._student_capture = self._student_capture
            part._teacher_capture = self._teacher_capture
            self.auxiliary[name] = part.auxiliary

    @property
    def parts(self) -> dict[str, Distiller]:
        """The component Distillers by name (plain helpers sharing this one's student, teacher and hooks)."""
        return self._parts

    # ---------------------------------------------------------------- declarations
    def student_features(self) -> list[str]:
        return list(dict.fromkeys(n for part in self._parts.values() for n in part.student_features()))

    def teacher_features(self) -> list[str]:
        return list(dict.fromkeys(n for part in self._parts.values() for n in part.teacher_features()))

    @property
    def init_epochs(self) -> int:
        return max((part.init_epochs for part in self._parts.values()), default=0)

    # ---------------------------------------------------------------- life cycle
    def setup(self, sample_images: torch.Tensor, data: Any = None) -> None:
        for name, part in self._parts.items():
            part.setup(sample_images, data)
            self.auxiliary[name] = part.auxiliary

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for part in self._parts.values():
            part.set_epoch(epoch)

    def train(self, mode: bool = True) -> CombinedDistiller:
        super().train(mode)
        for part in self._parts.values():
            part.train(mode)
        return self

    @property
    def dist(self):
        return self.__dict__.get("_dist")

    @dist.setter
    def dist(self, info) -> None:
        self.__dict__["_dist"] = info
        for part in self._parts.values():
            part.dist = info

    def configure_optimizers(self, optim, lr: float) -> dict[str, OptimizerSpec]:
        """"main" over every component's trainable parameters, plus the components' own optimizers."""
        specs = super().configure_optimizers(optim, lr)
        for name, part in self._parts.items():
            for key, spec in part.configure_optimizers(optim, lr).items():
                if key != "main":
                    specs[f"{name}.{key}"] = spec
        return specs

    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self._parts.values():
            out.update(part.diagnostics(reset))
        return out

    def artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self._parts.values():
            out.update(part.artifacts())
        return out

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The union (each parameter once) of the components' trainable parameters."""
        seen, out = set(), []
        for p in (q for part in self._parts.values() for q in part.trainable_parameters()):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    # ---------------------------------------------------------------- loss
    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        in_init = batch.epoch < self.init_epochs
        produced: list[tuple[str, dict[str, torch.Tensor]]] = []
        for name, part in self._parts.items():
            if in_init and part.init_epochs == 0:
                continue
            produced.append((name, part.loss_terms(batch)))
        counts: dict[str, int] = {}
        for _, terms in produced:
            for key in terms:
                counts[key] = counts.get(key, 0) + 1
        ce: torch.Tensor | None = None
        merged: dict[str, torch.Tensor] = {}
        for name, terms in produced:
            for key, value in terms.items():
                if key == "ce":
                    ce = value  # the last component's CE wins
                elif counts[key] > 1:
                    merged[f"{name}_{key}"] = value
                else:
                    merged[key] = value
        return merged if ce is None else {"ce": ce, **merged}


def split_name(name: str) -> list[str]:
    """``"fitnet+wsl"`` -> ``["fitnet", "wsl"]`` (ConfigError on empty or repeated parts)."""
    parts = [p.strip() for p in name.split("+")]
    if len(parts) < 2 or any(not p for p in parts):
        raise ConfigError(f"a combined method is written 'a+b' (e.g. 'fitnet+wsl'); got {name!r}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"combined method {name!r} names a component twice")
    return parts


def make_combined(names: list[str] | tuple[str, ...] | str) -> type[Distiller]:
    """The Distiller class combining the registered methods ``names`` (or an ``"a+b"`` string).

    The same combination always returns the same class object.
    """
    parts = split_name(names) if isinstance(names, str) else split_name("+".join(names))
    return _combined(tuple(parts))


@functools.cache
def _combined(names: tuple[str, ...]) -> type[Distiller]:
    classes = {n: METHODS.get(n) for n in names}  # UserError listing the known methods
    label = "+".join(names)
    fields = {n: (cls.Params, Field(default_factory=cls.Params)) for n, cls in classes.items()}
    params_cls = create_model(f"Combined_{'_'.join(names)}_Params", __base__=CombinedParams, **fields)
    params_cls.components = names
    params_cls.__doc__ = f"Parameters of {label}: one section per component ({', '.join(names)})."
    attrs = {
        "component_classes": classes,
        "Params": params_cls,
        "requires_teacher": any(c.requires_teacher for c in classes.values()),
        "logit_based": any(c.logit_based for c in classes.values()),
        "method_name": label,
        "__doc__": f"{label}: the loss terms of {', '.join(names)} on one shared forward pass.",
        "__module__": __name__,
    }
    cls = type(f"Combined[{label}]", (CombinedDistiller,), attrs)
    return cls
