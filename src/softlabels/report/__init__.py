"""``softlabels report``: plots (PNG + SVG) and one self-contained HTML page from run folders.

Reading is tolerant: a run without ``summary.json`` (still running, or killed) is reported from its
``metrics.jsonl``; a run without regularization fields (a ``ce`` teacher) is left out of the
distillation plots; an analysis JSON of any shape contributes every object that has numeric ``bias``,
``variance`` or ``risk`` entries. What cannot be read at all raises a ``UserError`` naming the path.

Library use::

    from softlabels.report import build_report
    html_path = build_report(["runs/demo/kd_resnet20_resnet8", "runs/demo/wsl_resnet20_resnet8"], "report")
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from softlabels.errors import UserError

__all__ = ["AnalysisEntry", "AnalysisSource", "Run", "build_report", "collect", "load_analysis", "load_run"]

RUN_FILES = ("metrics.jsonl", "summary.json", "config.yaml")
BV_KEYS = ("bias", "variance", "risk")
MAX_ANALYSIS_BYTES = 64 * 2**20  # larger JSON files (per-sample dumps) are not read
MAX_ANALYSIS_ENTRIES = 60
_NAME_KEYS = ("name", "group", "model", "method", "label", "run", "key")


@dataclass
class Run:
    """One run folder, read tolerantly. ``rows`` are the parsed ``metrics.jsonl`` records."""

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
            if _is_number(v):
                xs.append(int(r["epoch"]) if _is_number(r.get("epoch")) else i + 1)
                ys.append(float(v))
        return xs, ys

    def has(self, key: str) -> bool:
        return any(key in r for r in self.rows)

    @property
    def has_regularization(self) -> bool:
        """True for a distillation run whose metrics record regularization samples."""
        return any(_is_number(r.get("reg_fraction")) for r in self.rows)

    def last_with(self, key: str) -> dict | None:
        """The last metrics row that has ``key``."""
        for r in reversed(self.rows):
            if r.get(key) is not None:
                return r
        return None

    def first_with(self, key: str) -> dict | None:
        for r in self.rows:
            if r.get(key) is not None:
                return r
        return None

    def stat(self, key: str):
        """A summary value, falling back to what the metrics give (best by test top-1, last row)."""
        if self.summary.get(key) is not None:
            return self.summary[key]
        top1 = [r for r in self.rows if _is_number(r.get("test_top1"))]
        if not top1:
            return None
        best = max(top1, key=lambda r: r["test_top1"])
        last = top1[-1]
        derived = {
            "best_top1": best.get("test_top1"),
            "best_top5": best.get("test_top5"),
            "best_epoch": best.get("epoch"),
            "last_top1": last.get("test_top1"),
            "last_top5": last.get("test_top5"),
            "epochs": len(self.rows),
        }
        return derived.get(key)

    @property
    def kind(self) -> str:
        """Short description for labels: ``method, T=4`` or just ``method``."""
        parts = [self.method or "?"]
        if self.temperature is not None:
            parts.append(f"T={_fmt_num(self.temperature)}")
        return ", ".join(parts)


@dataclass
class AnalysisEntry:
    label: str
    values: dict[str, float]  # subset of bias / variance / risk


@dataclass
class AnalysisSource:
    """One analysis JSON file and the bias/variance/risk entries found in it."""

    path: Path
    entries: list[AnalysisEntry]
    truncated: bool = False  # more than MAX_ANALYSIS_ENTRIES entries: the first ones only


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt_num(v: float) -> str:
    return f"{v:g}"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read JSON ({err}); is the file complete?") from err


def _read_metrics(path: Path, notes: list[str]) -> list[dict]:
    rows: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from err
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        notes.append(f"{path}: skipped {bad} line(s) that are not JSON objects")
    return rows


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def _default_temperature(method: str | None) -> float | None:
    """The method's default temperature, for configs that did not spell it out."""
    if not method:
        return None
    try:
        from softlabels.methods import get_method

        f = get_method(method).Params.model_fields.get("temperature")
        return float(f.default) if f is not None and _is_number(f.default) else None
    except Exception:  # an unknown or removed method: no temperature to show
        return None


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``softlabels train``; ``UserError`` naming the path if it is not one."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such folder; pass run folders written by `softlabels train`")
    if not path.is_dir():
        raise UserError(f"{path}: not a folder; pass run folders written by `softlabels train`")
    if not is_run_dir(path):
        raise UserError(f"{path}: not a run folder (no metrics.jsonl, summary.json or config.yaml)")
    notes: list[str] = []
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{path}: run folder has no metrics ({metrics} is missing); did its training start?")
    rows = _read_metrics(metrics, notes)
    if not rows:
        raise UserError(f"{path}: run folder has no metrics ({metrics} has no epochs yet)")
    rows.sort(key=lambda r: r["epoch"] if _is_number(r.get("epoch")) else 0)

    summary: dict = {}
    if (path / "summary.json").is_file():
        s = _read_json(path / "summary.json")
        summary = s if isinstance(s, dict) else {}
    else:
        notes.append(f"{path.name}: no summary.json (unfinished run?); best/last taken from metrics.jsonl")
    config: dict = {}
    if (path / "config.yaml").is_file():
        try:
            c = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
            config = c if isinstance(c, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            notes.append(f"{path / 'config.yaml'}: unreadable ({err}); using summary.json only")

    def sect(key: str) -> dict:
        v = config.get(key)
        return v if isinstance(v, dict) else {}

    def name_of(v) -> str | None:
        if isinstance(v, dict):
            v = v.get("name")
        return str(v) if v is not None else None

    method = name_of(summary.get("method")) or name_of(sect("method"))
    student = name_of(summary.get("student")) or name_of(sect("student"))
    teacher = name_of(summary.get("teacher")) or name_of(config.get("teacher"))
    temperature = None
    if teacher is not None or any("reg_fraction" in r for r in rows):
        t = sect("method").get("temperature")
        temperature = float(t) if _is_number(t) else _default_temperature(method)
    name = str(summary.get("name") or config.get("name") or path.name)
    return Run(path, name, method, student, teacher, temperature, summary, config, rows, notes)


def _entries_from(obj, trail: list[str], out: list[AnalysisEntry]) -> None:
    """Every dict with numeric bias/variance/risk (or ``{mean: x}`` of them), labelled by name or path."""
    if isinstance(obj, dict):
        values = {}
        for k in BV_KEYS:
            v = obj.get(k)
            if isinstance(v, dict):
                v = v.get("mean")
            if _is_number(v):
                values[k] = float(v)
        if values:
            label = next((str(obj[k]) for k in _NAME_KEYS if isinstance(obj.get(k), (str, int, float))), None)
            out.append(AnalysisEntry(label or ("/".join(trail) or "all"), values))
        for k, v in obj.items():
            if k not in BV_KEYS and isinstance(v, (dict, list)):
                _entries_from(v, [*trail, str(k)], out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _entries_from(v, [*trail, str(i)], out)


def _strip_common_prefix(entries: list[AnalysisEntry]) -> None:
    """``groups/kd``, ``groups/wsl`` -> ``kd``, ``wsl`` (path labels only; names are left alone)."""
    parts = [e.label.split("/") for e in entries]
    if len(parts) < 2 or any(len(p) < 2 for p in parts):
        return
    k = 0
    while all(len(p) > k + 1 and p[k] == parts[0][k] for p in parts):
        k += 1
    if k:
        for e, p in zip(entries, parts):
            e.label = "/".join(p[k:])


def load_analysis(path: str | Path) -> AnalysisSource | None:
    """Bias/variance/risk entries of one JSON file, or None when it has none (or cannot be read)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ANALYSIS_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    entries: list[AnalysisEntry] = []
    _entries_from(data, [], entries)
    _strip_common_prefix(entries)
    if len(entries) > MAX_ANALYSIS_ENTRIES:
        entries = entries[:MAX_ANALYSIS_ENTRIES]
        truncated = True
    else:
        truncated = False
    return AnalysisSource(path, entries, truncated) if entries else None


def _analyses_in(folder: Path) -> list[AnalysisSource]:
    found = []
    for p in sorted(folder.glob("*.json")):
        if p.name == "summary.json":
            continue
        src = load_analysis(p)
        if src is not None:
            found.append(src)
    return found


def collect(paths: list[str | Path]) -> tuple[list[Run], list[AnalysisSource]]:
    """Runs and analysis files from the given paths.

    Each path is a run folder, an analysis folder (JSON files with bias/variance/risk), an analysis
    JSON file, or a folder of run folders (e.g. ``runs/demo``), whose run and analysis subfolders are
    all taken.
    """
    runs: list[Run] = []
    analyses: list[AnalysisSource] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".json":
            src = load_analysis(p)
            if src is None:
                raise UserError(f"{p}: no bias/variance/risk values in this JSON file")
            analyses.append(src)
            continue
        if not p.is_dir():
            load_run(p)  # raises the right message (missing / not a folder)
        if is_run_dir(p):
            runs.append(load_run(p))
            analyses.extend(_analyses_in(p))
            continue
        here = _analyses_in(p)
        subs = sorted(d for d in p.iterdir() if d.is_dir())
        sub_runs = [d for d in subs if (d / "metrics.jsonl").is_file()]
        sub_analyses = [a for d in subs if d not in sub_runs for a in _analyses_in(d)]
        if not (here or sub_runs or sub_analyses):
            raise UserError(
                f"{p}: not a run folder (no metrics.jsonl, summary.json or config.yaml), "
                "no run folders inside it and no analysis JSON (bias/variance/risk) in it"
            )
        runs.extend(load_run(d) for d in sub_runs)
        analyses.extend(here + sub_analyses)
    # the same folder given twice counts once
    seen: set[Path] = set()
    runs = [r for r in runs if not (r.path.resolve() in seen or seen.add(r.path.resolve()))]
    seen = set()
    analyses = [a for a in analyses if not (a.path.resolve() in seen or seen.add(a.path.resolve()))]
    _assign_labels(runs)
    return runs, analyses


def _assign_labels(runs: list[Run]) -> None:
    """Run names, made unique with the parent folder (then a counter) when two runs share a name."""
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


def default_out_dir(runs: list[Run], paths: list[str | Path]) -> Path:
    """``report/`` next to the first run folder (or inside the first folder given, if it held no run)."""
    if runs:
        return runs[0].path.parent / "report"
    first = Path(paths[0])
    return (first.parent if first.is_file() else first) / "report"


def build_report(paths: list[str | Path], out_dir: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write the plots (PNG + SVG) and ``report.html`` into ``out_dir``; return the HTML path."""
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
    plots, plot_notes = make_plots(runs, analyses, out)
    return write_html(runs, analyses, plots, out, notes=plot_notes, title=title)
