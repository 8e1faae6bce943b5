"""Learning-rate schedules as pure functions of training progress (so resume needs no state)."""
from __future__ import annotations

import math

from softlabels.config import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate for ``step`` (0-based) of ``epoch`` (0-based).

    Linear warm-up over ``warmup_epochs`` (per iteration), then multistep (×gamma at each
    milestone epoch), cosine (per iteration, down to ``min_lr``) or constant.
    """
    progress = epoch + step / max(steps_per_epoch, 1)
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return base_lr * (progress + 1 / max(steps_per_epoch, 1)) / cfg.warmup_epochs
    if cfg.name == "multistep":
        return base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "cosine":
        span = cfg.epochs - cfg.warmup_epochs
        t = (progress - cfg.warmup_epochs) / span
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return base_lr
