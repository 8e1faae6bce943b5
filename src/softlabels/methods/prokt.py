"""ProKT, "Follow Your Path" (reconstruction; the paper has no public code).

Teacher and student train together, starting from the pre-trained teacher. Every training step:

1. **local target**: a *moving* copy of the teacher takes ``teacher_steps`` SGD steps on
   ``CE(y, z_t) + lam * T^2 * KL(p_t^T || p_s^T)`` with the student's logits detached (the teacher
   lowers its task loss while staying near what the student can reach);
2. **projection**: the student fits the *updated* teacher, KD form
   ``ce_weight * CE(y, z_s) + kd_weight * T^2 * KL(p_t^T || p_s^T)``, or with ``weighting: wsl`` the
   WSL per-sample weighted soft term (``softlabels.losses.wsl_soft_loss``, KL form).

Design within the Distiller contract:

* ``self.teacher`` stays the frozen original (reference / diagnostics, never run in training).
* The moving teacher is ``auxiliary["teacher"]`` (a copy made before any feature hook is attached to
  the original), so the trainer checkpoints it and resume restores it. Its parameters have
  ``requires_grad=False`` except inside the teacher update, so they are not in
  :meth:`trainable_parameters` (the student optimizer never sees them) and DDP does not register them.
* Its optimizer is a ``torch.optim.SGD`` (momentum, weight decay, optional Nesterov) returned by
  :meth:`configure_optimizers` as ``"teacher"`` (constant LR, stepped by the method), so the trainer
  checkpoints and restores its momentum and a resume is exact.
* The update runs in float32 with autocast disabled and ``torch.enable_grad()`` (the trainer may run
  the forward under autocast); gradients come from ``torch.autograd.grad`` and are handed to the
  optimizer and cleared again, so no ``.grad`` is left on the teacher and the student's backward never
  reaches it. Under torchrun the teacher's gradients are averaged over processes
  (:meth:`Distiller.average_over_processes`) so every copy stays identical.
* BatchNorm: the update runs the moving teacher in train mode (``teacher_bn: train``) or eval mode
  (``teacher_bn: eval``, BN statistics frozen); the soft labels for the student always come from an
  eval-mode, no-grad forward of the updated teacher.
* The teacher learning rate is constant (the trainer's schedule only drives the student optimizer).
* A teacher cache (``teacher.cache: true``) is refused: the teacher changes every step.

Diagnostics: ``loss_kd`` (or ``loss_wsl``) is the logged teacher-student term. :meth:`diagnostics`
returns running means since the last call of the teacher's CE, the pre-update teacher-student KL
(at T, without T^2) and the moving teacher's parameter distance from the original teacher.

Unconfirmed defaults (the paper gives no numbers): ``lam`` 1/T^2 (the teacher's loss is CE + the
plain KL at T; an explicit ``lam`` multiplies T^2 KL, and lam 1 diverged at T 8 on Fashion-MNIST),
``teacher_lr`` 0.01, ``teacher_steps`` 1, KL at the distillation temperature T 4, teacher SGD
momentum 0.9 / weight decay 5e-4, constant teacher LR.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from softlabels.engine.optim import OptimizerSpec
from softlabels.errors import ConfigError
from softlabels.losses import kd_loss, wsl_soft_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, StepOutput, register_method


class ProKTParams(MethodParams):
    """Student side as in KD (T 4, CE 0.1, KL 0.9); teacher side unconfirmed (lr 0.01).

    ``lam`` defaults to 1/T^2, so the teacher's loss is CE + KL(p_t^T || p_s^T) without the T^2
    factor: the reconstruction's plain KL with weight 1 (reference.md 4.1; the paper gives no
    number), whose pull stays bounded as T grows. A fixed lam 1 (the former default) multiplies the
    KL by T^2 and diverged on Fashion-MNIST at T 8 (best top-1 29.4 against 83.5 with 1/T^2).
    """

    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(0.1, ge=0, description="multiplies the student's hard-label CE")
    kd_weight: float = Field(0.9, ge=0, description="multiplies the student's soft term toward the updated teacher")
    weighting: Literal["none", "wsl"] = Field("none", description="none: KD's T^2 KL; wsl: WSL per-sample weights")
    lam: float | None = Field(
        None, ge=0, description="teacher loss: CE + lam * T^2 KL(p_t^T || p_s^T); null (default): 1/T^2, a plain KL")
    teacher_steps: int = Field(1, ge=0, description="teacher SGD steps per student step (0: plain KD)")
    teacher_lr: float = Field(0.01, ge=0, description="constant LR of the teacher's SGD (unconfirmed)")
    teacher_momentum: float = Field(0.9, ge=0, lt=1)
    teacher_weight_decay: float = Field(5e-4, ge=0)
    teacher_nesterov: bool = False
    teacher_bn: Literal["train", "eval"] = Field("train", description="BN mode of the moving teacher in its update")

    @model_validator(mode="after")
    def _default_lam(self):
        if self.lam is None:
            self.lam = 1.0 / self.temperature**2
        return self


def _kl_teacher_grad(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of KL(p_t^T || p_s^T), float32, gradient through the teacher only."""
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits.detach().float() / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


