"""The one contract every method follows, and the method registry.

A method is a :class:`Distiller` subclass in its own file, registered with
``@register_method("name")``, with a pydantic ``Params`` model holding its hyperparameters and
their defaults. ``forward(images, targets)`` returns ``(student_logits, {term: loss})``; the
trainer sums the terms (each already weighted) and logs every one separately.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from softlabels.registry import Registry

METHODS: Registry[type[Distiller]] = Registry("method")


def register_method(name: str, *aliases: str):
    """Class decorator: register a :class:`Distiller` subclass under ``name``."""
    return METHODS.register(name, *aliases)


class MethodParams(BaseModel):
    """Base for a method's hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Distiller(nn.Module):
    """Holds the student and the (frozen) teacher and computes the named loss terms.

    The teacher is put in eval mode with ``requires_grad=False`` and is never returned by
    :meth:`trainable_parameters`; ``train()`` leaves it in eval mode unless
    ``teacher_train_mode`` is set (the official WSL ImageNet code's behaviour, opt-in).
    Trainable auxiliary modules (regressors, embeddings) go in ``self.auxiliary`` so they are
    optimized and checkpointed with the student.
    """

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
        self.last_teacher_logits: torch.Tensor | None = None
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.train(teacher_train_mode)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(mode and self.teacher_train_mode)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and auxiliary parameters: exactly what the optimizer gets."""
        params = list(self.student.parameters()) + list(self.auxiliary.parameters())
        return [p for p in params if p.requires_grad]

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits (batch, classes) without gradient; kept in ``last_teacher_logits``."""
        logits = self.teacher(images)
        self.last_teacher_logits = logits
        return logits

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (batch, C, H, W), targets (batch,) -> (student logits (batch, classes), {term: scalar})."""
        raise NotImplementedError
