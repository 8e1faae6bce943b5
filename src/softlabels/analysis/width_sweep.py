"""``analyze bias-variance``: Yang et al.'s bias–variance estimate for one model or a sweep of widths.

For each model, ``splits`` (N) models per (partition, seed) are trained on the N disjoint stratified
parts of the training pool (the same parts for every model). The test-set log-probabilities of all
N × partitions × seeds models give the cross-entropy decomposition (Heskes; pooled over every model)
and the MSE estimate (per (partition, seed) group with the N/(N−1) factor, averaged over the groups).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from softlabels.analysis.base import AnalysisBase, method_config
from softlabels.analysis.checks import AnalysisError, check_checkpoint, check_seeds, check_values
from softlabels.analysis.evaluation import decomposition_summary, test_log_probs
from softlabels.analysis.results import BiasVarianceResult, ModelDecomposition, SplitRun
from softlabels.analysis.runner import train_split_family, write_result_files
from softlabels.analysis.splits import plan_splits
from softlabels.config import TeacherConfig

__all__ = ["COLUMNS", "UNITS", "bias_variance_experiment", "markdown", "model_names", "write_outputs"]

UNITS = ("bias, variance, risk: cross-entropy in nats (Heskes, geometric-mean average model); "
         "mse_*: squared error summed over classes (Yang et al.)")
COLUMNS = ["name", "width", "parameters", "num_models", "bias", "variance", "risk", "mse_bias2", "mse_variance",
           "mse_risk", "member_top1_mean", "member_top1_std", "ensemble_top1"]
PER_SAMPLE_COLUMNS = ["model", "width", "sample", "target", "bias", "variance", "risk", "mse_bias2", "mse_variance",
                      "mse_risk", "ensemble_pred", "member_correct"]


def model_names(base: AnalysisBase, models: Sequence[str] | None, widths: Sequence[int] | None,
                family: str) -> list[tuple[str, int | None]]:
    """(model name, width or None) of every model to decompose; ``widths`` become ``{family}_w{k}``."""
    from softlabels.models import list_models

    names: list[tuple[str, int | None]] = []
    if widths:
        known = set(list_models())
        for k in check_values(list(widths), "--widths", positive=True):
            if not isinstance(k, int):
                raise AnalysisError(f"--widths: {k!r} is not a whole number")
            name = f"{family}_w{k}"
            if name not in known:
                avail = sorted(int(n.rsplit("_w", 1)[1]) for n in known if n.startswith(f"{family}_w")
                               and n.rsplit("_w", 1)[1].isdigit())
                raise AnalysisError(f"--widths: no model {name!r}; registered widths of {family}: {avail or 'none'}")
            names.append((name, k))
    for m in models or ([] if widths else [base.exp.student.name]):
        names.append((m, None))
    return names


def markdown(result: BiasVarianceResult) -> str:
    from softlabels.io import markdown_table

    return markdown_table(COLUMNS, [m.model_dump() for m in result.models])


def write_outputs(result: BiasVarianceResult, out: Path) -> str:
    """``bias_variance.json``, ``bias_variance.csv`` (one row per model) and ``bias_variance.md``."""
    return write_result_files(out, "bias_variance", result, {
        "bias_variance.csv": [{c: getattr(m, c) for c in COLUMNS} for m in result.models]}, markdown(result))


def bias_variance_experiment(
    base: AnalysisBase,
    out: str | Path,
    *,
    splits: int = 2,
    partitions: int = 1,
    seeds: Sequence[int] = (0,),
    models: Sequence[str] | None = None,
    widths: Sequence[int] | None = None,
    family: str = "resnet18",
    method: str = "ce",
    teacher: TeacherConfig | None = None,
    temperature: float | None = None,
    checkpoint: str = "last",
) -> BiasVarianceResult:
    """Train the split models of every model (or width) and decompose their test-set predictions.

    Args:
        base: the analysis base; out: output folder (runs and results).
        models: student model names (default: the base's student); ``widths`` (with ``family``) adds
            ``{family}_w{k}`` models instead, e.g. ``resnet18_w4``.
        method: ``ce`` (default), ``kd`` or ``wsl`` (then ``teacher`` from ``resolve_teacher``).
        checkpoint: ``last`` (final weights); ``best`` is refused (split runs have no validation split, so
            it would have been chosen on the test set).
    Writes the files of :func:`write_outputs`, plus ``bias_variance_per_sample.csv`` and ``.json`` (per test
    sample and model) and ``log_probs_<model>.pt`` ((models, samples, classes) float32 and targets).
    """
    from softlabels.engine import RunDir
    from softlabels.io import write_csv, write_json

    out = Path(out)
    seeds = check_seeds(seeds)
    check_checkpoint(checkpoint)
    if method not in ("ce", "kd", "wsl"):
        raise AnalysisError(f"--method must be ce, kd or wsl, got {method!r}")
    names = model_names(base, models, widths, family)
    section = method_config(base, method, temperature=temperature)
    plans = plan_splits(base, splits, partitions, seeds)
    groups = [p.group for p in plans]
    entries, per_sample_rows, per_sample_json = [], [], {}
    for model, width in names:
        family_runs = train_split_family(base, out, f"{method}_{model}", plans, splits, method=section,
                                         teacher=teacher if method != "ce" else None, model=model)
        log_probs, targets = test_log_probs(family_runs.run_dirs, checkpoint=checkpoint)
        torch.save({"log_probs": log_probs.float(), "targets": targets,
                    "runs": [r["run"] for r in family_runs.records]}, out / f"log_probs_{model}.pt")
        means, per_sample = decomposition_summary(log_probs, targets, groups)
        summary = RunDir(family_runs.run_dirs[0]).summary() or {}
        entries.append(ModelDecomposition(name=model, model=model, width=width, method=method,
                                          parameters=summary.get("student_parameters"), **means,
                                          runs=[SplitRun(**r) for r in family_runs.records]))
        per_sample_json[model] = per_sample
        for i in range(targets.numel()):
            per_sample_rows.append({"model": model, "width": width, **{k: v[i] for k, v in per_sample.items()}})
    result = BiasVarianceResult(
        analysis="bias-variance", dataset=base.dataset, method=section.model_dump(),
        teacher=teacher.model_dump(exclude_unset=True) if (teacher is not None and method != "ce") else None,
        splits=splits, partitions=partitions, seeds=seeds, checkpoint=checkpoint,
        train_pool_size=int(sum(p.indices.numel() for p in plans[:splits])),
        split_sizes=[int(p.indices.numel()) for p in plans[:splits]], units=UNITS, models=entries,
    )
    write_outputs(result, out)
    write_csv(out / "bias_variance_per_sample.csv", [{c: r[c] for c in PER_SAMPLE_COLUMNS} for r in per_sample_rows])
    write_json(out / "bias_variance_per_sample.json", per_sample_json)
    return result
