"""Reading, overriding and validating experiment configs, with one-line errors naming the file and key.

``read_yaml`` is the one YAML reader of the package (configs, plans, a run folder's config.yaml);
``validate_config`` runs every check that does not need the data itself, so ``softlabels validate``
refuses what ``softlabels train`` would refuse before its first batch.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from softlabels.config.experiment import Experiment
from softlabels.errors import ConfigError, UserError
from softlabels.schema import validation_message

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------------------------------------- messages
def _pydantic_message(err: ValidationError, source: str, prefix: str = "") -> str:
    return f"invalid config {source}: {validation_message(err, prefix)}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong in a YAML text and where."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        code = f"#x{char:04x}" if exc.encoding == "unicode" else f"byte #x{char:02x}"
        return f"unacceptable character {code} at position {exc.position} (control characters are not allowed)"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem}{where}"


# ---------------------------------------------------------------------------------------------- reading
#: most values a YAML file may expand to (aliases can make a few lines expand exponentially).
MAX_VALUES = 200_000


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Values in ``node`` counting every alias use, computed once per shared container (linear time)."""
    if not isinstance(node, (dict, list)):
        return 1
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_VALUES + 1  # a container inside itself (a recursive alias) is too big
    values = node.values() if isinstance(node, dict) else node
    total = 1
    for value in values:
        total += _expanded_size(value, memo)
        if total > MAX_VALUES:
            break
    memo[id(node)] = total
    return total


