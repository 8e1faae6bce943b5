"""Experiment configs: one YAML file per experiment, validated before anything trains.

``load_config(path, overrides)`` reads the file with ``yaml.safe_load``, applies dotted
overrides (``optim.lr=0.1``), validates the result with the pydantic models below and the
chosen method's own parameter model, and raises :class:`ConfigError` naming the file, the key
and what is expected.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from softlabels.errors import ConfigError, UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    #: fields added after run folders were first written: dumped only when they differ from their
    #: default, so the config.yaml of an older run reads back to the same dump (resume compares them).
    omit_when_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler):
        out = handler(self)
        for key in self.omit_when_default:
            field = type(self).model_fields[key]
            if key in out and getattr(self, key) == field.get_default(call_default_factory=True):
                del out[key]
        return out


class SyntheticConfig(_Strict):
    """Shape of the seeded synthetic dataset used by tests and smoke runs."""

    num_classes: int = Field(10, ge=2)
    image_size: int = Field(32, ge=4)
    channels: int = Field(3, ge=1)
    train_size: int = Field(512, ge=2)
    test_size: int = Field(256, ge=2)


class DataConfig(_Strict):
    name: str = "fashion_mnist"
    root: str | None = None
    download: bool = False
    train_subset: int | float | None = None
    val_split: int | float = 0
    split_seed: int | None = Field(
        None, description="seed of train_subset and val_split; null: the run's seed (fix it to compare seeds on the same images)"
    )
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    num_workers: int = Field(4, ge=0)
    augment: bool = True
    crop_padding: int = Field(4, ge=0)
    flip: bool = True
    drop_last: bool = False
    aug_seed: int | None = Field(None, description="seed of the augmentation stream; null: the run's seed")
    synthetic: SyntheticConfig = SyntheticConfig()

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"aug_seed"})

    @field_validator("train_subset")
    @classmethod
    def _subset_positive(cls, v):
        if v is not None and (v <= 0 or (isinstance(v, float) and v > 1)):
            raise ValueError("must be a fraction in (0, 1] or a positive count of images")
        return v

    @field_validator("val_split")
    @classmethod
    def _val_split_range(cls, v):
        if v < 0 or (isinstance(v, float) and v >= 1):
            raise ValueError("must be 0, a fraction in (0, 1) or a positive count of images")
        return v


class InfoDropConfig(_Strict):
    """Informative dropout (Shi et al., ICML 2020) after named stages of the student."""

    after: list[str] = Field(["stem"], min_length=1, description="feature names (stem, stage1, ...) or module:PATH")
    drop_rate: float = Field(1.5, gt=0, description="paper presets: 1.5 with T 0.03, or 0.1 with T 0.5")
    temperature: float = Field(0.03, gt=0)
    finetune_epochs: int = Field(0, ge=0, description="last N epochs train without InfoDrop")
    radius: int = Field(3, ge=1)
    num_offsets: int | None = Field(9, ge=1, description="sampled neighbour offsets; null: all")
    bandwidth: float = Field(1.0, gt=0)
    padding_mode: Literal["replicate", "zeros"] = "replicate"
    source: Literal["input", "output"] = "input"
    input_from: str | None = None


class ModelConfig(_Strict):
    """The student (or the model trained alone)."""

    name: str
    infodrop: InfoDropConfig | None = None
    num_classes: int | None = Field(None, ge=1, description="default: the dataset's class count")
    init: str | None = Field(None, description="optional checkpoint to start from (shared initialisation)")


class TeacherConfig(_Strict):
    name: str
    checkpoint: str
    num_classes: int | None = Field(None, ge=1)
    train_mode: bool = Field(
        False,
        description="run the teacher in train() mode as the official WSL ImageNet code does "
        "(BN batch statistics); still no gradients and never optimized",
    )
    cache: bool = Field(
        False,
        description="store teacher logits per (epoch, sample) in a memory-mapped float16 file and reuse them "
        "in later runs with the same teacher, data and seed (logit methods only)",
    )
    cache_path: str | None = Field(None, description="cache folder; default <output_dir>/teacher_cache/<key>")
    cache_topk: int | None = Field(
        None, ge=1, description="keep only the k largest logits per sample (+ one logit for the rest); null: all"
    )

    @model_validator(mode="after")
    def _cache_needs_eval_teacher(self):
        if self.cache and self.train_mode:
            raise ValueError("teacher.cache cannot be used with teacher.train_mode (outputs depend on the batch)")
        return self


class MethodConfig(BaseModel):
    """``name`` plus the method's own parameters, validated by the method's ``Params`` model."""

    model_config = ConfigDict(extra="allow")
    name: str = "ce"

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov needs optim.momentum > 0")
        return self


class ScheduleConfig(_Strict):
    name: Literal["multistep", "cosine", "constant"] = "multistep"
    epochs: int = Field(240, ge=1)
    milestones: list[int] = [150, 180, 210]
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.name == "multistep" and any(m < 1 or m > self.epochs for m in self.milestones):
            raise ValueError(f"schedule.milestones must lie in 1..epochs ({self.epochs}), got {self.milestones}")
        if self.milestones != sorted(self.milestones):
            raise ValueError("schedule.milestones must be increasing")
        if self.warmup_epochs >= self.epochs:
            raise ValueError("schedule.warmup_epochs must be smaller than schedule.epochs")
        return self


class RuntimeConfig(_Strict):
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps")
    deterministic: bool = True
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    checkpoint_every: int = Field(1, ge=1, description="write last.pt every N epochs (and always at the end)")
    per_sample_dump: bool = Field(
        False,
        description="distillation runs: write per_sample/epoch_NNNN.pt (index, p_s(y), p_t(y), w, regularization flag)",
    )
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="autocast precision; losses stay float32")
    channels_last: bool = Field(False, description="NHWC memory format for models and images")
    compile: bool = Field(False, description="torch.compile student and teacher (slow start; off on CPU)")
    compile_backend: str = Field(
        "inductor", description="torch.compile backend: inductor (fast kernels), aot_eager or eager (debugging)"
    )
    sync_bn: bool = Field(False, description="under torchrun on CUDA: synchronise BatchNorm statistics")
    scale_lr: bool = Field(False, description="under torchrun: multiply optim.lr by the number of processes")
    find_unused_parameters: bool | None = Field(
        None, description="DDP option; default: on for methods with an initialisation phase"
    )


class Experiment(_Strict):
    """One experiment: what to train, on what data, how, and where to write the run folder."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    student: ModelConfig
    teacher: TeacherConfig | None = None
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    imports: list[str] = Field(
        [], description="modules to import before the run (they register models, datasets, methods, callbacks)"
    )
    callbacks: list[str | dict[str, Any]] = Field(
        [], description="registered callbacks: a name, or {name: ..., option: value, ...} (`softlabels list callbacks`)"
    )
    loggers: list[str | dict[str, Any]] = Field(
        [], description="experiment loggers: a name (tensorboard, wandb, mlflow) or {name: ..., option: value, ...}"
    )

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"imports", "callbacks", "loggers"})

    @field_validator("imports")
    @classmethod
    def _module_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or any(not part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name (like my_package.models)")
        return v

    @field_validator("callbacks", "loggers")
    @classmethod
    def _entries(cls, v: list) -> list:
        for i, entry in enumerate(v):
            name = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(name, str) or not name:
                raise ValueError(f"entry {i} must be a name or a mapping with a 'name' key, got {entry!r}")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ---------------------------------------------------------------------------------------------
# loading, overrides and error formatting


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-after")))


def _pydantic_message(err: ValidationError, source: str, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        key = prefix + _format_loc(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' (check the spelling; see docs/configs.md for the keys)")
        elif e["type"] == "missing":
            lines.append(f"missing key '{key}'")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"key '{key}': {msg}{got_s}" if key else msg)
    return f"invalid config {source}: " + "; ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
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


def read_yaml(path: str | Path, kind: str = "config") -> dict:
    """``yaml.safe_load`` a mapping from ``path`` with one-line errors naming the file (a ``kind`` file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{kind} {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must be a mapping of sections (data, student, method, ...)"
                          if kind == "config" else f"{kind} {path} must be a mapping of keys")
    return data


def validate_config(raw: dict, source: str = "<dict>", *, check_files: bool = True) -> Experiment:
    """Validate a raw mapping into an :class:`Experiment`; raises ConfigError on any problem.

    Checks beyond types: the method exists and its parameters are valid; distillation methods
    have a teacher; referenced checkpoint files exist (``check_files``); models exist.
    """
    from softlabels.methods import get_method
    from softlabels.models import list_models

    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_pydantic_message(err, source)) from None

    try:
        method_cls = get_method(exp.method.name)
    except UserError as err:
        raise ConfigError(f"invalid config {source}: key 'method.name': {err}") from None
    try:
        method_cls.Params.model_validate(exp.method.params())
    except ValidationError as err:
        raise ConfigError(_pydantic_message(err, source, prefix="method.")) from None

    if method_cls.requires_teacher and exp.teacher is None:
        raise ConfigError(
            f"invalid config {source}: method '{exp.method.name}' distils from a teacher: add a 'teacher' section "
            "with 'name' and 'checkpoint' (train one with method 'ce' first)"
        )
    models = set(list_models())
    for key, cfg in (("student", exp.student), ("teacher", exp.teacher)):
        if cfg is not None and not cfg.name.startswith("torchvision:") and cfg.name not in models:
            raise ConfigError(
                f"invalid config {source}: key '{key}.name': unknown model {cfg.name!r}; "
                f"see `softlabels list models`"
            )
    if exp.teacher and exp.student.num_classes and exp.teacher.num_classes:
        if exp.teacher.num_classes != exp.student.num_classes:
            raise ConfigError(
                f"invalid config {source}: teacher.num_classes ({exp.teacher.num_classes}) differs from "
                f"student.num_classes ({exp.student.num_classes}); both must predict the same classes"
            )
    _check_callbacks(exp, source)
    if check_files:
        from softlabels.resources import resolve_path

        if exp.teacher is not None and not resolve_path(exp.teacher.checkpoint).is_file():
            raise ConfigError(
                f"invalid config {source}: key 'teacher.checkpoint': file not found: {exp.teacher.checkpoint} "
                "(train the teacher first, or fix the path; relative paths are relative to the working directory)"
            )
        if exp.student.init is not None and not resolve_path(exp.student.init).is_file():
            raise ConfigError(f"invalid config {source}: key 'student.init': file not found: {exp.student.init}")
    return exp


def _check_callbacks(exp: Experiment, source: str) -> None:
    """Names and options of ``callbacks``/``loggers`` entries, checked against the registered Params."""
    if not (exp.callbacks or exp.loggers):
        return
    from softlabels.callbacks import build_callbacks

    try:
        build_callbacks(exp.callbacks, "callback")
        build_callbacks(exp.loggers, "logger")
    except ConfigError as err:
        raise ConfigError(f"invalid config {source}: {err}") from None


def load_config(path: str | Path, overrides: list[str] | None = None, *, check_files: bool = True) -> Experiment:
    """Read, override and validate one experiment file (a path, or a shipped name like ``fashion_mnist/wsl``)."""
    from softlabels.resources import find_config

    path = find_config(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    return validate_config(raw, str(path), check_files=check_files)


def method_params(exp: Experiment):
    """The validated parameter model of the experiment's method."""
    from softlabels.methods import get_method

    return get_method(exp.method.name).Params.model_validate(exp.method.params())


def to_yaml(exp: Experiment) -> str:
    """The resolved config as YAML (written to the run folder)."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)
