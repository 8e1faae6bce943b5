"""Teacher-free KD with a manually designed teacher, Tf-KD_reg (Yuan et al., CVPR 2020,
"Revisiting Knowledge Distillation via Label Smoothing Regularization", https://arxiv.org/abs/1909.11723).

No teacher network: a *virtual teacher* puts probability ``a`` (``correct_prob``) on the true class
and spreads ``1 - a`` uniformly over the other K - 1 classes::

    p_d(k) = a if k == y else (1 - a) / (K - 1)
    L      = ce_weight * CE(z, y) + weight * KL(teacher_T || student)

Two forms (``form``):

* ``official`` (default; the authors' ``loss_kd_regularization``, for which the published
  hyperparameters were tuned): teacher_T = softmax(p_d / T) (a softmax of the *probabilities*
  divided by T, which at T = 20 is close to uniform with a slightly larger true-class entry);
  student = log_softmax(z) at T = 1; the KL is ``nn.KLDivLoss()``'s mean over all B x K elements.
  The authors' loss is (1 - alpha) CE + alpha * multiplier * KL, i.e. ``ce_weight`` = 1 - alpha and
  ``weight`` = alpha * multiplier; defaults from their CIFAR-100 ResNet18 setting (alpha 0.1,
  multiplier 100, T 20): ``ce_weight`` 0.9, ``weight`` 10.
* ``paper`` (the paper's D_KL(p_d^tau, p^tau)): the virtual teacher softened as a teacher with
  logits log p_d, i.e. softmax(log p_d / T), against softmax(z / T); batch-mean KL (no T^2 factor,
  as written in the paper). Its weights were not tuned here.

Term ``tf_kd`` (the weighted KL) plus ``ce``. ``requires_teacher = False``: configs need no teacher
section. Departures: ``correct_prob`` defaults to 0.9 (the paper: a >= 0.9; the official code hard-codes
0.99 — set ``correct_prob: 0.99`` to reproduce it exactly, at T = 20 with 100 classes the two virtual teachers' true-class probabilities are 0.01046 and 0.01050).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.methods._feature_utils import ce_term, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class TFKDParams(MethodParams):
    """Official CIFAR-100 ResNet18 setting: alpha 0.1, multiplier 100, T 20 (ce_weight 0.9, weight 10)."""

    ce_weight: float = Field(0.9, ge=0, description="multiplies the hard-label cross-entropy (1 - alpha)")
    weight: float = Field(10.0, ge=0, description="multiplies the KL to the virtual teacher (alpha * multiplier)")
    correct_prob: float = Field(0.9, gt=0, lt=1, description="a: the virtual teacher's true-class probability")
    temperature: float = Field(20.0, gt=0, description="softening temperature of the virtual teacher")
    form: Literal["official", "paper"] = Field("official", description="the authors' code or the paper's formula")


def virtual_teacher(targets: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """(B,) labels -> (B, K) p_d: ``correct_prob`` on the label, the rest spread uniformly (float32)."""
    if num_classes < 2:
        raise ValueError("the virtual teacher needs at least two classes")
    p = torch.full((targets.shape[0], num_classes), (1 - correct_prob) / (num_classes - 1),
                   device=targets.device, dtype=torch.float32)
    return p.scatter(1, targets.view(-1, 1), correct_prob)


@float32_loss
def tf_kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, correct_prob: float = 0.9,
               temperature: float = 20.0, form: str = "official") -> torch.Tensor:
    """Unweighted KL(virtual teacher || student) in the chosen form (float32 scalar)."""
    z = student_logits.float()
    p_d = virtual_teacher(targets, z.shape[1], correct_prob)
    if form == "official":
        log_t = F.log_softmax(p_d / temperature, dim=1)
        kl = F.kl_div(F.log_softmax(z, dim=1), log_t, reduction="sum", log_target=True)
        return kl / z.numel()  # nn.KLDivLoss()'s default 'mean': over all B x K elements
    if form == "paper":
        log_t = F.log_softmax(torch.log(p_d) / temperature, dim=1)
        return F.kl_div(F.log_softmax(z / temperature, dim=1), log_t, reduction="batchmean", log_target=True)
    raise ValueError(f"unknown Tf-KD form {form!r}")


@register_method("tf_kd")
class TFKD(Distiller):
    """Loss terms: ``ce`` and ``tf_kd``; no teacher network."""

    requires_teacher = False
    Params = TFKDParams

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        kl = tf_kd_loss(batch.student_logits, batch.targets, p.correct_prob, p.temperature, p.form)
        return {"ce": ce_term(batch, p.ce_weight), "tf_kd": p.weight * kl}

