"""The experiment model: one pydantic section per YAML section, each validated once.

``data`` is validated into the config class its dataset registered (``softlabels.data``), ``method``
into the registered method's ``Params`` (kept as ``exp.method.params``): the objects that training
uses are the validated ones, nothing is re-read from a raw dict later.
"""
from __future__ import annotations

import copy
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from softlabels.data import DataConfig, validate_data_config
from softlabels.errors import UserError
from softlabels.methods.base import MethodParams
from softlabels.schema import StrictModel


class InfoDropConfig(StrictModel):
    """Informative dropout (Shi et al., ICML 2020) after named stages of the student."""

    after: list[str] = Field(["stem"], min_length=1, description="feature names (stem, stage1, ...) or module:PATH")
    drop_rate: float = Field(1.5, gt=0, description="paper presets: 1.5 with T 0.03, or 0.1 with T 0.5")
    temperature: float = Field(0.03, gt=0, description="temperature of the patch-distance softmax")
    finetune_epochs: int = Field(0, ge=0, description="last N epochs train without InfoDrop")
    radius: int = Field(3, ge=1, description="neighbourhood radius, in pixels")
    num_offsets: int | None = Field(9, ge=1, description="sampled neighbour offsets; null: all")
    bandwidth: float = Field(1.0, gt=0, description="bandwidth of the patch-distance kernel")
    padding_mode: Literal["replicate", "zeros"] = Field("replicate", description="padding of the patch comparison")
    source: Literal["input", "output"] = Field("input", description="compare patches of the layer's input or output")
    input_from: str | None = Field(None, description="feature whose output feeds the patch comparison; null: own")


class ModelConfig(StrictModel):
    """The student (or the model trained alone)."""

    name: str = Field(description="a model from `softlabels list models` or torchvision:NAME")
    infodrop: InfoDropConfig | None = Field(None, description="InfoDrop after named stages (identity in eval mode)")
    num_classes: int | None = Field(None, ge=1, description="default: the dataset's class count (must equal it)")
    init: str | None = Field(None, description="optional checkpoint to start from (shared initialisation)")


class TeacherConfig(StrictModel):
    """The frozen teacher of distillation methods."""

    name: str = Field(description="the teacher's architecture (from the config, never from the file name)")
    checkpoint: str = Field(
        description="a softlabels checkpoint, a RepDistiller/mdistiller checkpoint (`{model: state_dict, ...}`) or a "
        "bare state dict (e.g. `torch.save(model.state_dict(), path)`); `softlabels:REL` names a file shipped in the "
        "package (`softlabels:teachers/fashion_mnist_resnet20.pt`); `torchvision:resnet34.IMAGENET1K_V1` torchvision's "
        "published weights (torch hub cache, downloaded on first use)"
    )
    num_classes: int | None = Field(None, ge=1, description="default: the dataset's class count")
    train_mode: bool = Field(
        False,
        description="run the teacher in train() mode as the official WSL ImageNet code does "
        "(BN batch statistics); still no gradients and never optimized",
    )
    cache: bool = Field(
        False,
        description="store teacher logits per (epoch, sample) in a memory-mapped file and reuse them "
        "in later runs with the same teacher, data and seed (logit methods only)",
    )
    cache_path: str | None = Field(None, description="cache folder; default `<output_dir>/teacher_cache/<key>`")
    cache_topk: int | None = Field(
        None,
        ge=1,
        description="keep only the k largest logits per sample plus one logit for the other classes (their mean "
        "probability at T = 1): about 4k + 2 bytes instead of 4C (float32) per sample and epoch; null: all",
    )

    @model_validator(mode="after")
    def _cache_needs_eval_teacher(self):
        if self.cache and self.train_mode:
            raise ValueError("teacher.cache cannot be used with teacher.train_mode (outputs depend on the batch)")
        return self


def _error(kind: str, message: str, loc: tuple, value: Any) -> ValidationError:
    detail = InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
    return ValidationError.from_exception_data("config", [detail])


