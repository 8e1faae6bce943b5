"""Reading what the report shows: run folders (through :class:`softlabels.RunDir`) and typed analysis results.

Reading is tolerant where a person would want it: a run without ``summary.json`` (still running, or
killed) is reported from its ``metrics.jsonl`` (which stops at a line cut by a kill), a damaged
``config.yaml`` is noted and the summary used instead. What cannot be read at all raises a one-line
``UserError`` naming the path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from softlabels.analysis.results import AnalysisResult, load_result
from softlabels.engine.summary import best_test_metrics
from softlabels.errors import UserError

__all__ = ["AnalysisFile", "Run", "collect", "is_run_dir", "load_analysis", "load_run"]

RUN_FILES = ("metrics.jsonl", "summary.json", "config.yaml")
MAX_ANALYSIS_BYTES = 64 * 2**20  # larger JSON files (per-sample dumps) are not read
REPORT_FOLDER = "report"  # never taken for a run or analysis folder


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Run:
    """One run folder. ``rows`` are the ``metrics.jsonl`` records (epochs 1..E), ``config`` the raw
    ``config.yaml`` mapping ({} when unreadable), ``summary`` ``summary.json`` ({} while running)."""

    path: Path
    name: str
    method: str | None
    student: str | None
    teacher: str | None
    temperature: float | None
    summary: dict
    config: dict
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    label: str = ""  # unique display label, set by ``collect``

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of a numeric per-epoch field, skipping epochs that lack it."""
        xs, ys = [], []
        for i, r in enumerate(self.rows):
            v = r.get(key)
            if is_number(v):
                xs.append(int(r["epoch"]) if is_number(r.get("epoch")) else i + 1)
                ys.append(float(v))
        return xs, ys

    @property
    def has_regularization(self) -> bool:
        """True for a distillation run whose metrics record regularization samples."""
        return any(is_number(r.get("reg_fraction")) for r in self.rows)

    def last_with(self, key: str) -> dict | None:
        """The last metrics row that has ``key``."""
        for r in reversed(self.rows):
            if r.get(key) is not None:
                return r
        return None

    @property
    def has_validation(self) -> bool:
        return any(is_number(r.get("val_top1")) for r in self.rows)

    @property
    def best_on_test(self) -> bool:
        """True when the run's best epoch was chosen on the test set (no validation split): optimistic."""
        flag = self.summary.get("best_selected_on_test_set")
        if isinstance(flag, bool):
            return flag
        chosen = self.summary.get("best_selected_by")
        if chosen is not None:
            return str(chosen).startswith("test")
        return not self.has_validation

    def stat(self, key: str):
        """A summary value, falling back to what the metrics give (best by validation, else test, top-1)."""
        if self.summary.get(key) is not None:
            return self.summary[key]
        by = "val_top1" if self.has_validation else "test_top1"
        scored = [r for r in self.rows if is_number(r.get(by))]
        tested = [r for r in scored if is_number(r.get("test_top1"))]
        if not tested:
            return None
        best = max(scored, key=lambda r: r[by])
        last = tested[-1]
        best_test = best_test_metrics(best, last)
        derived = {"best_top1": best_test["top1"], "best_top5": best_test["top5"],
                   "best_epoch": best.get("epoch"), "last_top1": last.get("test_top1"),
                   "last_top5": last.get("test_top5"), "epochs": len(self.rows)}
        return derived.get(key)

    @property
    def dataset(self) -> str | None:
        data = self.config.get("data")
        return self.summary.get("dataset") or (data.get("name") if isinstance(data, dict) else None)

    @property
    def pair(self) -> str:
        """``teacher→student`` (or the student alone)."""
        return f"{self.teacher}→{self.student}" if self.teacher else str(self.student or "?")


@dataclass
class AnalysisFile:
    """One analysis JSON written by ``softlabels analyze``, read into its typed result."""

    path: Path
    result: AnalysisResult


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def _default_temperature(method: str | None) -> float | None:
    """The method's default temperature, for configs that did not spell it out."""
    if not method:
        return None
    try:
        from softlabels.methods import get_method

        f = get_method(method).Params.model_fields.get("temperature")
        return float(f.default) if f is not None and is_number(f.default) else None
    except Exception:  # an unknown or removed method: no temperature to show
        return None


