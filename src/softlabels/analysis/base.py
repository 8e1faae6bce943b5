"""The base config of an analysis, validated once, and the experiments derived from it.

``softlabels analyze`` reads one YAML file (or :data:`DEFAULT_BASE`), applies the command-line overrides
and validates it into an :class:`AnalysisBase`. Every run an analysis trains is that base's
:class:`~softlabels.config.Experiment` changed with ``model_copy(update=...)`` (name, folder, seed,
method, teacher, student), so the validated object is the one trained; see :func:`experiment`.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softlabels.analysis.checks import AnalysisError
from softlabels.config import Experiment, MethodConfig, ScheduleConfig, TeacherConfig
from softlabels.errors import CheckpointError, ConfigError

__all__ = ["AnalysisBase", "DEFAULT_BASE", "base_config", "experiment", "given_params", "method_config", "with_epochs"]

#: built-in base: the demo's low-data Fashion-MNIST setting (10 % = 600 images a class), resnet8 student.
DEFAULT_BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "fashion_mnist", "train_subset": 0.1, "batch_size": 128, "crop_padding": 2, "flip": True},
    "student": {"name": "resnet8"},
    "method": {"name": "ce"},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    "schedule": {"name": "cosine", "epochs": 15, "warmup_epochs": 1},
    "runtime": {"progress": True},
}


@dataclass(frozen=True)
class AnalysisBase:
    """A validated analysis base.

    Attributes:
        exp: the base experiment with method ``ce``; its data, student, optim, schedule, runtime, seed and
            (optional) teacher are those of every run the analysis trains.
        method: the base file's method section (defaults of the methods the analyses train), or None.
        source: where it came from (a file name or ``<built-in analysis base>``), for messages.
    """

    exp: Experiment
    method: MethodConfig | None
    source: str

    @property
    def dataset(self) -> str:
        return self.exp.data.name

    @property
    def seed(self) -> int:
        return self.exp.seed


def with_epochs(schedule: ScheduleConfig, epochs: int) -> ScheduleConfig:
    """``schedule`` with ``epochs``; warm-up stays below it, and multistep milestones that no longer fit
    are scaled proportionally (150/180/210 of 240 epochs become 9/11/13 of 15)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AnalysisError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    update: dict[str, Any] = {"epochs": epochs}
    if schedule.warmup_epochs >= epochs:
        update["warmup_epochs"] = epochs - 1
    if schedule.name == "multistep" and any(m > epochs for m in schedule.milestones):
        # scaled only when they no longer fit, so that a longer --epochs can resume a finished run
        old = max(schedule.epochs, 1)
        update["milestones"] = sorted({min(epochs, max(1, round(m * epochs / old))) for m in schedule.milestones})
    return schedule.model_copy(update=update)


def base_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    dataset: str | None = None,
    model: str | None = None,
    epochs: int | None = None,
    subset: int | float | None = None,
    device: str | None = None,
) -> AnalysisBase:
    """Read and validate the base of an analysis: a YAML file (or :data:`DEFAULT_BASE`), then the options.

    Args:
        path: an experiment YAML file (e.g. ``configs/fashion_mnist/kd.yaml``); None = built-in defaults.
            Its ``name`` and ``output_dir`` are ignored; its ``teacher`` is the default teacher and its
            ``method`` parameters are the defaults of the methods the analyses train.
        overrides: dotted ``key=value`` overrides (as for ``softlabels train``).
        dataset, model, epochs, subset, device: shortcuts for ``data.name``, ``student.name``,
            ``schedule.epochs`` (warm-up and multistep milestones follow), ``data.train_subset`` (a
            fraction in (0, 1] or a number of images) and ``runtime.device``.
    Raises:
        ConfigError / AnalysisError with one line naming the file or option.
    """
    from softlabels.config import apply_overrides, read_yaml, validate_config

    source = str(path) if path is not None else "<built-in analysis base>"
    raw = read_yaml(path) if path is not None else copy.deepcopy(DEFAULT_BASE)
    raw = apply_overrides(raw, list(overrides))
    shortcuts = {("data", "name"): dataset, ("student", "name"): model, ("data", "train_subset"): subset,
                 ("runtime", "device"): device}
    for (section, key), value in shortcuts.items():
        if value is not None:
            raw[section] = {**(raw.get(section) or {}), key: value}
    raw.setdefault("student", {"name": "resnet8"})
    method_section = raw.get("method") or None
    exp = validate_config({**raw, "method": {"name": "ce"}}, source, check_files=False)
    if epochs is not None:
        exp = exp.model_copy(update={"schedule": with_epochs(exp.schedule, epochs)})
    method = _validated_method(dict(method_section), source) if method_section is not None else None
    return AnalysisBase(exp=exp, method=method, source=source)


