"""Test-set predictions of saved models and teachers, and the bias/variance summary of an ensemble."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from softlabels.analysis.bias_variance import cross_entropy_bias_variance, mse_bias_variance
from softlabels.analysis.checks import AnalysisError
from softlabels.config import Experiment
from softlabels.stats import mean_std

__all__ = ["decomposition_summary", "teacher_log_probs", "test_log_probs"]


@torch.no_grad()
def _model_log_probs(model: torch.nn.Module, loader, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (size, C) float64 and targets (size,) of ``model`` on every sample of ``loader``."""
    model.eval()
    out = torch.full((size, num_classes), float("nan"), dtype=torch.float64)
    targets = torch.full((size,), -1, dtype=torch.long)
    for images, y, idx in loader:
        logits = model(images).double()
        idx = idx.cpu()
        out[idx] = torch.log_softmax(logits, dim=1).cpu()
        targets[idx] = y.cpu()
    return out, targets


def _test_loader(exp: Experiment):
    from softlabels.data import build_data
    from softlabels.engine.env import select_device

    device = select_device(exp.runtime.device)
    return build_data(exp.data, device=device, seed=exp.seed), device


def test_log_probs(
    run_dirs: Sequence[str | Path], *, checkpoint: str = "last", device: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-set log-probabilities of the models saved in ``run_dirs``.

    Args:
        run_dirs: run folders of the same dataset (the first one's ``config.yaml`` defines the test set).
        checkpoint: ``"last"`` (final weights) or ``"best"``.
        device: evaluation device (default: the run's ``runtime.device``).
    Returns:
        (log_probs float64 (models, test samples, classes), targets int64 (test samples,)).
    """
    from softlabels.engine import RunDir, experiment_from_run
    from softlabels.engine.checkpoint import load_model_weights
    from softlabels.models import create_model

    if checkpoint not in ("last", "best"):
        raise AnalysisError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if not run_dirs:
        raise AnalysisError("no runs to evaluate")
    exp = experiment_from_run(run_dirs[0])
    if device is not None:
        exp = exp.model_copy(update={"runtime": exp.runtime.model_copy(update={"device": device})})
    bundle, dev = _test_loader(exp)
    size, classes = bundle.test.full_size, bundle.info.num_classes
    outs, targets = [], None
    for rd in run_dirs:
        ckpt = RunDir(rd).load_checkpoint(checkpoint)
        model = create_model(ckpt["model_name"], ckpt.get("num_classes") or classes,
                             ckpt.get("in_channels") or bundle.info.in_channels)
        load_model_weights(model, ckpt)
        lp, targets = _model_log_probs(model.to(dev), bundle.test, size, classes)
        outs.append(lp)
    return torch.stack(outs), targets


def teacher_log_probs(exp: Experiment) -> torch.Tensor:
    """Test-set log-probabilities (S, C) float64 of the experiment's teacher."""
    from softlabels.engine.trainer import load_teacher

    bundle, dev = _test_loader(exp)
    teacher, _ = load_teacher(exp, bundle.info.num_classes, bundle.info.in_channels, dev)
    lp, _ = _model_log_probs(teacher, bundle.test, bundle.test.full_size, bundle.info.num_classes)
    return lp


def _sem(values: torch.Tensor) -> float | None:
    """Standard error of the mean over test samples (sample std / sqrt(S)); None for fewer than 2."""
    n = values.numel()
    if n < 2:
        return None
    v = float(values.double().std(unbiased=True)) / math.sqrt(n)
    return v if math.isfinite(v) else None


def decomposition_summary(log_probs: torch.Tensor, targets: torch.Tensor, groups: list[int]) -> tuple[dict, dict]:
    """Means (dict) and per-sample columns (dict of lists) of the CE and MSE decompositions.

    ``*_sem`` entries are standard errors of the means over the test samples (error bars of the report).
    """
    ce = cross_entropy_bias_variance(log_probs, targets)
    mse = mse_bias_variance(log_probs.exp(), targets, groups=groups)
    member_acc = (log_probs.argmax(-1) == targets.unsqueeze(0)).double().mean(-1) * 100  # (M,)
    m_mean, m_std = mean_std(member_acc.tolist())
    ensemble_pred = ce.average.argmax(-1)
    means = {**ce.mean(), "mse_bias2": float(mse.bias.mean()), "mse_variance": float(mse.variance.mean()),
             "mse_risk": float(mse.risk.mean()), "member_top1_mean": m_mean, "member_top1_std": m_std,
             "ensemble_top1": float((ensemble_pred == targets).double().mean() * 100), "num_models": ce.num_models,
             "bias_sem": _sem(ce.bias), "variance_sem": _sem(ce.variance), "risk_sem": _sem(ce.risk)}
    per_sample = {
        "sample": list(range(targets.numel())), "target": targets.tolist(),
        "bias": ce.bias.tolist(), "variance": ce.variance.tolist(), "risk": ce.risk.tolist(),
        "mse_bias2": mse.bias.tolist(), "mse_variance": mse.variance.tolist(), "mse_risk": mse.risk.tolist(),
        "ensemble_pred": ensemble_pred.tolist(),
        "member_correct": (log_probs.argmax(-1) == targets.unsqueeze(0)).double().mean(0).tolist(),
    }
    return means, per_sample
