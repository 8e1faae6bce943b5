"""The one contract every method follows, and the method registry.

A method is a :class:`Distiller` subclass in its own file, registered with
``@register_method("name")``, with a pydantic ``Params`` model holding its hyperparameters and
their defaults. ``forward(images, targets, indices)`` returns a :class:`StepOutput` (``.logits``,
``.terms`` {term: weighted scalar loss}, ``.teacher_logits``), which still unpacks as
``logits, terms = method(images, targets)``; the trainer sums the terms and logs every one separately.

Most methods only implement :meth:`Distiller.loss_terms`, which receives a :class:`Batch` with
the student's and teacher's logits and the features they asked for by name
(``student_features`` / ``teacher_features``, captured by forward hooks). Because the
forward passes happen once in the base class, methods combine: ``fitnet+wsl`` runs FitNet's and
WSL's terms on the same forward pass (see ``methods/combined.py``).

Hooks the Trainer calls (all optional): :meth:`Distiller.setup` (once, before the optimizers),
:meth:`Distiller.configure_optimizers` (named optimizers and their LR rules; default: one "main"
optimizer from the config), :meth:`Distiller.set_epoch`, :meth:`Distiller.diagnostics` (fields for
the epoch's metrics row) and :meth:`Distiller.artifacts` (JSON files for the run folder).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from softlabels.engine.distributed import DistInfo, all_reduce_sum
from softlabels.engine.optim import OptimizerSpec, build_optimizer
from softlabels.features import FeatureCapture
from softlabels.registry import Registry

if TYPE_CHECKING:
    from softlabels.config import OptimConfig

METHODS: Registry[type[Distiller]] = Registry("method")


def register_method(name: str, *aliases: str):
    """Class decorator: register a :class:`Distiller` subclass under ``name``."""
    return METHODS.register(name, *aliases)


class MethodParams(BaseModel):
    """Base for a method's hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Batch:
    """What :meth:`Distiller.loss_terms` sees for one training step.

    images (B, C, H, W); targets (B,) int64; indices (B,) int64 positions in the full training set
    (or None); student_logits / teacher_logits (B, classes) (teacher None without a teacher);
    student_features / teacher_features: {feature name: tensor} as requested by the method.
    Teacher tensors carry no gradient.
    """

    images: torch.Tensor
    targets: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0


@dataclass
class StepOutput:
    """What one training forward returns.

    logits (B, classes): the student's; terms: {name: weighted scalar loss} (the trainer sums them);
    teacher_logits (B, classes) or None: the teacher outputs the terms used (no gradient), for the
    regularization statistics. Unpacks (and indexes) as ``(logits, terms)``, the older return value.
    """

    logits: torch.Tensor
    terms: dict[str, torch.Tensor]
    teacher_logits: torch.Tensor | None = None

    def __iter__(self):
        return iter((self.logits, self.terms))

    def __getitem__(self, i: int):
        return (self.logits, self.terms)[i]

    def __len__(self) -> int:
        return 2