def _name_of(v) -> str | None:
    if isinstance(v, dict):
        v = v.get("name")
    return str(v) if v is not None else None


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``softlabels train``; ``UserError`` naming the path if it is not one."""
    from softlabels.engine.run_dir import RunDir

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such folder; pass run folders written by `softlabels train`")
    if not path.is_dir():
        raise UserError(f"{path}: not a folder; pass run folders written by `softlabels train`")
    if not is_run_dir(path):
        raise UserError(f"{path}: not a run folder (no metrics.jsonl, summary.json or config.yaml)")
    rd = RunDir(path)
    if not rd.metrics_path.is_file():
        raise UserError(f"{path}: run folder has no metrics ({rd.metrics_path} is missing); did its training start?")
    notes: list[str] = []
    rows = rd.metrics()
    written = sum(1 for line in rd.metrics_path.read_bytes().splitlines() if line.strip())
    if written > len(rows):
        notes.append(f"{rd.metrics_path}: read {len(rows)} epoch(s); stopped at a damaged line "
                     f"({written - len(rows)} line(s) not used, e.g. cut by a kill)")
    if not rows:
        raise UserError(f"{path}: run folder has no metrics ({rd.metrics_path} has no epochs yet)")
    rows.sort(key=lambda r: r["epoch"] if is_number(r.get("epoch")) else 0)
    summary = rd.summary() or {}
    if not summary:
        notes.append(f"{path.name}: no summary.json (unfinished run?); best/last taken from metrics.jsonl")
    config: dict = {}
    if rd.config_path.is_file():
        try:
            config = rd.raw_config()
        except UserError as err:
            notes.append(f"{rd.config_path}: unreadable ({err}); using summary.json only")
    method_section = config.get("method") if isinstance(config.get("method"), dict) else {}
    method = _name_of(summary.get("method")) or _name_of(method_section)
    student = _name_of(summary.get("student")) or _name_of(config.get("student"))
    teacher = _name_of(summary.get("teacher")) or _name_of(config.get("teacher"))
    temperature = None
    if teacher is not None or any("reg_fraction" in r for r in rows):
        t = method_section.get("temperature")
        temperature = float(t) if is_number(t) else _default_temperature(method)
    name = str(summary.get("name") or config.get("name") or path.name)
    return Run(path, name, method, student, teacher, temperature, summary, config, rows, notes)


def load_analysis(path: str | Path) -> AnalysisFile | None:
    """The typed result in one JSON file, or None when the file is not an analysis result (a run's
    ``summary.json``, a per-sample dump, anything else)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ANALYSIS_BYTES:
            return None
        return AnalysisFile(path, load_result(path))
    except (OSError, UserError):
        return None


def _analyses_in(folder: Path) -> list[AnalysisFile]:
    found = [load_analysis(p) for p in sorted(folder.glob("*.json")) if p.name != "summary.json"]
    return [a for a in found if a is not None]


def _run_dirs_under(folder: Path) -> list[Path]:
    """Run folders below ``folder`` (any depth; report folders and run folders' insides are not searched)."""
    found = []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and d.name != REPORT_FOLDER):
        if (sub / "metrics.jsonl").is_file():
            found.append(sub)
        elif not is_run_dir(sub):
            found.extend(_run_dirs_under(sub))
    return found


def collect(paths: list[str | Path]) -> tuple[list[Run], list[AnalysisFile]]:
    """Runs and analysis results from the given paths.

    Each path is a run folder, an analysis JSON file, or a folder that holds run folders (at any depth,
    e.g. ``results/fashion_mnist``) and/or analysis results.
    """
    runs: list[Run] = []
    analyses: list[AnalysisFile] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".json":
            analyses.append(AnalysisFile(p, load_result(p)))  # names the file when it is not a result
            continue
        if not p.is_dir():
            load_run(p)  # raises the right message (missing / not a folder)
        if is_run_dir(p):
            runs.append(load_run(p))
            continue
        here = _analyses_in(p)
        sub_runs = _run_dirs_under(p)
        sub_analyses = [a for d in sorted(x for x in p.iterdir() if x.is_dir() and x.name != REPORT_FOLDER)
                        if d not in sub_runs and not is_run_dir(d) for a in _analyses_in(d)]
        if not (here or sub_runs or sub_analyses):
            raise UserError(
                f"{p}: not a run folder (no metrics.jsonl, summary.json or config.yaml), "
                "no run folders inside it and no analysis result (JSON of `softlabels analyze`) in it"
            )
        runs.extend(load_run(d) for d in sub_runs)
        analyses.extend(here + sub_analyses)
    seen: set[Path] = set()
    runs = [r for r in runs if not (r.path.resolve() in seen or seen.add(r.path.resolve()))]
    seen = set()
    analyses = [a for a in analyses if not (a.path.resolve() in seen or seen.add(a.path.resolve()))]
    _assign_labels(runs)
    return runs, analyses


def _assign_labels(runs: list[Run]) -> None:
    """Run names, made unique with parent folders (then a counter) when two runs share a name."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    used: set[str] = set()
    for r in runs:
        label = r.name if counts[r.name] == 1 else f"{r.path.parent.name}/{r.name}"
        base, k = label, 2
        while label in used:
            label, k = f"{base} #{k}", k + 1
        used.add(label)
        r.label = label
