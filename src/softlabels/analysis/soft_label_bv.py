"""``analyze soft-label-bv``: per-sample bias and variance of CE, KD and WSL students vs regularization samples.

The three methods are trained on the same split plan (same training seeds), so per-sample differences
are paired. With ȳ the normalized geometric mean of a method's models, per test sample:
bias = −log ȳ(y), variance = mean_m KL(ȳ ‖ p_m), risk = their sum (nats).

A test sample is a REGULARIZATION SAMPLE when the CE students' average model, softened at the
distillation temperature T, puts more mass on the true class than the teacher: ȳ_CE^T(y) > p_t^T(y),
where ȳ_CE^T = softmax(mean_m log p_m / T). The fraction of CE models with p_m^T(y) > p_t^T(y) is
reported too (``ce_vote``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from softlabels.analysis.base import AnalysisBase, experiment, given_params, method_config
from softlabels.analysis.bias_variance import cross_entropy_bias_variance, true_class_probability
from softlabels.analysis.checks import check_checkpoint, check_seeds, check_values
from softlabels.analysis.evaluation import decomposition_summary, teacher_log_probs, test_log_probs
from softlabels.analysis.results import (
    BiasVarianceChange,
    MethodDecomposition,
    RegularizationShare,
    SoftLabelBVResult,
    SplitRun,
)
from softlabels.analysis.runner import train_split_family, write_result_files
from softlabels.analysis.splits import plan_splits
from softlabels.config import TeacherConfig

__all__ = ["CHANGE_COLUMNS", "METHOD_COLUMNS", "markdown", "soft_label_bias_variance", "write_outputs"]

UNITS = "bias, variance, risk: cross-entropy in nats per test sample (Heskes decomposition)"
DEFINITION = ("test sample with softmax(mean_m log p_m / T)(y) > p_teacher^T(y), "
              "p_m the CE students (their softened geometric-mean model)")
CHANGE_COLUMNS = ["method", "group", "count", "fraction", "mean_delta_bias", "mean_delta_variance", "mean_delta_risk",
                  "frac_bias_up", "frac_variance_down", "frac_bias_up_variance_down"]
METHOD_COLUMNS = ["name", "num_models", "bias", "variance", "risk", "member_top1_mean", "ensemble_top1"]


def markdown(result: SoftLabelBVResult) -> str:
    from softlabels.io import markdown_table

    reg = result.regularization
    return (markdown_table(METHOD_COLUMNS, [m.model_dump() for m in result.methods]) + "\n\n"
            + f"regularization samples (T = {result.temperature:g}): {reg.count} of {reg.num_samples}\n\n"
            + markdown_table(CHANGE_COLUMNS, [c.model_dump() for c in result.changes]))


def write_outputs(result: SoftLabelBVResult, out: Path) -> str:
    """``soft_label_bv.json``, ``soft_label_bv.csv`` (the group table), ``soft_label_bv_methods.csv`` and
    ``soft_label_bv.md``; returns the Markdown text."""
    return write_result_files(out, "soft_label_bv", result, {
        "soft_label_bv.csv": [{c: getattr(r, c) for c in CHANGE_COLUMNS} for r in result.changes],
        "soft_label_bv_methods.csv": [{c: getattr(m, c) for c in METHOD_COLUMNS} for m in result.methods],
    }, markdown(result))


def _changes(decomps: dict, reg: torch.Tensor, n: int) -> list[BiasVarianceChange]:
    """Per method (kd, wsl) and group (regularization, other, all): count, fraction and the changes of
    bias, variance and risk against CE."""
    ce = decomps["ce"][0]
    changes = []
    for name in ("kd", "wsl"):
        d = decomps[name][0]
        db, dv, dr = d.bias - ce.bias, d.variance - ce.variance, d.risk - ce.risk
        for group, mask in (("regularization", reg), ("other", ~reg), ("all", torch.ones_like(reg))):
            count = int(mask.sum())
            row: dict = {"method": name, "group": group, "count": count, "fraction": count / n if n else None}
            if count:
                row.update(mean_delta_bias=float(db[mask].mean()), mean_delta_variance=float(dv[mask].mean()),
                           mean_delta_risk=float(dr[mask].mean()),
                           frac_bias_up=float((db[mask] > 0).double().mean()),
                           frac_variance_down=float((dv[mask] < 0).double().mean()),
                           frac_bias_up_variance_down=float(((db[mask] > 0) & (dv[mask] < 0)).double().mean()))
            changes.append(BiasVarianceChange(**row))
    return changes


def soft_label_bias_variance(
    base: AnalysisBase,
    out: str | Path,
    *,
    teacher: TeacherConfig,
    splits: int = 2,
    partitions: int = 1,
    seeds: Sequence[int] = (0,),
    temperature: float | None = None,
    alpha: float | None = None,
    checkpoint: str = "last",
) -> SoftLabelBVResult:
    """Train CE, KD and WSL students on the same splits; relate their per-sample changes of bias and
    variance against CE to regularization samples. Writes the files of :func:`write_outputs`, plus
    ``soft_label_bv_per_sample.csv`` and ``.json``."""
    from softlabels.io import write_csv, write_json

    out = Path(out)
    seeds = check_seeds(seeds)
    check_checkpoint(checkpoint)
    if temperature is None:
        temperature = given_params(base.method).get("temperature", 4.0)
    temperature = float(check_values([temperature], "--temperature", positive=True)[0])
    if alpha is not None:
        check_values([alpha], "--alpha")
    plans = plan_splits(base, splits, partitions, seeds)
    groups = [p.group for p in plans]
    model = base.exp.student.name
    sections = {
        "ce": method_config(base, "ce"),
        "kd": method_config(base, "kd", temperature=temperature),
        "wsl": method_config(base, "wsl", temperature=temperature, alpha=alpha),
    }
    decomps, methods, records = {}, [], {}
    for name, section in sections.items():
        family = train_split_family(base, out, f"{name}_{model}", plans, splits, method=section, teacher=teacher,
                                    model=model)
        log_probs, targets = test_log_probs(family.run_dirs, checkpoint=checkpoint)
        decomps[name] = (cross_entropy_bias_variance(log_probs, targets), log_probs)
        means, _ = decomposition_summary(log_probs, targets, groups)
        methods.append(MethodDecomposition(name=name, method=section.model_dump(), **means))
        records[name] = [SplitRun(**r) for r in family.records]
    exp = experiment(base, out, "teacher_eval", seed=base.seed, method=sections["kd"], teacher=teacher)
    teacher_lp = teacher_log_probs(exp)
    ce, ce_lp = decomps["ce"]
    y = targets.view(-1, 1)
    teacher_t = true_class_probability(teacher_lp, targets, temperature)
    ce_avg_t = true_class_probability(ce.average, targets, temperature)
    ce_members_t = torch.log_softmax(ce_lp / temperature, -1).gather(2, y.unsqueeze(0).expand(ce_lp.shape[0], -1, 1))
    ce_vote = (ce_members_t.squeeze(2).exp() > teacher_t.unsqueeze(0)).double().mean(0)
    reg = ce_avg_t > teacher_t
    n = targets.numel()
    result = SoftLabelBVResult(
        analysis="soft-label-bv", dataset=base.dataset, teacher=teacher.model_dump(exclude_unset=True),
        teacher_top1=float((teacher_lp.argmax(-1) == targets).double().mean() * 100), temperature=temperature,
        splits=splits, partitions=partitions, seeds=seeds, checkpoint=checkpoint, units=UNITS, methods=methods,
        regularization=RegularizationShare(
            definition=DEFINITION, temperature=temperature, count=int(reg.sum()), num_samples=n,
            fraction=float(reg.double().mean()) if n else None, ce_vote_mean=float(ce_vote.mean()) if n else None),
        changes=_changes(decomps, reg, n), runs=records,
    )
    write_outputs(result, out)
    per_sample = {"sample": list(range(n)), "target": targets.tolist(), "regularization": reg.long().tolist(),
                  "teacher_pT_y": teacher_t.tolist(), "ce_pT_y": ce_avg_t.tolist(), "ce_vote": ce_vote.tolist()}
    for name, (d, _) in decomps.items():
        per_sample.update({f"bias_{name}": d.bias.tolist(), f"variance_{name}": d.variance.tolist(),
                           f"risk_{name}": d.risk.tolist()})
    write_csv(out / "soft_label_bv_per_sample.csv", [{k: v[i] for k, v in per_sample.items()} for i in range(n)])
    write_json(out / "soft_label_bv_per_sample.json", per_sample)
    return result