def _validated_method(section: dict, source: str) -> MethodConfig:
    """A method section validated into the registered method's ``Params`` (ConfigError naming ``source``)."""
    from pydantic import ValidationError

    try:
        return MethodConfig.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "params")
        raise ConfigError(f"invalid config {source}: key 'method.{where}': {first.get('msg')}") from None


def given_params(method: MethodConfig | None) -> dict[str, Any]:
    """The parameters a method section set, in its order (``{}`` for None)."""
    if method is None:
        return {}
    return {k: v for k, v in method.model_dump().items() if k != "name"}


def method_config(base: AnalysisBase, name: str, **forced: Any) -> MethodConfig:
    """The method an analysis trains: the base's parameters when the base uses the same method, else the
    method's defaults; a temperature in the base carries over to any distillation method; ``forced``
    values that are not None win."""
    if name == "ce":
        return MethodConfig(name="ce")
    base_params = given_params(base.method)
    params = dict(base_params) if base.method is not None and base.method.name == name else {}
    if "temperature" in base_params and "temperature" not in params:
        params["temperature"] = base_params["temperature"]
    params.update({k: v for k, v in forced.items() if v is not None})
    return _validated_method({"name": name, **params}, f"<analysis method {name}>")


def experiment(
    base: AnalysisBase,
    out: Path,
    name: str,
    *,
    seed: int,
    method: MethodConfig,
    teacher: TeacherConfig | None = None,
    model: str | None = None,
    split_run: bool = False,
) -> Experiment:
    """One run of an analysis: the base experiment with ``name``, folder ``out``, ``seed``, ``method``,
    ``teacher`` (required by distillation methods) and, optionally, another student ``model``.

    A ``split_run`` trains on a split of the training pool: no validation split (the pool is all of the
    base's training subset) and no teacher-logit cache (the cache is keyed on the configured subset).
    """
    from softlabels.methods import get_method
    from softlabels.models import list_models
    from softlabels.resources import resolve_path

    exp = base.exp
    update: dict[str, Any] = {"name": name, "output_dir": str(out), "seed": int(seed), "method": method,
                              "teacher": None}
    if model is not None and model != exp.student.name:
        if model not in set(list_models()) and not model.startswith("torchvision:"):
            raise ConfigError(f"invalid config {base.source}: key 'student.name': unknown model {model!r}; "
                              "see `softlabels list models`")
        update["student"] = exp.student.model_copy(update={"name": model})
    if get_method(method.name).requires_teacher:
        if teacher is None:
            raise CheckpointError(f"method {method.name!r} needs a teacher: pass --teacher-checkpoint PATH")
        if not resolve_path(teacher.checkpoint).is_file():
            raise CheckpointError(f"teacher checkpoint not found: {teacher.checkpoint}; pass --teacher-checkpoint PATH")
        update["teacher"] = teacher.model_copy(update={"cache": False}) if split_run else teacher
    if split_run:
        update["data"] = exp.data.model_copy(update={"val_split": 0})
    return exp.model_copy(update=update)
