"""Building a run's models: the student (init weights, InfoDrop) and the frozen teacher."""
from __future__ import annotations

import torch
from torch import nn

from softlabels.config import Experiment
from softlabels.engine import checkpoint as ckpt_io
from softlabels.errors import CheckpointError
from softlabels.models import create_model


def build_student(exp: Experiment, num_classes: int, in_channels: int) -> nn.Module:
    """The configured student (``student.init`` weights and InfoDrop layers applied), on the CPU."""
    student = create_model(exp.student.name, num_classes, in_channels)
    if exp.student.init:
        ckpt_io.load_model_weights(student, ckpt_io.load_checkpoint(exp.student.init), expected_name=exp.student.name)
    if exp.student.infodrop is not None:
        from softlabels.models.infodrop import insert_infodrop

        insert_infodrop(student, **exp.student.infodrop.model_dump(exclude={"finetune_epochs"}))
    return student


def load_teacher(exp: Experiment, num_classes: int, in_channels: int, device: torch.device) -> tuple[nn.Module, dict]:
    """Build the configured teacher, load its checkpoint, check it fits the data; frozen, on device.

    Returns (teacher, info) where info records name, checkpoint path, sha256, recorded top-1, train_mode.
    """
    tcfg = exp.teacher
    ckpt = ckpt_io.load_checkpoint(tcfg.checkpoint)
    saved_classes = ckpt.get("num_classes")
    if saved_classes is not None and saved_classes != num_classes:
        raise CheckpointError(
            f"teacher checkpoint {tcfg.checkpoint} predicts {saved_classes} classes but the student/data have "
            f"{num_classes}; use a teacher trained on the same dataset"
        )
    teacher = create_model(tcfg.name, tcfg.num_classes or num_classes, in_channels)
    ckpt_io.load_model_weights(teacher, ckpt, expected_name=tcfg.name)
    teacher.to(device).eval().requires_grad_(False)
    info = {
        "name": tcfg.name,
        "checkpoint": str(tcfg.checkpoint),
        "sha256": ckpt_io.sha256_of(ckpt["_path"]),
        "recorded_top1": (ckpt.get("metrics") or {}).get("test_top1"),
        "train_mode": tcfg.train_mode,
    }
    return teacher, info


def check_finite_state(modules: dict[str, nn.Module]) -> str | None:
    """The name of the first parameter or buffer holding NaN/inf (``<module>.<name>``), else None."""
    for prefix, module in modules.items():
        for kind in (module.named_parameters(), module.named_buffers()):
            for name, tensor in kind:
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"{prefix}.{name}"
    return None