def read_yaml(path: str | Path, kind: str = "config") -> dict:
    """``yaml.safe_load`` a mapping from ``path``; ConfigError naming the file (a ``kind`` file) when it is
    missing, a folder, unreadable, not UTF-8 text, not valid YAML or not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{kind} {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {kind} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{kind} {path} is not UTF-8 text (byte {err.start} is #x{err.object[err.start]:02x}; a binary or damaged "
            "file?)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{kind} {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        data = {}
    size = _expanded_size(data, {})
    if size > MAX_VALUES:
        raise ConfigError(f"{kind} {path} expands to {size} values through YAML aliases (limit {MAX_VALUES}); "
                          "write the values out instead")
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must be a mapping of sections (data, student, method, ...)"
                          if kind == "config" else f"{kind} {path} must be a mapping of keys")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ConfigError(f"override {text!r}: the key contains control characters")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({_yaml_problem(exc)})") from None
    if _expanded_size(value, {}) > MAX_VALUES:
        raise ConfigError(f"override {text!r}: the value expands to too many values (recursive YAML alias?)")
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each dotted override set (intermediate dicts created)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------- checks
def _number_problems(node: Any, key: str = "") -> tuple[str, str] | None:
    """(key, problem) of the first non-finite float or out-of-int64 integer anywhere in ``node``."""
    if isinstance(node, bool):
        return None
    if isinstance(node, float) and not math.isfinite(node):
        return key, f"must be a finite number (got {node})"
    if isinstance(node, int) and not INT64_MIN <= node <= INT64_MAX:
        return key, f"must fit in a 64-bit integer (got {len(str(abs(node)))} digits)"
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for k, v in items:
        sub = f"{key}{k}" if str(k).startswith("[") else (f"{key}.{k}" if key else str(k))
        found = _number_problems(v, sub)
        if found:
            return found
    return None


def _check_numbers(tree: Any, source: str) -> None:
    found = _number_problems(tree)
    if found:
        raise ConfigError(f"invalid config {source}: key '{found[0]}': {found[1]}")


def _check_models_and_classes(exp: Experiment, source: str) -> None:
    """Known model names; teacher, student and dataset agree on the class count."""
    from softlabels.methods import get_method
    from softlabels.models import list_models

    method_cls = get_method(exp.method.name)
    if method_cls.requires_teacher and exp.teacher is None:
        raise ConfigError(
            f"invalid config {source}: method '{exp.method.name}' distils from a teacher: add a 'teacher' section "
            "with 'name' and 'checkpoint' (train one with method 'ce' first)"
        )
    models = set(list_models())
    for key, cfg in (("student", exp.student), ("teacher", exp.teacher)):
        if cfg is not None and not cfg.name.startswith("torchvision:") and cfg.name not in models:
            raise ConfigError(
                f"invalid config {source}: key '{key}.name': unknown model {cfg.name!r}; see `softlabels list models`"
            )
    if exp.teacher and exp.student.num_classes and exp.teacher.num_classes:
        if exp.teacher.num_classes != exp.student.num_classes:
            raise ConfigError(
                f"invalid config {source}: teacher.num_classes ({exp.teacher.num_classes}) differs from "
                f"student.num_classes ({exp.student.num_classes}); both must predict the same classes"
            )
    classes = exp.data.traits().num_classes
    for key, cfg in (("student", exp.student), ("teacher", exp.teacher)):
        if classes is not None and cfg is not None and cfg.num_classes is not None and cfg.num_classes != classes:
            raise ConfigError(
                f"invalid config {source}: key '{key}.num_classes' is {cfg.num_classes} but dataset "
                f"'{exp.data.name}' has {classes} classes (leave it out to use the dataset's)"
            )


def _check_callbacks(exp: Experiment, source: str, environment: bool) -> None:
    """Names and options of ``callbacks``/``loggers`` entries, checked against the registered Params;
    with ``environment``, also that the libraries they need are installed."""
    if not (exp.callbacks or exp.loggers):
        return
    from softlabels.callbacks import build_callbacks

    try:
        build_callbacks(exp.callbacks, "callback")
        build_callbacks(exp.loggers, "logger")
    except ConfigError as err:
        raise ConfigError(f"invalid config {source}: {err}") from None
    except UserError as err:  # an optional library is missing: matters only where the run trains
        if environment:
            raise ConfigError(f"invalid config {source}: {err}") from None


def _check_checkpoint_fits(exp: Experiment, key: str, path: str, source: str) -> None:
    """A softlabels checkpoint records its class count and input channels: they must match the dataset."""
    from softlabels.engine.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except UserError as err:
        raise ConfigError(f"invalid config {source}: key '{key}': {err}") from None
    traits = exp.data.traits()
    classes = traits.num_classes or exp.student.num_classes  # the dataset's, else the one the config states
    for what, saved, expected in (("classes", ckpt.get("num_classes"), classes),
                                  ("input channels", ckpt.get("in_channels"), traits.in_channels)):
        if saved is not None and expected is not None and int(saved) != expected:
            owner = f"dataset '{exp.data.name}' has" if traits.num_classes or what != "classes" else \
                "student.num_classes is"
            raise ConfigError(
                f"invalid config {source}: key '{key}': {path} was trained with {saved} {what} but {owner} "
                f"{expected}; use a checkpoint trained on this dataset"
            )


def _check_output_dir(exp: Experiment, source: str) -> None:
    """The run folder can be created: no file on its path, and the first existing folder is writable."""
    target = exp.run_dir
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"invalid config {source}: key 'output_dir': {probe} is a file, so the run folder {target} cannot be "
            "created; choose another output_dir or name"
        )
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"invalid config {source}: key 'output_dir': {probe} is not writable, so the run folder {target} "
            "cannot be written; choose another output_dir"
        )


def _check_files(exp: Experiment, source: str) -> None:
    from softlabels.errors import DataError
    from softlabels.resources import resolve_path

    if exp.teacher is not None:
        if not resolve_path(exp.teacher.checkpoint).is_file():
            raise ConfigError(
                f"invalid config {source}: key 'teacher.checkpoint': file not found: {exp.teacher.checkpoint} "
                "(train the teacher first, or fix the path; relative paths are relative to the working directory)"
            )
        _check_checkpoint_fits(exp, "teacher.checkpoint", exp.teacher.checkpoint, source)
    if exp.student.init is not None:
        if not resolve_path(exp.student.init).is_file():
            raise ConfigError(f"invalid config {source}: key 'student.init': file not found: {exp.student.init}")
        _check_checkpoint_fits(exp, "student.init", exp.student.init, source)
    try:
        exp.data.check_files()
    except DataError as err:
        raise ConfigError(f"invalid config {source}: key 'data.root': {err}") from None
    _check_output_dir(exp, source)
    if os.environ.get("LOCAL_RANK") is None:  # under torchrun each process picks its own device
        from softlabels.engine.env import select_device

        try:
            select_device(exp.runtime.device)
        except UserError as err:
            raise ConfigError(f"invalid config {source}: {err}") from None


# ---------------------------------------------------------------------------------------------- entry points
def validate_config(raw: dict, source: str = "<dict>", *, check_files: bool = True) -> Experiment:
    """Validate a raw mapping into an :class:`Experiment`; ConfigError (one line) on any problem.

    Beyond types: the modules of ``imports`` load; the dataset, method, models, callbacks and loggers
    exist and their options are valid; distillation methods have a teacher; class counts agree with the
    dataset; no number is NaN/inf or beyond 64 bits. With ``check_files`` (this machine's files and
    devices): referenced checkpoints exist and fit the dataset (classes, input channels), ``data.root``
    holds the data, the run folder can be written, ``runtime.device`` is available.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {source}: expected a mapping of sections, got {type(raw).__name__}")
    if _expanded_size(raw, {}) > MAX_VALUES:
        raise ConfigError(f"invalid config {source}: more than {MAX_VALUES} values (a container inside itself?)")
    _check_numbers(raw, source)
    from softlabels.plugins import load_plugins

    imports = raw.get("imports")
    # the user's modules (and installed plugins) first: they register the names validated below
    load_plugins(imports if isinstance(imports, list) else [], f"{source}: key 'imports'")
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_pydantic_message(err, source)) from None
    _check_numbers(exp.model_dump(), source)  # values parsed from strings ("1e400") and method options
    _check_models_and_classes(exp, source)
    _check_callbacks(exp, source, environment=check_files)
    if check_files:
        _check_files(exp, source)
    return exp


def load_config(path: str | Path, overrides: list[str] | None = None, *, check_files: bool = True) -> Experiment:
    """Read, override and validate one experiment file (a path, or a shipped name like ``fashion_mnist/wsl``)."""
    from softlabels.resources import find_config

    path = find_config(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    return validate_config(raw, str(path), check_files=check_files)


def method_params(exp: Experiment):
    """The validated parameter model of the experiment's method (``exp.method.params``)."""
    return exp.method.params


def to_yaml(exp: Experiment) -> str:
    """The resolved config as YAML (written to the run folder)."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)