def _as_given(given: Any, value: Any) -> Any:
    """``value`` with the integers the config wrote for float parameters kept as integers (``4``, not
    ``4.0``), so a config dumps back to what was written."""
    if isinstance(value, float) and type(given) is int and given == value:
        return given
    if isinstance(value, dict) and isinstance(given, dict):
        return {k: _as_given(given.get(k), v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(given, list) and len(given) == len(value):
        return [_as_given(g, v) for g, v in zip(given, value)]
    return value


class MethodConfig(StrictModel):
    """``method``: ``name`` plus that method's parameters, validated by its ``Params`` model.

    Written flat in YAML (``{name: kd, temperature: 4}``); held as ``name`` and ``params`` (the
    validated ``Params`` object). Dumps write ``name`` and the parameters the config set, in its order.
    """

    name: str = Field("ce", description="a registered method (`softlabels list methods`) or a combination a+b")
    params: SerializeAsAny[MethodParams] = Field(description="the method's parameters (see the table below)")
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, name: str, **params: Any) -> MethodConfig:
        """``MethodConfig.of("kd", temperature=2)``: validated like the YAML ``{name: kd, temperature: 2}``."""
        return cls.model_validate({"name": name, **params})

    @model_validator(mode="wrap")
    @classmethod
    def _resolve(cls, raw: Any, handler: Any) -> MethodConfig:
        if isinstance(raw, MethodConfig) or not isinstance(raw, dict) or "params" in raw:
            return handler(raw)
        from softlabels.methods import get_method

        name = raw.get("name", "ce")
        if not isinstance(name, str):
            raise _error("method_name", "must be a method name (a string)", ("name",), name)
        try:
            method_cls = get_method(name)
        except UserError as err:
            raise _error("unknown_method", str(err), ("name",), name) from None
        options = {k: v for k, v in raw.items() if k != "name"}
        out = handler({"name": name, "params": method_cls.Params.model_validate(options)})
        out._given = copy.deepcopy(options)
        return out

    @model_validator(mode="after")
    def _params_of_this_method(self) -> MethodConfig:
        from softlabels.methods import get_method

        try:
            expected = get_method(self.name).Params
        except UserError as err:
            raise ValueError(str(err)) from None
        if not isinstance(self.params, expected):
            raise ValueError(f"method '{self.name}' takes {expected.__name__}, got {type(self.params).__name__}")
        return self

    @model_serializer(mode="plain")
    def _flat(self, info: Any) -> dict[str, Any]:
        values = self.params.model_dump(mode=info.mode, exclude_unset=True)
        order = [k for k in self._given if k in values] + [k for k in values if k not in self._given]
        return {"name": self.name, **{k: _as_given(self._given.get(k), values[k]) for k in order}}


class OptimConfig(StrictModel):
    """The student's optimizer (methods with modules of their own may add optimizers)."""

    name: Literal["sgd", "adamw"] = Field("sgd", description="sgd or adamw")
    lr: float = Field(0.05, gt=0, description="base learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (decoupled for adamw)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov needs optim.momentum > 0")
        return self


class ScheduleConfig(StrictModel):
    """Epochs and the learning-rate schedule."""

    name: Literal["multistep", "cosine", "constant"] = Field(
        "multistep",
        description="multistep (x gamma at each milestone), cosine (per iteration, down to min_lr), constant",
    )
    epochs: int = Field(240, ge=1, description="training epochs (after a method's own initialisation epochs)")
    milestones: list[int] = Field([150, 180, 210], description="multistep: epochs after which the LR is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: LR factor at each milestone")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up, per iteration, over this many epochs")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")

    @model_validator(mode="after")
    def _check(self):
        if self.name == "multistep" and any(m < 1 or m > self.epochs for m in self.milestones):
            raise ValueError(f"schedule.milestones must lie in 1..epochs ({self.epochs}), got {self.milestones}")
        if self.milestones != sorted(self.milestones):
            raise ValueError("schedule.milestones must be increasing")
        if self.warmup_epochs >= self.epochs:
            raise ValueError("schedule.warmup_epochs must be smaller than schedule.epochs")
        return self


