"""Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022, https://arxiv.org/abs/2203.08679).

KD split at temperature T into a target-class part and a non-target part, each x T^2::

    b = [p_y, 1 - p_y]                   (binary target / non-target probabilities at T)
    TCKD = T^2 * mean_batch KL(b_t || b_s)
    NCKD = T^2 * mean_batch KL(p~_t || p~_s)   (p~: softmax at T over the non-target classes only)
    L    = ce_weight * CE + warm * (alpha * TCKD + beta * NCKD),   warm = min((epoch + 1) / warmup_epochs, 1)

Term ``dkd`` = warm * (alpha TCKD + beta NCKD), plus ``ce``. mdistiller's CIFAR-100 defaults: CE 1,
alpha 1, beta 8, T 4, 20 warm-up epochs; beta is set per teacher/student pair in the configs
(mdistiller: 6 for WRN-40-2 -> WRN-16-2, 2 for resnet56 -> resnet20; ImageNet T 1, warm-up 1,
beta 0.5 for R34 -> R18 and 2 for R50 -> MobileNetV1). The warm-up counts epochs from 1, as
mdistiller (``epoch / warmup`` with 1-based epochs; ``batch.epoch`` is 0-based, hence + 1).

Numerics: the binary log-probabilities are computed with logsumexp (log p_y = z_y - lse(z),
log(1 - p_y) = lse(z without y) - lse(z)) instead of mdistiller's log of summed softmax entries,
and the non-target softmax masks the target class with -1000 / T as mdistiller does; the values agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.losses._common import check_logits, check_temperature
from softlabels.methods._feature_utils import ce_term, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class DKDParams(MethodParams):
    """mdistiller CIFAR-100 defaults: CE 1, alpha 1, beta 8, T 4, 20 warm-up epochs."""

    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    alpha: float = Field(1.0, ge=0, description="multiplies TCKD")
    beta: float = Field(8.0, ge=0, description="multiplies NCKD (set per teacher/student pair)")
    temperature: float = Field(4.0, gt=0)
    warmup_epochs: int = Field(20, ge=0, description="linear warm-up of the DKD term (0 = none)")


def _binary_log_probs(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, K) logits, (B, K) bool target mask -> (B, 2) log [p_y, 1 - p_y]."""
    lse = torch.logsumexp(z, dim=1)
    log_py = (z * gt).sum(1) - lse
    log_rest = torch.logsumexp(z.masked_fill(gt, float("-inf")), dim=1) - lse
    return torch.stack([log_py, log_rest], dim=1)


@float32_loss
def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2 * batch-mean KL(teacher || student), float32 scalars."""
    check_logits(student_logits, teacher_logits)
    check_temperature(temperature)
    t2 = temperature**2
    zs = student_logits.float() / temperature
    zt = teacher_logits.detach().float() / temperature
    gt = F.one_hot(targets, zs.shape[1]).bool()
    bs, bt = _binary_log_probs(zs, gt), _binary_log_probs(zt, gt)
    tckd = (bt.exp() * (bt - bs)).sum(1).mean() * t2
    log_ps = F.log_softmax(zs - 1000.0 * gt, dim=1)
    log_pt = F.log_softmax(zt - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).masked_fill(gt, 0.0).sum(1).mean() * t2
    return tckd, nckd


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD (float32 scalar, no warm-up)."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, targets, temperature)
    return alpha * tckd + beta * nckd


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """min((epoch + 1) / warmup_epochs, 1) for a 0-based epoch; 1 without warm-up."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)


@register_method("dkd")
class DKD(Distiller):
    """Loss terms: ``ce`` and ``dkd`` (warm-up-scaled alpha TCKD + beta NCKD)."""

    Params = DKDParams

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        warm = warmup_factor(batch.epoch - self.init_epochs, p.warmup_epochs)
        loss = dkd_loss(batch.student_logits, batch.teacher_logits, batch.targets, p.alpha, p.beta, p.temperature)
        return {"ce": ce_term(batch, p.ce_weight), "dkd": warm * loss}
