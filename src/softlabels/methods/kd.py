"""Hinton et al. (2015): ce_weight * CE + kd_weight * T^2 KL(p_t^T || p_s^T)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class KDParams(MethodParams):
    """Defaults follow the CRD benchmark: T 4, CE weight 0.1, KL weight 0.9."""

    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(0.1, ge=0, description="multiplies the hard-label cross-entropy")
    kd_weight: float = Field(0.9, ge=0, description="multiplies T^2 * KL(teacher || student)")


@register_method("kd")
class KD(Distiller):
    """Loss terms: ``ce`` (weighted hard CE) and ``kd`` (weighted T²·KL)."""

    Params = KDParams

    def loss_terms(self, batch: Batch):
        p = self.params
        return {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "kd": p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature),
        }
