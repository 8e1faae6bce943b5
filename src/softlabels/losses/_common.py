"""Shared checks and float32 helpers for the logit losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def as_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Upcast half/bfloat16 logits to float32 (softmax under AMP must not run in half precision);
    float32 and float64 inputs keep their dtype (float64 is what gradcheck needs)."""
    return tuple(t if t.dtype in (torch.float32, torch.float64) else t.float() for t in tensors)


def check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Both (batch, classes) with equal shapes; the class count comes from the logits."""
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must both be (batch, classes) with equal shapes, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def soft_cross_entropy_per_sample(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """softCE_i = -sum_c p_t^T(c) log p_s^T(c); (batch,) float32, gradient only through the student."""
    s, t = as_float32(student_logits, teacher_logits)
    log_p_s = F.log_softmax(s / temperature, dim=1)
    p_t = F.softmax(t.detach() / temperature, dim=1)
    return -(p_t * log_p_s).sum(dim=1)


def kl_per_sample(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(p_t^T || p_s^T) per sample; (batch,) float32. Equals softCE minus the teacher entropy."""
    s, t = as_float32(student_logits, teacher_logits)
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t.detach() / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
