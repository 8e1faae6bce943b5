"""Named optimizers of a run and their LR rules.

A method's :meth:`~softlabels.methods.Distiller.configure_optimizers` returns
``{name: OptimizerSpec}``; the default is one ``"main"`` optimizer built from the config's
``optim`` section over the method's trainable parameters. The Trainer

* sets the LR of every optimizer whose rule is ``"schedule"`` before each training step: each
  param group's ``initial_lr`` (its LR when the optimizer was made) times the run's schedule
  (``engine/schedule.py``; the base LR itself during a method's ``init_epochs`` phase);
  ``"constant"`` optimizers keep their LR;
* zeroes, steps (through the GradScaler under fp16) every optimizer with ``stepped_by="trainer"``
  after the backward pass of the summed loss terms; ``stepped_by="method"`` optimizers are stepped
  by the method inside its own forward (DFA's architecture step, ProKT's teacher update);
* saves and restores the state of all of them in ``last.pt`` (``optimizers: {name: state}``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from softlabels.config import OptimConfig, ScheduleConfig


@dataclass
class OptimizerSpec:
    """One named optimizer and how the Trainer treats it (see the module docstring)."""

    optimizer: torch.optim.Optimizer
    lr_rule: Literal["schedule", "constant"] = "schedule"
    stepped_by: Literal["trainer", "method"] = "trainer"

    def __post_init__(self) -> None:
        if self.lr_rule not in ("schedule", "constant"):
            raise ValueError(f"lr_rule must be 'schedule' or 'constant', got {self.lr_rule!r}")
        if self.stepped_by not in ("trainer", "method"):
            raise ValueError(f"stepped_by must be 'trainer' or 'method', got {self.stepped_by!r}")
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The optimizer of the config's ``optim`` section (SGD with momentum/Nesterov, or AdamW) at ``lr``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(list(params), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=cfg.weight_decay)


def set_scheduled_lr(specs: dict[str, OptimizerSpec], schedule: ScheduleConfig, epoch: int, step: int, steps: int,
                     init_epochs: int) -> None:
    """Set the LR of every ``"schedule"`` optimizer for ``step`` of ``epoch`` (0-based; init-phase epochs first,
    at the groups' initial LR)."""
    from softlabels.engine.schedule import lr_at

    for spec in specs.values():
        if spec.lr_rule != "schedule":
            continue
        for group in spec.optimizer.param_groups:
            base = group["initial_lr"]
            group["lr"] = base if epoch < init_epochs else lr_at(schedule, base, epoch - init_epochs, step, steps)
