"""``softlabels report``: figures (PNG at 150 dpi + SVG) and one self-contained HTML page.

Run folders are read by :mod:`softlabels.report.loaders` (through :class:`softlabels.RunDir`) and grouped by
configuration (:mod:`~softlabels.report.groups`: seeds of one configuration are drawn as mean ± std);
results of ``softlabels analyze`` are read as typed results and each drawn with its own figure
(:mod:`~softlabels.report.analysis_plots`).

Library use::

    from softlabels.report import build_report
    html_path = build_report(["results/fashion_mnist/resnet20-resnet8/kd"], "report")
"""
from __future__ import annotations

from pathlib import Path

from softlabels.errors import UserError
from softlabels.report.loaders import AnalysisFile, Run, collect, is_run_dir, load_analysis, load_run

__all__ = ["AnalysisFile", "Run", "build_report", "collect", "default_out_dir", "load_analysis", "load_run"]


def default_out_dir(runs: list[Run], paths: list[str | Path]) -> Path:
    """``report/`` next to the first run folder (or inside the first folder given, if it held no run)."""
    first = Path(paths[0])
    if runs and is_run_dir(first):
        return first.parent / "report"
    return (first.parent if first.is_file() else first) / "report"


def build_report(paths: list[str | Path], out_dir: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write the figures (PNG + SVG) and ``report.html`` into ``out_dir``; return the HTML path."""
    from softlabels.report.groups import group_runs
    from softlabels.report.html import write_html
    from softlabels.report.plots import make_plots

    if not paths:
        raise UserError("report needs at least one run folder")
    runs, analyses = collect(list(paths))
    if not runs and not analyses:
        raise UserError(f"{paths[0]}: nothing to report")
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs, list(paths))
    if is_run_dir(out):
        raise UserError(f"{out}: is a run folder; choose another --out for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the report folder ({err})") from err
    groups = group_runs(runs)
    plots, notes = make_plots(groups, analyses, out)
    return write_html(groups, analyses, plots, out, notes=notes, title=title)
