"""Online counting of regularization samples and WSL weights during distillation.

A regularization sample has p_s^T(y) > p_t^T(y): the student already puts more mass on the
true class than the teacher's soft label, so the soft loss pushes the true-class logit down.
Counted at the run's temperature and at T = 1; WSL weights are recorded even for plain KD.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from softlabels.losses import regularization_mask, wsl_weights

HIST_BINS = 10
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class RegularizationTracker:
    """Accumulates one epoch of statistics; ``summary()`` returns the metrics.jsonl fields.

    Cost per batch: two log-softmaxes and a gather on logits already computed.
    """

    def __init__(self, num_classes: int, temperature: float) -> None:
        self.num_classes = num_classes
        self.temperature = temperature
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.reg_t = 0
        self.reg_1 = 0
        self.per_class_n = torch.zeros(self.num_classes, dtype=torch.long)
        self.per_class_reg = torch.zeros(self.num_classes, dtype=torch.long)
        self.ce_s = 0.0
        self.ce_t = 0.0
        self.weights: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> None:
        """student_logits, teacher_logits: (batch, classes); targets: (batch,)."""
        s, t = student_logits.detach().float(), teacher_logits.detach().float()
        mask_t = regularization_mask(s, t, targets, self.temperature)
        ce_s = F.cross_entropy(s, targets, reduction="none")
        ce_t = F.cross_entropy(t, targets, reduction="none")
        mask_1 = ce_s < ce_t  # p_s(y) > p_t(y) at T = 1
        self.n += targets.numel()
        self.reg_t += int(mask_t.sum())
        self.reg_1 += int(mask_1.sum())
        tc = targets.cpu()
        self.per_class_n += torch.bincount(tc, minlength=self.num_classes)
        self.per_class_reg += torch.bincount(tc[mask_t.cpu()], minlength=self.num_classes)
        self.ce_s += float(ce_s.sum())
        self.ce_t += float(ce_t.sum())
        self.weights.append(wsl_weights(s, t, targets).cpu())

    def summary(self) -> dict:
        if self.n == 0:
            return {}
        w = torch.cat(self.weights)
        q = torch.quantile(w, torch.tensor(QUANTILES))
        hist = torch.histc(w, bins=HIST_BINS, min=0.0, max=1.0)
        per_class = (self.per_class_reg.float() / self.per_class_n.clamp(min=1).float()).tolist()
        return {
            "reg_count": self.reg_t,
            "reg_fraction": self.reg_t / self.n,
            "reg_count_t1": self.reg_1,
            "reg_fraction_t1": self.reg_1 / self.n,
            "reg_fraction_per_class": per_class,
            "wsl_weight_mean": float(w.mean()),
            **{f"wsl_weight_q{int(p * 100)}": float(v) for p, v in zip(QUANTILES, q)},
            "wsl_weight_hist": [int(x) for x in hist.tolist()],
            "ce_student": self.ce_s / self.n,
            "ce_teacher": self.ce_t / self.n,
        }
