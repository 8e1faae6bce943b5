"""Hinton et al. (2015) knowledge distillation loss."""
from __future__ import annotations

import torch
from torch import nn

from softlabels.losses._common import check_logits, check_temperature, kl_per_sample


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * batch mean of KL(p_t^T || p_s^T).

    Args:
        student_logits, teacher_logits: (batch, classes), any float dtype; the teacher is detached.
        temperature: softening temperature T > 0.
    Returns:
        A float32 scalar.
    """
    check_logits(student_logits, teacher_logits)
    check_temperature(temperature)
    return temperature**2 * kl_per_sample(student_logits, teacher_logits, temperature).mean()


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, self.temperature)
