"""Online counting of regularization samples and WSL weights during distillation.

A regularization sample has p_s^T(y) > p_t^T(y): the student already puts more mass on the
true class than the teacher's soft label, so the soft loss pushes the true-class logit down.
Counted at the run's temperature and at T = 1; WSL weights are recorded even for plain KD.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from softlabels.losses import regularization_mask
from softlabels.losses.wsl import WSL_EPS

HIST_BINS = 10
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class RegularizationTracker:
    """Accumulates one epoch of statistics; ``summary()`` returns the metrics.jsonl fields.

    Cost per batch: two log-softmaxes and a gather on logits already computed.
    """

    def __init__(self, num_classes: int, temperature: float, keep_samples: bool = False) -> None:
        self.num_classes = num_classes
        self.temperature = temperature
        self.keep_samples = keep_samples
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._counts = None  # on-device [reg at T, reg at T=1, sum CE_s, sum CE_t]
        self._per_class_n = None
        self._per_class_reg = None
        self.weights: list[torch.Tensor] = []
        self.samples: list[tuple[torch.Tensor, ...]] = []

    @torch.no_grad()
    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
               indices: torch.Tensor | None = None) -> None:
        """student_logits, teacher_logits: (batch, classes); targets, indices: (batch,). No host sync."""
        s, t = student_logits.detach().float(), teacher_logits.detach().float()
        mask_t = regularization_mask(s, t, targets, self.temperature)
        if self.keep_samples and indices is not None:
            idx = targets.view(-1, 1)
            p_s = torch.softmax(s / self.temperature, 1).gather(1, idx).squeeze(1)
            p_t = torch.softmax(t / self.temperature, 1).gather(1, idx).squeeze(1)
            self.samples.append((indices.detach(), p_s, p_t, mask_t))
        ce_s = F.cross_entropy(s, targets, reduction="none")
        ce_t = F.cross_entropy(t, targets, reduction="none")
        mask_1 = ce_s < ce_t  # p_s(y) > p_t(y) at T = 1
        counts = torch.stack([mask_t.sum().float(), mask_1.sum().float(), ce_s.sum(), ce_t.sum()])
        per_n = torch.bincount(targets, minlength=self.num_classes)
        per_reg = torch.bincount(targets[mask_t], minlength=self.num_classes)
        if self._counts is None:
            self._counts, self._per_class_n, self._per_class_reg = counts, per_n, per_reg
        else:
            self._counts += counts
            self._per_class_n += per_n
            self._per_class_reg += per_reg
        self.n += targets.numel()
        self.weights.append(1.0 - torch.exp(-(ce_s / (ce_t + WSL_EPS)).clamp(min=0)))

    def sample_table(self) -> dict[str, torch.Tensor]:
        """This epoch's per-sample records (CPU, compact dtypes), in visiting order.

        index int64 (n,) sample positions in the training set; p_s, p_t float16 (n,) student and
        teacher probability of the true class at the run's T; w float16 (n,) WSL weight;
        regularization bool (n,) p_s > p_t.
        """
        if not self.samples:
            return {}
        idx, p_s, p_t, reg = (torch.cat(parts).cpu() for parts in zip(*self.samples))
        w = torch.cat(self.weights).cpu()
        return {"index": idx.long(), "p_s": p_s.half(), "p_t": p_t.half(), "w": w.half(), "regularization": reg.bool(),
                "temperature": torch.tensor(self.temperature)}

    def summary(self, reduce=None) -> dict:
        """Fields for metrics.jsonl: counts and fractions at T and T=1, per class, weight statistics.

        ``reduce``: optional in-place sum over processes (DDP); counts, per-class counts and the
        weight histogram are summed; the weight mean and quantiles are those of this process's share.
        """
        if self.n == 0:
            return {}
        w = torch.cat(self.weights)
        hist = torch.histc(w.float(), bins=HIST_BINS, min=0.0, max=1.0)
        packed = torch.cat([self._counts.float(), torch.tensor([float(self.n)], device=w.device),
                            self._per_class_n.float(), self._per_class_reg.float(), hist])
        if reduce is not None:
            packed = reduce(packed)
        packed = packed.cpu()
        reg_t, reg_1, ce_s, ce_t, n = packed[:5].tolist()
        c = self.num_classes
        per_class_n, per_class_reg, hist = packed[5 : 5 + c], packed[5 + c : 5 + 2 * c], packed[5 + 2 * c :]
        w = w.cpu()
        q = torch.quantile(w, torch.tensor(QUANTILES))
        per_class = (per_class_reg / per_class_n.clamp(min=1)).tolist()
        return {
            "reg_count": int(reg_t),
            "reg_fraction": reg_t / n,
            "reg_count_t1": int(reg_1),
            "reg_fraction_t1": reg_1 / n,
            "reg_fraction_per_class": per_class,
            "wsl_weight_mean": float(w.mean()),
            **{f"wsl_weight_q{int(p * 100)}": float(v) for p, v in zip(QUANTILES, q)},
            "wsl_weight_hist": [int(x) for x in hist.tolist()],
            "ce_student": ce_s / n,
            "ce_teacher": ce_t / n,
        }
