"""Bias–variance decompositions of an ensemble of models trained on different training sets.

Two estimators, both over M models evaluated on the same S test samples with C classes:

- :func:`cross_entropy_bias_variance` — Heskes (1998), as used by Zhou et al. (WSL, ICLR 2021) and
  Yang et al. (ICML 2020). The average model is the NORMALIZED GEOMETRIC MEAN of the predictions,
  ȳ(c) ∝ exp(mean_m log p_m(c)), which makes the decomposition exact:

      mean_m CE(t, p_m)  =  H(t)  +  KL(t ‖ ȳ)  +  mean_m KL(ȳ ‖ p_m)
           risk             noise      bias            variance

  For a hard label y the noise is 0 and the bias is −log ȳ(y). The variance equals −log Z, Z being the
  normaliser of the geometric mean (Z ≤ 1 by Jensen, so the variance is ≥ 0).
- :func:`mse_bias_variance` — Yang et al.'s squared-error estimator: arithmetic mean f̄, the variance
  with the unbiased N/(N−1) factor, and Bias² = risk − variance (never computed directly).

All quantities are in nats (cross-entropy) or squared probability units (MSE), per sample; the
results compute in float64 whatever the input dtype and return float64 CPU tensors.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

__all__ = ["BiasVariance", "cross_entropy_bias_variance", "mse_bias_variance"]

_FIELDS = ("noise", "bias", "variance", "risk")


@dataclass(frozen=True, eq=False)
class BiasVariance(Mapping):
    """Per-sample decomposition ``risk = noise + bias + variance``; a read-only mapping of its fields.

    Attributes (all float64 CPU tensors):
        noise: (S,) H(t) in nats for soft targets; zeros for hard labels and for MSE.
        bias: (S,) cross-entropy: KL(t ‖ ȳ), i.e. −log ȳ(y) for a hard label. MSE: Bias² = risk − variance
            (an estimate; it can be slightly negative for a single sample).
        variance: (S,) cross-entropy: mean over models of KL(ȳ ‖ p_m) (≥ 0). MSE: the unbiased estimate of
            E‖f − f̄‖² (with the N/(N−1) factor).
        risk: (S,) mean over models of the loss: CE in nats, or the squared error ‖y − f_m‖² summed over classes.
        average: (S, C) the average model: log ȳ (log-probabilities) for cross-entropy, f̄ for MSE.
        kind: ``"cross_entropy"`` or ``"mse"``.
        num_models: M.

    ``result["bias"]`` and ``result.bias`` are the same tensor; ``result.as_dict()`` holds the four
    per-sample fields; ``result.mean()`` their means over the samples as Python floats.
    """

    noise: torch.Tensor
    bias: torch.Tensor
    variance: torch.Tensor
    risk: torch.Tensor
    average: torch.Tensor
    kind: str
    num_models: int

    __eq__ = object.__eq__  # identity: comparing tensors element-wise has no single truth value
    __hash__ = object.__hash__

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{"noise", "bias", "variance", "risk"}`` → per-sample (S,) tensors."""
        return {k: getattr(self, k) for k in _FIELDS}

    def mean(self) -> dict[str, float]:
        """Dataset means ``{"noise", "bias", "variance", "risk"}`` (floats; nats for cross-entropy)."""
        return {k: float(getattr(self, k).mean()) if getattr(self, k).numel() else float("nan") for k in _FIELDS}

    @property
    def num_samples(self) -> int:
        return int(self.risk.numel())


def _check_models(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (models, samples, classes), got {shape}")
    if x.shape[0] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} needs at least one model and one class, got shape {tuple(x.shape)}")
    return x.detach().to(device="cpu", dtype=torch.float64)


