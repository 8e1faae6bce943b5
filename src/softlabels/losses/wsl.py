"""Weighted Soft Labels (Zhou et al., ICLR 2021) and the regularization-sample indicator.

Notation: z_s, z_t are student and teacher logits (batch, classes), y the labels (batch,),
p^T = softmax(z / T), CE(z, y) = -log softmax(z)(y).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.losses._common import (
    as_float32,
    check_logits,
    check_temperature,
    kl_per_sample,
    soft_cross_entropy_per_sample,
)

WSL_EPS = 1e-7
SoftForm = Literal["ce", "kl"]


def _check_target(student_logits: torch.Tensor, target: torch.Tensor) -> None:
    if target.dim() != 1 or target.shape[0] != student_logits.shape[0]:
        raise ValueError(f"target must be (batch,) class indices, got shape {tuple(target.shape)}")


@torch.no_grad()
def wsl_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample WSL weights w = 1 - exp(-max(CE(z_s, y) / (CE(z_t, y) + 1e-7), 0)).

    CE at temperature 1 on detached logits, so the weight never carries gradient.
    Returns a detached float32 tensor of shape (batch,) with values in [0, 1].
    """
    check_logits(student_logits, teacher_logits)
    _check_target(student_logits, target)
    s, t = as_float32(student_logits.detach(), teacher_logits.detach())
    ce_s = F.cross_entropy(s, target, reduction="none")
    ce_t = F.cross_entropy(t, target, reduction="none")
    ratio = torch.clamp(ce_s / (ce_t + WSL_EPS), min=0.0)
    return 1.0 - torch.exp(-ratio)


@torch.no_grad()
def regularization_mask(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> torch.Tensor:
    """True where p_s^T(y) > p_t^T(y): the paper's regularization samples. Bool (batch,).

    Compared in log space, so saturated logits (±1e4) do not tie at probability 0 or 1.
    """
    check_logits(student_logits, teacher_logits)
    _check_target(student_logits, target)
    check_temperature(temperature)
    s, t = as_float32(student_logits.detach(), teacher_logits.detach())
    idx = target.view(-1, 1)
    log_a_s = F.log_softmax(s / temperature, dim=1).gather(1, idx).squeeze(1)
    log_a_t = F.log_softmax(t / temperature, dim=1).gather(1, idx).squeeze(1)
    return log_a_s > log_a_t


def wsl_soft_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    *,
    form: SoftForm = "ce",
    weighting: Literal["wsl", "none", "filter"] = "wsl",
) -> torch.Tensor:
    """T^2 * batch mean of w_i * softCE_i (float32 scalar).

    Args:
        student_logits, teacher_logits: (batch, classes); only the student receives gradient.
        target: (batch,) int64 class indices.
        temperature: T > 0 for the soft term; the weights always use T = 1.
        form: "ce" = -sum_c p_t^T log p_s^T (the official code); "kl" = KL(p_t^T || p_s^T),
            which has the same gradient and differs by the teacher's entropy.
        weighting: "wsl" = the WSL weights; "none" = w = 1 (plain KD scaling);
            "filter" = w = 0 on regularization samples at this T, 1 elsewhere.
    """
    check_logits(student_logits, teacher_logits)
    _check_target(student_logits, target)
    check_temperature(temperature)
    if form == "ce":
        per_sample = soft_cross_entropy_per_sample(student_logits, teacher_logits, temperature)
    elif form == "kl":
        per_sample = kl_per_sample(student_logits, teacher_logits, temperature)
    else:
        raise ValueError(f"form must be 'ce' or 'kl', got {form!r}")
    if weighting == "wsl":
        per_sample = wsl_weights(student_logits, teacher_logits, target) * per_sample
    elif weighting == "filter":
        keep = ~regularization_mask(student_logits, teacher_logits, target, temperature)
        per_sample = keep.to(per_sample.dtype) * per_sample
    elif weighting != "none":
        raise ValueError(f"weighting must be 'wsl', 'none' or 'filter', got {weighting!r}")
    return temperature**2 * per_sample.mean()


def wsl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 2.25,
    **soft_kwargs,
) -> torch.Tensor:
    """The whole WSL objective: CE(z_s, y) + alpha * wsl_soft_loss (float32 scalar)."""
    hard = F.cross_entropy(as_float32(student_logits)[0], target)
    return hard + alpha * wsl_soft_loss(student_logits, teacher_logits, target, temperature, **soft_kwargs)


class WSLSoftLoss(nn.Module):
    """Module form of :func:`wsl_soft_loss` (the weighted soft term only, ×T², without alpha)."""

    def __init__(self, temperature: float = 4.0, form: SoftForm = "ce", weighting: str = "wsl") -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature, self.form, self.weighting = temperature, form, weighting

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return wsl_soft_loss(
            student_logits, teacher_logits, target, self.temperature, form=self.form, weighting=self.weighting
        )


class WSLLoss(nn.Module):
    """Module form of :func:`wsl_loss`: CE + alpha * weighted soft term."""

    def __init__(self, temperature: float = 4.0, alpha: float = 2.25, form: SoftForm = "ce") -> None:
        super().__init__()
        self.soft = WSLSoftLoss(temperature, form)
        self.alpha = alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hard = F.cross_entropy(as_float32(student_logits)[0], target)
        return hard + self.alpha * self.soft(student_logits, teacher_logits, target)
