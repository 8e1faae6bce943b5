"""Plain cross-entropy training: teachers, and the "student alone" baseline."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class CEParams(MethodParams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@register_method("ce")
class CrossEntropy(Distiller):
    """Loss terms: ``ce`` = CE(z_s, y) (optionally label-smoothed). No teacher."""

    requires_teacher = False
    logit_based = False
    Params = CEParams

    def loss_terms(self, batch: Batch):
        logits = batch.student_logits.float()
        return {"ce": F.cross_entropy(logits, batch.targets, label_smoothing=self.params.label_smoothing)}