@register_method("prokt")
class ProKT(Distiller):
    """Loss terms: ``ce`` (weighted hard CE) and ``kd`` (or ``wsl``) toward the moving teacher."""

    Params = ProKTParams

    def __init__(self, student, teacher, params=None, *, teacher_train_mode: bool = False) -> None:
        # copied before the base class attaches feature hooks to the original, so the copy has none
        moving = copy.deepcopy(teacher) if teacher is not None else None
        super().__init__(student, teacher, params, teacher_train_mode=teacher_train_mode)
        moving.requires_grad_(False)
        self.auxiliary["teacher"] = moving
        self._teacher_optimizer: torch.optim.SGD | None = None
        self._diag: torch.Tensor | None = None  # on-device sums of [teacher CE, teacher KL, steps]

    @property
    def moving_teacher(self) -> nn.Module:
        return self.auxiliary["teacher"]

    # ---------------------------------------------------------------- life cycle
    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        if self.teacher_cache is not None:
            raise ConfigError("method 'prokt' trains its teacher, so cached teacher logits would be stale; "
                              "turn teacher.cache off")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and auxiliary parameters except the moving teacher's (it has its own SGD)."""
        own = {id(p) for p in self.moving_teacher.parameters()}
        return [p for p in super().trainable_parameters() if id(p) not in own]

    @property
    def teacher_optimizer(self) -> torch.optim.SGD:
        """The moving teacher's SGD (made on first use; the trainer checkpoints it as "teacher")."""
        if self._teacher_optimizer is None:
            p = self.params
            self._teacher_optimizer = torch.optim.SGD(
                list(self.moving_teacher.parameters()), lr=p.teacher_lr, momentum=p.teacher_momentum,
                weight_decay=p.teacher_weight_decay, nesterov=p.teacher_nesterov,
            )
        return self._teacher_optimizer

    def configure_optimizers(self, optim, lr: float) -> dict[str, OptimizerSpec]:
        """The student's "main" optimizer and the moving teacher's SGD ("teacher": constant LR, stepped here)."""
        return {**super().configure_optimizers(optim, lr),
                "teacher": OptimizerSpec(self.teacher_optimizer, lr_rule="constant", stepped_by="method")}

    # ---------------------------------------------------------------- teacher update
    def _teacher_update(self, images: torch.Tensor, targets: torch.Tensor, student_logits: torch.Tensor) -> None:
        p, teacher = self.params, self.moving_teacher
        params = list(teacher.parameters())
        opt = self.teacher_optimizer
        was_training = teacher.training
        teacher.train(p.teacher_bn == "train")
        s = student_logits.detach().float()
        try:
            with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
                for _ in range(p.teacher_steps):
                    for q in params:
                        q.requires_grad_(True)
                    z = teacher(images.float()).float()
                    ce = F.cross_entropy(z, targets)
                    kl = _kl_teacher_grad(z, s, p.temperature)
                    loss = ce + p.lam * p.temperature**2 * kl
                    grads = torch.autograd.grad(loss, params)
                    for q in params:
                        q.requires_grad_(False)
                    self.average_over_processes(list(grads))
                    for q, g in zip(params, grads):
                        q.grad = g
                    opt.step()
                    for q in params:
                        q.grad = None
                    step = torch.stack([ce.detach(), kl.detach(), torch.ones_like(ce)]).double()
                    self._diag = step if self._diag is None else self._diag + step
        finally:
            for q in params:
                q.requires_grad_(False)
                q.grad = None
            teacher.train(was_training)

    @torch.no_grad()
    def moving_teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of the moving teacher (no gradient)."""
        teacher = self.moving_teacher
        was_training = teacher.training
        teacher.eval()
        try:
            return teacher(images)
        finally:
            teacher.train(was_training)

    # ---------------------------------------------------------------- forward
    def teacher_logits(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """The moving teacher's current logits (the frozen original is not run)."""
        return self.moving_teacher_logits(images)

    def forward(self, images, targets, indices=None) -> StepOutput:
        """Student forward, teacher update on the detached student logits, then the student's terms
        (the step output's teacher logits are the updated moving teacher's)."""
        logits = self.student(images)
        batch = self.make_batch(images, targets, indices, logits, None)
        terms = self.loss_terms(batch)
        return StepOutput(logits, terms, batch.teacher_logits)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Update the moving teacher (training mode only), then the student's terms toward it."""
        p = self.params
        s, y = batch.student_logits, batch.targets
        if self.training and p.teacher_steps > 0 and p.teacher_lr > 0:
            self._teacher_update(batch.images, y, s)
        t = self.teacher_logits(batch.images, batch.indices)
        batch.teacher_logits = t  # what the student's terms were computed against (the step output's)
        terms = {"ce": p.ce_weight * F.cross_entropy(s.float(), y)}
        if p.weighting == "wsl":
            terms["wsl"] = p.kd_weight * wsl_soft_loss(s, t, y, p.temperature, form="kl", weighting="wsl")
        else:
            terms["kd"] = p.kd_weight * kd_loss(s, t, p.temperature)
        return terms

    # ---------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def teacher_drift(self) -> float:
        """L2 distance between the moving teacher's parameters and the frozen original's."""
        sq = sum(float((a.float() - b.float()).pow(2).sum())
                 for a, b in zip(self.moving_teacher.parameters(), self.teacher.parameters()))
        return sq**0.5

    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        """Running means since the last reset: ``prokt_teacher_ce``, ``prokt_teacher_kl`` (pre-update,
        at T, no T^2), plus ``prokt_teacher_drift``."""
        out = {"prokt_teacher_drift": self.teacher_drift()}
        if self._diag is not None:
            ce, kl, n = self._diag.tolist()
            out.update(prokt_teacher_ce=ce / n, prokt_teacher_kl=kl / n)
        if reset:
            self._diag = None
        return out
