"""``analyze temperature-sweep``: KD at several temperatures; regularization samples against T and top-1.

The answers use the LAST epoch's top-1 (final weights): the runs have the base's validation split,
which is none by default, and then a "best" epoch would have been chosen on the test set.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from softlabels.analysis.base import AnalysisBase, experiment, method_config
from softlabels.analysis.checks import check_seeds, check_values
from softlabels.analysis.results import (
    AccuracyVsCount,
    AcrossRuns,
    AcrossTemperatures,
    CountVsTemperature,
    SweepAnswers,
    SweepRun,
    SweepTemperature,
    TemperatureSweepResult,
)
from softlabels.analysis.runner import log_progress, train_run, write_result_files
from softlabels.config import TeacherConfig
from softlabels.stats import describe_correlation, mean_std, pearson, spearman

__all__ = ["markdown", "summarize", "temperature_sweep", "write_outputs"]

MEASURE = ("reg_fraction_mean: fraction of regularization samples (p_s^T(y) > p_t^T(y), at the run's T) "
           "averaged over epochs, then over seeds")
PER_T_COLUMNS = ["temperature", "runs", "reg_fraction_mean", "reg_fraction_last", "reg_fraction_t1_mean", "best_top1",
                 "best_top1_std", "last_top1", "last_top1_std"]
RUN_COLUMNS = ["run", "temperature", "seed", "best_top1", "last_top1", "reg_fraction_mean", "reg_fraction_last",
               "reg_fraction_t1_mean", "reg_fraction_t1_last"]


def _sign(v: float | None) -> int | None:
    return None if v is None else (1 if v > 0 else -1 if v < 0 else 0)


def summarize(runs: list[SweepRun], *, dataset: str | None, teacher: dict, method: dict, temperatures: list[float],
              seeds: list[int]) -> TemperatureSweepResult:
    """Per-temperature means and the answers, from the per-run records alone."""
    per_t = []
    for t in temperatures:
        group = [r for r in runs if r.temperature == t]
        row: dict = {"temperature": t, "runs": len(group)}
        for key in ("best_top1", "last_top1", "reg_fraction_mean", "reg_fraction_last", "reg_fraction_t1_mean"):
            row[key], row[f"{key}_std"] = mean_std(getattr(r, key) for r in group)
        per_t.append(SweepTemperature(**row))
    frac_t = [r.reg_fraction_mean for r in per_t]
    rho_count = spearman(temperatures, frac_t)
    steps = [b - a for a, b in zip(frac_t, frac_t[1:]) if a is not None and b is not None]
    within = {f"{t:g}": spearman([r.reg_fraction_mean for r in runs if r.temperature == t],
                                 [r.best_top1 for r in runs if r.temperature == t]) for t in temperatures}
    across_t = AcrossTemperatures(
        pearson_best=pearson(frac_t, [r.best_top1 for r in per_t]),
        spearman_best=spearman(frac_t, [r.best_top1 for r in per_t]),
        pearson_last=pearson(frac_t, [r.last_top1 for r in per_t]),
        spearman_last=spearman(frac_t, [r.last_top1 for r in per_t]),
    )
    across_runs = AcrossRuns(pearson_best=pearson([r.reg_fraction_mean for r in runs], [r.best_top1 for r in runs]),
                             spearman_best=spearman([r.reg_fraction_mean for r in runs], [r.best_top1 for r in runs]))
    acc = across_t.spearman_last  # final weights: no epoch chosen on the test set
    answers = SweepAnswers(
        count_vs_temperature=CountVsTemperature(
            spearman=rho_count, trend_sign=_sign(rho_count),
            monotone_increasing=len(steps) >= 2 and all(d > 0 for d in steps),
            rises_with_temperature=None if rho_count is None else rho_count > 0, measure=MEASURE),
        accuracy_vs_count=AccuracyVsCount(across_temperatures=across_t, across_runs=across_runs,
                                          within_temperature_spearman_best=within,
                                          falls_as_count_rises=None if acc is None else acc < 0),
    )
    return TemperatureSweepResult(analysis="temperature-sweep", dataset=dataset, teacher=teacher, method=method,
                                  temperatures=temperatures, seeds=seeds, per_temperature=per_t, answers=answers,
                                  runs=runs)


def _yes_no(v: bool | None) -> str:
    return "undetermined" if v is None else ("yes" if v else "no")


def markdown(result: TemperatureSweepResult) -> str:
    """The per-temperature table and the two answers; a correlation over fewer than 3 temperatures is
    reported as "not enough points"."""
    from softlabels.io import markdown_table

    n = sum(1 for r in result.per_temperature if r.reg_fraction_mean is not None)
    c = result.answers.count_vs_temperature
    a = result.answers.accuracy_vs_count
    rows = [r.model_dump() for r in result.per_temperature]
    return markdown_table(PER_T_COLUMNS, rows) + "\n\n" + "\n".join([
        f"- regularization fraction vs T: Spearman {describe_correlation(c.spearman, n)}"
        + ("" if c.spearman is None else
           f" (rises: {_yes_no(c.rises_with_temperature)}, monotone: {_yes_no(c.monotone_increasing)})"),
        f"- last-epoch top-1 vs regularization fraction across T: Spearman "
        f"{describe_correlation(a.across_temperatures.spearman_last, n)}, Pearson "
        f"{describe_correlation(a.across_temperatures.pearson_last, n)}"
        + ("" if a.falls_as_count_rises is None else f" (falls as the count rises: {_yes_no(a.falls_as_count_rises)})"),
    ])


def write_outputs(result: TemperatureSweepResult, out: Path, epoch_rows: list[dict] | None = None) -> str:
    """``temperature_sweep.json``, ``.csv`` (per T), ``_runs.csv``, ``_epochs.csv`` (when given) and ``.md``;
    returns the Markdown text."""
    tables = {"temperature_sweep.csv": [{c: getattr(r, c) for c in PER_T_COLUMNS} for r in result.per_temperature],
              "temperature_sweep_runs.csv": [{c: getattr(r, c) for c in RUN_COLUMNS} for r in result.runs]}
    if epoch_rows is not None:
        tables["temperature_sweep_epochs.csv"] = epoch_rows
    return write_result_files(out, "temperature_sweep", result, tables, markdown(result))


def temperature_sweep(
    base: AnalysisBase, out: str | Path, *, teacher: TeacherConfig, temperatures: Sequence[float] = (1, 2, 4, 8),
    seeds: Sequence[int] = (0,),
) -> TemperatureSweepResult:
    """KD (the ``kd`` method; base KD weights or CE 0.1 / KL 0.9) at each temperature and seed.

    Per run: the regularization-sample fraction at the run's T (and at T = 1) per epoch, from
    ``metrics.jsonl``, and best/last top-1. Per T: means over seeds. Answers: does the fraction (mean over
    epochs) rise with T (Spearman ρ over T, sign of the trend, monotone?), and does last-epoch accuracy fall
    as the fraction rises (Pearson and Spearman across T; within each T over seeds). Correlations need at
    least 3 points (else None). Writes the files of :func:`write_outputs`.
    """
    from softlabels.engine import RunDir

    out = Path(out)
    temps = [float(t) for t in check_values(list(temperatures), "--temperatures", positive=True)]
    seeds = check_seeds(seeds)
    runs, epoch_rows = [], []
    total = len(temps) * len(seeds)
    for t in temps:
        for s in seeds:
            name = f"kd_T{t:g}_seed{s}"
            exp = experiment(base, out, name, seed=s, method=method_config(base, "kd", temperature=t), teacher=teacher)
            log_progress(f"temperature sweep: run {len(runs) + 1}/{total} ({name})")
            summary = train_run(exp)
            rows = RunDir(exp.run_dir).metrics()
            frac = [r.get("reg_fraction") for r in rows]
            frac1 = [r.get("reg_fraction_t1") for r in rows]
            runs.append(SweepRun(
                run=name, temperature=t, seed=s, best_top1=summary.get("best_top1"),
                last_top1=summary.get("last_top1"), reg_fraction_mean=mean_std(frac)[0],
                reg_fraction_last=frac[-1] if frac else None, reg_fraction_t1_mean=mean_std(frac1)[0],
                reg_fraction_t1_last=frac1[-1] if frac1 else None, reg_fraction_per_epoch=frac,
                test_top1_per_epoch=[r.get("test_top1") for r in rows],
            ))
            for r in rows:
                epoch_rows.append({"temperature": t, "seed": s, "epoch": r.get("epoch"),
                                   "reg_fraction": r.get("reg_fraction"), "reg_fraction_t1": r.get("reg_fraction_t1"),
                                   "wsl_weight_mean": r.get("wsl_weight_mean"), "test_top1": r.get("test_top1"),
                                   "train_loss": r.get("train_loss")})
    result = summarize(runs, dataset=base.dataset, teacher=teacher.model_dump(exclude_unset=True),
                       method=method_config(base, "kd").model_dump(), temperatures=temps, seeds=seeds)
    write_outputs(result, out, epoch_rows)
    return result
