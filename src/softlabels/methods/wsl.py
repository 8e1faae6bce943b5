"""Weighted Soft Labels (Zhou et al., ICLR 2021): CE + alpha * T^2 mean_i w_i softCE_i."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from softlabels.losses import wsl_soft_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class WSLParams(MethodParams):
    """Defaults: the paper's CIFAR-100 setting (T 4, alpha 2.25); ImageNet uses T 2, alpha 2.5."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(2.25, ge=0, description="multiplies the weighted soft term")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    form: Literal["ce", "kl"] = Field("ce", description="soft cross-entropy (official code) or KL; same gradient")
    weighting: Literal["wsl", "none", "filter"] = Field(
        "wsl",
        description="wsl: 1-exp(-CE_s/CE_t); none: w=1 (KD with this scaling); "
        "filter: w=0 on regularization samples (the paper's filtering experiment)",
    )


@register_method("wsl")
class WSL(Distiller):
    """Loss terms: ``ce`` (hard CE) and ``wsl`` (alpha-weighted, sample-weighted soft term)."""

    Params = WSLParams

    def loss_terms(self, batch: Batch):
        p = self.params
        s, t, y = batch.student_logits, batch.teacher_logits, batch.targets
        soft = wsl_soft_loss(s, t, y, p.temperature, form=p.form, weighting=p.weighting)
        return {"ce": p.ce_weight * F.cross_entropy(s.float(), y), "wsl": p.alpha * soft}