def _target_distribution(target: torch.Tensor, samples: int, classes: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(hard labels (S,) int64 or None, target distribution (S, C) float64)."""
    target = target.detach().cpu()
    if target.dim() == 1 and not torch.is_floating_point(target):
        if target.numel() != samples:
            raise ValueError(f"target has {target.numel()} labels for {samples} samples")
        labels = target.long()
        if samples and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(f"target labels must lie in [0, {classes}), got {int(labels.min())}..{int(labels.max())}")
        return labels, torch.nn.functional.one_hot(labels, classes).double()
    if target.dim() == 2 and target.shape == (samples, classes):
        t = target.double()
        if bool((t < 0).any()):
            raise ValueError("soft targets must be non-negative")
        return None, t
    raise ValueError(
        f"target must be int64 labels ({samples},) or a (samples, classes) = ({samples}, {classes}) distribution, "
        f"got {target.dtype} {tuple(target.shape)}"
    )


def cross_entropy_bias_variance(log_probs: torch.Tensor, target: torch.Tensor) -> BiasVariance:
    """Heskes decomposition of the expected cross-entropy, per sample, with a geometric-mean average model.

    Args:
        log_probs: (models, samples, classes) log-probabilities of each model (natural log). Every row is
            renormalised with ``log_softmax``, which leaves true log-probabilities unchanged (up to rounding)
            and also accepts logits. Values such as −1e4 are fine: everything is done in log space (logsumexp).
        target: (samples,) int64 true labels, or (samples, classes) target distributions (rows summing to 1,
            e.g. a teacher's soft labels), which gives the general form with noise = H(t), bias = KL(t ‖ ȳ).
    Returns:
        :class:`BiasVariance` (kind ``"cross_entropy"``) with per-sample noise, bias, variance and risk in
        nats, where risk = mean over models of CE(t, p_m) = noise + bias + variance (exact up to float64
        rounding), and ``average`` = log ȳ, (samples, classes).
    """
    lp = torch.log_softmax(_check_models(log_probs, "log_probs"), dim=-1)
    models, samples, classes = lp.shape
    labels, t = _target_distribution(target, samples, classes)
    if labels is None and samples and not torch.allclose(t.sum(-1), torch.ones(samples, dtype=torch.float64), atol=1e-6):
        raise ValueError("soft targets must sum to 1 over the classes")
    mean_lp = lp.mean(dim=0)  # A(x, c) = mean_m log p_m(c): (S, C)
    log_z = torch.logsumexp(mean_lp, dim=-1)  # (S,), log Z <= 0
    log_avg = mean_lp - log_z.unsqueeze(-1)  # log ȳ
    # mean_m KL(ȳ ‖ p_m) = Σ_c ȳ(c) (log ȳ(c) − A(c)) = −log Z exactly; tiny positive log Z is rounding
    variance = (-log_z).clamp_min(0.0)
    if labels is not None:
        risk = -mean_lp.gather(1, labels.view(-1, 1)).squeeze(1)  # mean_m −log p_m(y)
        bias = -log_avg.gather(1, labels.view(-1, 1)).squeeze(1)  # −log ȳ(y)
        noise = torch.zeros(samples, dtype=torch.float64)
    else:
        positive = t > 0

        def weighted(values: torch.Tensor) -> torch.Tensor:  # Σ_c t(c) values(c), with 0 · (−inf) = 0
            return torch.where(positive, t * values, torch.zeros_like(values)).sum(-1)

        noise = -torch.special.xlogy(t, t).sum(-1)
        risk = -weighted(mean_lp)
        bias = -noise - weighted(log_avg)  # Σ t log t − Σ t log ȳ
    return BiasVariance(noise=noise, bias=bias, variance=variance, risk=risk, average=log_avg,
                        kind="cross_entropy", num_models=models)


def mse_bias_variance(
    probs: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | list[int] | None = None
) -> BiasVariance:
    """Yang et al.'s squared-error bias–variance estimate, per sample.

    Args:
        probs: (models, samples, classes) model outputs, e.g. softmax probabilities (or the raw outputs of
            models trained with MSE on one-hot targets).
        target: (samples,) int64 labels (one-hot targets) or (samples, classes) float target vectors.
        groups: optional (models,) integer group of each model. Models in one group must have been trained
            on DISJOINT training sets (one N-way split); the variance is estimated within each group and
            averaged over the groups (Yang et al. average over k random partitions). Default: one group.
            Every group needs at least 2 models.
    Returns:
        :class:`BiasVariance` (kind ``"mse"``), per sample: ``risk`` = mean over models of ‖y − f_m‖²
        (summed over classes); ``variance`` = (1/N) Σ_j ‖f_j − f̄‖² × N/(N−1) with f̄ the arithmetic mean
        of the N models of a group (averaged over groups); ``bias`` = Bias² = risk − variance (never
        computed directly, since ‖y − f̄‖² is biased upward for finite N); ``noise`` = 0;
        ``average`` = f̄ over all models, (samples, classes).
    """
    f = _check_models(probs, "probs")
    models, samples, classes = f.shape
    _, y = _target_distribution(target, samples, classes)
    if groups is None:
        group_ids = torch.zeros(models, dtype=torch.long)
    else:
        group_ids = torch.as_tensor(groups, dtype=torch.long).cpu()
        if group_ids.shape != (models,):
            raise ValueError(f"groups must have one entry per model ({models}), got shape {tuple(group_ids.shape)}")
    risk = (f - y.unsqueeze(0)).pow(2).sum(-1).mean(0)  # (S,)
    variances = []
    for g in torch.unique(group_ids).tolist():
        member = f[group_ids == g]
        n = member.shape[0]
        if n < 2:
            raise ValueError(f"the MSE variance needs at least 2 models per group; group {g} has {n}")
        spread = (member - member.mean(0, keepdim=True)).pow(2).sum(-1)  # (n, S)
        variances.append(spread.sum(0) / (n - 1))  # (1/n) Σ ‖f_j − f̄‖² × n/(n−1)
    variance = torch.stack(variances).mean(0)
    return BiasVariance(noise=torch.zeros(samples, dtype=torch.float64), bias=risk - variance, variance=variance,
                        risk=risk, average=f.mean(0), kind="mse", num_models=models)


def true_class_probability(log_probs: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """(S,) softmax(log_probs / T)(y) of (S, C) log-probabilities (or logits) and int64 (S,) targets."""
    return torch.log_softmax(log_probs / temperature, -1).gather(1, targets.view(-1, 1)).squeeze(1).exp()