class RuntimeConfig(StrictModel):
    """Where and how the run executes; none of these keys changes what is learned (except amp)."""

    device: str = Field("auto", description="auto (CUDA when present, else MPS, else CPU), cpu, cuda, cuda:N, mps")
    deterministic: bool = Field(True, description="deterministic cuDNN")
    progress: bool = Field(True, description="progress bar with loss, accuracy and images/s")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    checkpoint_every: int = Field(1, ge=1, description="write last.pt every N epochs (and always at the end)")
    per_sample_dump: bool = Field(
        False,
        description="distillation runs: write `per_sample/epoch_NNNN.pt` with each training sample's index, p_s(y) "
        "and p_t(y) at the run's T, WSL weight and regularization flag (float16; `torch.load(..., weights_only=True)`)",
    )
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="bf16 or fp16 autocast (GradScaler for fp16); every loss runs its softmax in float32"
    )
    channels_last: bool = Field(False, description="NHWC memory format for models and images")
    compile: bool = Field(False, description="torch.compile student and teacher in place (checkpoints keep plain weight names; slow start)")
    compile_backend: str = Field(
        "inductor", description="torch.compile backend: inductor (fast kernels), aot_eager or eager (debugging)"
    )
    sync_bn: bool = Field(False, description="under torchrun: synchronise BatchNorm statistics across processes (CUDA: SyncBatchNorm; CPU/gloo: all-reduced batch statistics)")
    scale_lr: bool = Field(False, description="under torchrun: multiply optim.lr by the number of processes")
    find_unused_parameters: bool | None = Field(
        None, description="DDP option; default: on for methods with an initialisation phase"
    )
    test_eval: Literal["every_epoch", "when_best", "at_end"] = Field(
        "every_epoch",
        description="every_epoch: evaluate the test set after every epoch; when_best: only at epochs whose "
        "validation top-1 is a new best and at the last epoch; at_end: once after the last epoch, for the last "
        "model and for the best-validation weights (both need data.val_split; best and last test top-1 are the "
        "same as every_epoch's, the per-epoch test curve is left out; saves most of a small-data run's "
        "evaluation time)",
    )

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"test_eval"})

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if v != "auto":
            import torch

            try:
                torch.device(v)
            except (RuntimeError, ValueError):
                raise ValueError("not a device (use auto, cpu, cuda, cuda:N or mps)") from None
        return v


def _run_name_problem(name: str) -> str | None:
    """Why ``name`` is not a relative path inside output_dir (None when it is)."""
    if not name or not name.strip():
        return "must not be empty"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "must be a relative path inside output_dir, not an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "must stay inside output_dir (no '..')"
    if not [p for p in parts if p not in ("", ".")]:
        return "must name a folder inside output_dir, not output_dir itself"
    if any(ord(c) < 32 for c in name):
        return "must not contain control characters"
    return None


class Experiment(StrictModel):
    """One experiment: what to train, on what data, how, and where to write the run folder."""

    name: str = Field("run", description="run folder name, a relative path inside output_dir (no `..`, not absolute): the run is written to "
        "`<output_dir>/<name>`")
    seed: int = Field(0, description="seeds model init, subset/validation split, data order and augmentation")
    output_dir: str = Field("runs", description="parent folder of run folders")
    data: SerializeAsAny[DataConfig] = Field(
        default_factory=dict, validate_default=True, description="the dataset and its loaders"
    )
    student: ModelConfig = Field(description="the model that is trained")
    teacher: TeacherConfig | None = Field(None, description="required by distillation methods")
    method: MethodConfig = Field(default_factory=dict, validate_default=True, description="the training method")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="the optimizer")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="epochs and learning rate")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="device and execution options")
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

    @field_validator("data", mode="wrap")
    @classmethod
    def _dataset_config(cls, value: Any, handler: Any) -> DataConfig:
        return validate_data_config(value)

    @field_validator("name")
    @classmethod
    def _relative_name(cls, v: str) -> str:
        problem = _run_name_problem(v)
        if problem:
            raise ValueError(problem)
        return v

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

    @model_validator(mode="after")
    def _test_eval_needs_validation(self) -> Experiment:
        if self.runtime.test_eval != "every_epoch" and not self.data.val_split:
            raise ValueError(f"runtime.test_eval {self.runtime.test_eval} chooses the best epoch on the validation "
                             "split: set data.val_split, or use test_eval every_epoch")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
