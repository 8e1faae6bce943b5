"""Distillation losses: pure functions on logits plus thin nn.Module wrappers.

Every loss infers the class count from the logits, runs softmax in float32 (also under
float16/bfloat16 inputs) and returns a float32 scalar.
"""
from softlabels.losses.kd import KDLoss, kd_loss
from softlabels.losses.wsl import (
    WSLLoss,
    WSLSoftLoss,
    regularization_mask,
    wsl_loss,
    wsl_soft_loss,
    wsl_weights,
)

__all__ = [
    "KDLoss",
    "WSLLoss",
    "WSLSoftLoss",
    "kd_loss",
    "regularization_mask",
    "wsl_loss",
    "wsl_soft_loss",
    "wsl_weights",
]
