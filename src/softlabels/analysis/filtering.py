"""``analyze filtering``: KD vs KD with regularization samples filtered out vs WSL, same seeds.

The answers compare LAST-epoch top-1 (final weights), paired by seed: the runs have the base's validation
split, none by default, and then a "best" epoch would have been chosen on the test set.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from softlabels.analysis.base import AnalysisBase, experiment, method_config
from softlabels.analysis.checks import check_seeds, check_values
from softlabels.analysis.results import FilteringAnswers, FilteringArm, FilteringResult, FilteringRun, PairedDifference
from softlabels.analysis.runner import log_progress, train_run, write_result_files
from softlabels.config import TeacherConfig
from softlabels.stats import mean_std

__all__ = ["FILTERING_ARMS", "filtering_experiment", "markdown", "summarize", "write_outputs"]

#: arm -> the ``weighting`` of the ``wsl`` method
FILTERING_ARMS = {"kd": "none", "filter": "filter", "wsl": "wsl"}
RUN_COLUMNS = ["arm", "seed", "run", "best_top1", "last_top1", "reg_fraction_mean", "reg_fraction_last"]
SUMMARY_COLUMNS = ["arm", "n", "best_top1_mean", "best_top1_std", "last_top1_mean", "last_top1_std",
                   "reg_fraction_last_mean"]


def _pm(m: float | None, sd: float | None) -> str:
    return "–" if m is None else f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"


def summarize(runs: list[FilteringRun], *, dataset: str | None, teacher: dict, methods: dict, seeds: list[int]
              ) -> FilteringResult:
    """Per-arm means ± std, paired differences to ``kd`` and the answers, from the per-run records alone."""
    arms = []
    for arm in FILTERING_ARMS:
        group = [r for r in runs if r.arm == arm]
        row: dict = {"arm": arm, "n": len(group)}
        for key in ("best_top1", "last_top1", "reg_fraction_last"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(getattr(r, key) for r in group)
        for key in ("best_top1", "last_top1"):
            row[f"{key}_pm"] = _pm(row[f"{key}_mean"], row[f"{key}_std"])
        arms.append(FilteringArm(**row))

    def paired(arm: str, key: str) -> float | None:
        diffs = []
        for s in seeds:
            a = next(getattr(r, key) for r in runs if r.arm == arm and r.seed == s)
            b = next(getattr(r, key) for r in runs if r.arm == "kd" and r.seed == s)
            if a is not None and b is not None:
                diffs.append(a - b)
        return mean_std(diffs)[0]

    diffs = {f"{arm}_minus_kd": PairedDifference(best_top1=paired(arm, "best_top1"), last_top1=paired(arm, "last_top1"))
             for arm in ("filter", "wsl")}
    fl, wl = diffs["filter_minus_kd"].last_top1, diffs["wsl_minus_kd"].last_top1
    answers = FilteringAnswers(filtering_hurts=None if fl is None else fl < 0,
                               wsl_beats_kd=None if wl is None else wl > 0)
    return FilteringResult(analysis="filtering", dataset=dataset, teacher=teacher, methods=methods, seeds=seeds,
                           arms=arms, paired_differences=diffs, answers=answers, runs=runs)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


def _yes_no(v: bool | None) -> str:
    return "undetermined" if v is None else ("yes" if v else "no")


def markdown(result: FilteringResult) -> str:
    from softlabels.io import markdown_table

    d = result.paired_differences
    rows = [a.model_dump() for a in result.arms]
    return markdown_table(["arm", "n", "best_top1_pm", "last_top1_pm", "reg_fraction_last_mean"], rows) + "\n\n" + (
        f"- filter − kd (last-epoch top-1, paired by seed): {_fmt(d['filter_minus_kd'].last_top1)} "
        f"(filtering hurts: {_yes_no(result.answers.filtering_hurts)})\n"
        f"- wsl − kd (last-epoch top-1, paired by seed): {_fmt(d['wsl_minus_kd'].last_top1)}\n"
        "- best top-1 is the run's best epoch; without a validation split it was chosen on the test set "
        "(optimistic) and is not used for the answers")


def write_outputs(result: FilteringResult, out: Path) -> str:
    """``filtering.json``, ``filtering.csv`` (per arm and seed), ``filtering_summary.csv`` (per arm) and
    ``filtering.md``; returns the Markdown text."""
    return write_result_files(out, "filtering", result, {
        "filtering.csv": [{c: getattr(r, c) for c in RUN_COLUMNS} for r in result.runs],
        "filtering_summary.csv": [{c: getattr(a, c) for c in SUMMARY_COLUMNS} for a in result.arms],
    }, markdown(result))


def filtering_experiment(
    base: AnalysisBase, out: str | Path, *, teacher: TeacherConfig, seeds: Sequence[int] = (0, 1, 2),
    temperature: float | None = None, alpha: float | None = None,
) -> FilteringResult:
    """The paper's filtering experiment: three arms of the ``wsl`` method with the same T, α and CE weight —
    ``kd`` (``weighting: none``, KD with WSL's scaling), ``filter`` (soft loss dropped on regularization
    samples) and ``wsl`` — for the same seeds. Writes the files of :func:`write_outputs`.
    """
    from softlabels.config import method_params
    from softlabels.engine import RunDir

    out = Path(out)
    seeds = check_seeds(seeds)
    for what, v in (("--temperature", temperature), ("--alpha", alpha)):
        if v is not None:
            check_values([v], what, positive=what == "--temperature")
    runs, params = [], {}
    for arm, weighting in FILTERING_ARMS.items():
        for s in seeds:
            name = f"{arm}_seed{s}"
            method = method_config(base, "wsl", temperature=temperature, alpha=alpha, weighting=weighting)
            exp = experiment(base, out, name, seed=s, method=method, teacher=teacher)
            params[arm] = {"name": "wsl", **method_params(exp).model_dump()}
            log_progress(f"filtering: run {len(runs) + 1}/{len(seeds) * 3} ({name})")
            summary = train_run(exp)
            frac = [r.get("reg_fraction") for r in RunDir(exp.run_dir).metrics()]
            runs.append(FilteringRun(arm=arm, seed=s, run=name, best_top1=summary.get("best_top1"),
                                     last_top1=summary.get("last_top1"), reg_fraction_mean=mean_std(frac)[0],
                                     reg_fraction_last=frac[-1] if frac else None))
    result = summarize(runs, dataset=base.dataset, teacher=teacher.model_dump(exclude_unset=True), methods=params,
                       seeds=seeds)
    write_outputs(result, out)
    return result
