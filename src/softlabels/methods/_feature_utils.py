"""Helpers shared by feature-based methods: regressors, stage pairing, spatial matching.

Kept stable for other method files to import:

* :class:`ConvReg` maps a student feature (map or vector) to the shape of a teacher feature
  (FitNet's regressor, the CRD benchmark's ``ConvReg``);
* :func:`paired_stages` pairs the last ``min(N_s, N_t)`` stage names of two models;
* :func:`match_spatial` average-pools the larger of two maps to the smaller one's size;
* :func:`flat` is a float32 ``(B, -1)`` view;
* :func:`float32_loss` runs a loss function with autocast disabled (matmuls in float32 under AMP).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import stage_names


class ConvReg(nn.Module):
    """Regressor from a student feature to a teacher feature's shape (batch dimension ignored).

    Maps ``(N, Cs, Hs, Ws) -> (N, Ct, Ht, Wt)``: a 3x3 stride-2 conv when the student map is twice
    the teacher's size, a 4x4 stride-2 transposed conv when it is half, a valid conv of kernel
    ``(1 + Hs - Ht, 1 + Ws - Wt)`` when it is at least as large (1x1 for equal sizes), and otherwise
    (a smaller student map by another factor) a bilinear resize followed by a 1x1 conv. Then
    BatchNorm and, with ``relu=True`` (the benchmark's FitNet default), a ReLU. Vector features
    ``(N, Ds) -> (N, Dt)`` get Linear + BatchNorm1d (+ ReLU).
    """

    def __init__(self, s_shape: torch.Size | tuple, t_shape: torch.Size | tuple, relu: bool = True) -> None:
        super().__init__()
        s_shape, t_shape = tuple(s_shape), tuple(t_shape)
        if len(s_shape) != len(t_shape) or len(s_shape) not in (2, 4):
            raise ConfigError(f"ConvReg maps (N, C, H, W) or (N, D) features of equal rank; got {s_shape} -> {t_shape}")
        self.out_size: tuple[int, int] | None = None
        if len(s_shape) == 2:
            self.conv = nn.Linear(s_shape[1], t_shape[1])
            self.bn = nn.BatchNorm1d(t_shape[1])
        else:
            _, sc, sh, sw = s_shape
            _, tc, th, tw = t_shape
            if sh == 2 * th and sw == 2 * tw:
                self.conv = nn.Conv2d(sc, tc, kernel_size=3, stride=2, padding=1)
            elif 2 * sh == th and 2 * sw == tw:
                self.conv = nn.ConvTranspose2d(sc, tc, kernel_size=4, stride=2, padding=1)
            elif sh >= th and sw >= tw:
                self.conv = nn.Conv2d(sc, tc, kernel_size=(1 + sh - th, 1 + sw - tw))
            else:
                self.out_size = (th, tw)
                self.conv = nn.Conv2d(sc, tc, kernel_size=1)
            self.bn = nn.BatchNorm2d(tc)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_size is not None:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return self.relu(self.bn(self.conv(x)))


class SameFeature:
    """Mixin for methods comparing one feature (``params.feature``, e.g. "pooled") of both models."""

    def student_features(self) -> list[str]:
        return [self.params.feature]

    def teacher_features(self) -> list[str]:
        return [self.params.feature]


class StagePairs:
    """Mixin for methods comparing paired stages: the student and teacher features are the
    :func:`paired_stages` of the two models (error messages name the method by its class name)."""

    def _pairs(self) -> tuple[list[str], list[str]]:
        return paired_stages(self.student, self.teacher, type(self).__name__)

    def student_features(self) -> list[str]:
        return self._pairs()[0]

    def teacher_features(self) -> list[str]:
        return self._pairs()[1]


def paired_stages(student: nn.Module, teacher: nn.Module, method: str) -> tuple[list[str], list[str]]:
    """``(student stage names, teacher stage names)``, the last ``min(N_s, N_t)`` of each, in order.

    Raises a ConfigError naming the model when one declares no stages.
    """
    s, t = stage_names(student), stage_names(teacher)
    for names, model, role in ((s, student, "student"), (t, teacher, "teacher")):
        if not names:
            layers = ", ".join(getattr(model, "feature_layers", {})) or "none"
            raise ConfigError(
                f"{method} needs stage features, but the {role} {type(model).__name__} declares none (its features: {layers})"
            )
    n = min(len(s), len(t))
    return s[-n:], t[-n:]


def match_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool whichever map is larger to the other's spatial size (per dimension)."""
    if f_s.dim() != 4 or f_s.shape[-2:] == f_t.shape[-2:]:
        return f_s, f_t
    size = (min(f_s.shape[-2], f_t.shape[-2]), min(f_s.shape[-1], f_t.shape[-1]))
    if tuple(f_s.shape[-2:]) != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if tuple(f_t.shape[-2:]) != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return f_s, f_t


def flat(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 ``(B, -1)``."""
    return x.float().reshape(x.shape[0], -1)


F_ = TypeVar("F_", bound=Callable)


def float32_loss(fn: F_) -> F_:
    """Decorator: run ``fn`` with autocast disabled on the device of its first tensor argument.

    Autocast would run the matmuls of Gram / kernel / distance matrices in half precision even on
    float32 inputs; the losses cast their inputs with ``.float()`` and must stay float32 inside.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def ce_term(batch, weight: float) -> torch.Tensor:
    """``weight`` x the hard-label cross-entropy of the student's logits (float32)."""
    return weight * F.cross_entropy(batch.student_logits.float(), batch.targets)