class Distiller(nn.Module):
    """Holds the student and the (frozen) teacher and computes the named loss terms.

    The teacher is put in eval mode with ``requires_grad=False`` and is never returned by
    :meth:`trainable_parameters`; ``train()`` leaves it in eval mode unless
    ``teacher_train_mode`` is set (the official WSL ImageNet code's behaviour, opt-in).
    Trainable auxiliary modules (regressors, embeddings) go in ``self.auxiliary`` so they are
    optimized and checkpointed with the student; build them in :meth:`setup`, which the trainer
    calls once with a sample batch before it creates the optimizers.

    ``log`` is the "softlabels" logger (the console and log-file callbacks show it on the main
    process); ``dist`` is the run's :class:`~softlabels.engine.distributed.DistInfo` (set by the
    trainer), used by :meth:`average_over_processes`.
    """

    log: ClassVar[logging.Logger] = logging.getLogger("softlabels")

    requires_teacher: ClassVar[bool] = True
    logit_based: ClassVar[bool] = True
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        params: MethodParams | None = None,
        *,
        teacher_train_mode: bool = False,
    ) -> None:
        super().__init__()
        if self.requires_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher")
        self.student = student
        self.teacher = teacher
        self.params = params if params is not None else self.Params()
        self.teacher_train_mode = teacher_train_mode
        self.auxiliary = nn.ModuleDict()
        self.dist = DistInfo()
        self.teacher_cache = None  # a softlabels.engine.teacher_cache.TeacherCache, set by the trainer
        self.epoch = 0
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.train(teacher_train_mode)
        self._student_capture = FeatureCapture(student, self.student_features()) if self.student_features() else None
        self._teacher_capture = (
            FeatureCapture(teacher, self.teacher_features()) if teacher is not None and self.teacher_features() else None
        )

    # ---------------------------------------------------------------- declarations
    def student_features(self) -> list[str]:
        """Feature names captured from the student on every forward pass."""
        return []

    def teacher_features(self) -> list[str]:
        """Feature names captured from the teacher on every forward pass."""
        return []

    @property
    def init_epochs(self) -> int:
        """Epochs of an initialisation phase that precede the main schedule (0: none)."""
        return int(getattr(self.params, "init_epochs", 0) or 0)

    # ---------------------------------------------------------------- life cycle
    def setup(self, sample_images: torch.Tensor, data: Any = None) -> None:
        """Build auxiliary modules from observed feature shapes; ``data`` is the DataBundle."""

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based, counting init-phase epochs)."""
        self.epoch = epoch

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(mode and self.teacher_train_mode)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and auxiliary parameters: exactly what the "main" optimizer gets."""
        params = list(self.student.parameters()) + list(self.auxiliary.parameters())
        return [p for p in params if p.requires_grad]

    def configure_optimizers(self, optim: OptimConfig, lr: float) -> dict[str, OptimizerSpec]:
        """Named optimizers of the run and their LR rules (``softlabels.engine.optim``).

        Default: ``{"main": ...}``, the config's ``optim`` section at ``lr`` (``optim.lr``, times the
        process count with ``runtime.scale_lr``) over :meth:`trainable_parameters`, following the
        run's LR schedule and stepped by the trainer. A method with parameters of its own adds entries
        (``stepped_by="method"`` when it steps them itself inside its forward); the trainer checkpoints
        and restores every optimizer returned here. Called once, after :meth:`setup`.
        """
        return {"main": OptimizerSpec(build_optimizer(optim, self.trainable_parameters(), lr))}

    def average_over_processes(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place over the processes of a torchrun run (no-op for one process);
        for gradients of parameters a method updates itself."""
        if self.dist.enabled:
            for t in tensors:
                all_reduce_sum(t, self.dist).div_(self.dist.world_size)

    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        """Method-specific fields for the epoch's metrics row (running means since the last call when
        ``reset``); called once per epoch on every process, after evaluation. Default: none."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """``{file name: JSON-ready object}`` written to the run folder after every epoch (main process
        only), e.g. DFA's ``dfa_alpha.json``. Default: none."""
        return {}

    # ---------------------------------------------------------------- forward
    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher logits (batch, classes) without gradient.

        With a teacher cache and sample indices (training only), cached logits are returned when
        present, else computed, stored and returned as stored; the cache spot-checks two batches
        per epoch against the live teacher (see ``engine/teacher_cache.py``).
        """
        cache = self.teacher_cache if self.training else None
        if cache is not None and indices is not None:
            logits = cache.teacher_logits(self.epoch, indices, lambda: self.teacher(images))
        else:
            logits = self.teacher(images)
        return logits

    @torch.no_grad()
    def sample_features(self, images: torch.Tensor) -> tuple[dict, dict]:
        """Student and teacher features of one batch (no gradient), for shape-driven :meth:`setup`."""
        was_training = self.student.training
        self.student.eval()
        self.student(images)
        s = dict(self._student_capture.features) if self._student_capture else {}
        t = {}
        if self.teacher is not None:
            self.teacher(images)
            t = dict(self._teacher_capture.features) if self._teacher_capture else {}
        self.student.train(was_training)
        return s, t

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor | None = None
    ) -> StepOutput:
        """images (batch, C, H, W), targets (batch,) -> StepOutput(student logits (batch, classes),
        {term: scalar}, teacher logits or None).

        The teacher runs first: its no-grad temporaries are freed before the student's activations
        (kept for backward) are allocated, which keeps the allocator from returning and re-mapping
        large buffers every step (measured ~10 % faster on CPU than student-first).
        """
        teacher = self.teacher_logits(images, indices) if self.teacher is not None else None
        logits = self.student(images)
        terms = self.loss_terms(self.make_batch(images, targets, indices, logits, teacher))
        return StepOutput(logits, terms, teacher)

    def make_batch(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor | None,
                   student_logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> Batch:
        """The :class:`Batch` of this step, with the features captured during the forward passes."""
        return Batch(
            images=images,
            targets=targets,
            student_logits=student_logits,
            teacher_logits=teacher_logits,
            indices=indices,
            student_features=dict(self._student_capture.features) if self._student_capture else {},
            teacher_features=dict(self._teacher_capture.features) if self._teacher_capture else {},
            epoch=self.epoch,
        )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """{term name: weighted scalar loss} for one batch; the trainer sums them."""
        raise NotImplementedError
