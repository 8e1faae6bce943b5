"""Runs that differ only in their seed form one group; the report draws a group as mean ± std over seeds.

The group key is the run's configuration without what differs between seeds of one experiment (name,
seed, output folder, runtime options, teacher file and cache locations). A group's label names the method
and the key hyperparameters: the configuration values that differ between groups of the same method.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from softlabels.report.loaders import Run, is_number
from softlabels.stats import mean_std

__all__ = ["RunGroup", "band", "group_runs"]

_IGNORED = {("name",), ("seed",), ("output_dir",), ("runtime",), ("callbacks",), ("loggers",), ("imports",),
            ("teacher", "checkpoint"), ("teacher", "cache"), ("teacher", "cache_path"), ("teacher", "cache_topk"),
            ("data", "root"), ("data", "num_workers"), ("data", "download")}
_SHORT = {"method.temperature": "T", "method.alpha": "α", "method.kd_weight": "kd_weight",
          "method.ce_weight": "ce_weight", "student.name": "student", "teacher.name": "teacher"}
_METHOD_NAMES = {"ce": "ce (no teacher)"}
_ALWAYS = (("method", "temperature"), ("method", "alpha"))  # shown whenever the config sets them


def _flatten(obj, prefix: tuple = ()) -> dict[tuple, object]:
    out: dict[tuple, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = (*prefix, str(k))
            if key in _IGNORED:
                continue
            out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


@dataclass
class RunGroup:
    """Runs of one configuration (seeds). ``label`` is what legends show; ``pair`` teacher→student."""

    key: str
    runs: list[Run]
    method: str
    pair: str
    settings: dict[tuple, object]
    label: str = ""
    hyper: str = ""  # "T=4, kd_weight=0.9": the key hyperparameters in the label
    hyper_parts: dict = field(default_factory=dict)  # setting key -> "T=4"
    color: object = None
    extras: dict = field(default_factory=dict)

    def method_label(self, *, without: tuple = (), show_pair: bool = False) -> str:
        """``kd (T=4, kd_weight=0.9)``, leaving out the settings in ``without`` (and `` · pair`` if asked)."""
        parts = [v for k, v in self.hyper_parts.items() if k not in without]
        name = _METHOD_NAMES.get(self.method, self.method)
        return name + (f" ({', '.join(parts)})" if parts else "") + (f" · {self.pair}" if show_pair else "")

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list:
        return [r.summary.get("seed", r.config.get("seed")) for r in self.runs]

    @property
    def temperature(self) -> float | None:
        ts = {r.temperature for r in self.runs}
        return ts.pop() if len(ts) == 1 else None

    @property
    def best_on_test(self) -> bool:
        return any(r.best_on_test for r in self.runs)

    def stats(self, key: str) -> tuple[float | None, float | None, int]:
        """Mean, sample std (None for one run) and count of a summary value over the group's runs."""
        vals = [float(v) for v in (r.stat(key) for r in self.runs) if is_number(v)]
        return mean_std(vals) + (len(vals),)


def band(series: Iterable[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float], list[int]]:
    """Per-epoch mean, sample std (0 with one run) and count over runs' (epochs, values) series."""
    by_epoch: dict[int, list[float]] = {}
    for xs, ys in series:
        for x, y in zip(xs, ys):
            by_epoch.setdefault(x, []).append(y)
    epochs = sorted(by_epoch)
    means, stds, counts = [], [], []
    for e in epochs:
        m, s = mean_std(by_epoch[e])
        means.append(m)
        stds.append(s or 0.0)
        counts.append(len(by_epoch[e]))
    return epochs, means, stds, counts


def group_runs(runs: list[Run]) -> list[RunGroup]:
    """Group runs by configuration (seeds together), in order of first appearance, labelled."""
    groups: dict[str, RunGroup] = {}
    for r in runs:
        settings = _flatten(r.config) if r.config else {("path",): str(r.path)}
        key = json.dumps({".".join(k): v for k, v in sorted(settings.items())}, sort_keys=True, default=str)
        if key not in groups:
            groups[key] = RunGroup(key, [], r.method or "?", r.pair, settings)
        groups[key].runs.append(r)
    out = list(groups.values())
    students = {g.runs[0].student for g in out}
    teachers = {g.runs[0].teacher for g in out if g.runs[0].teacher}
    show_pair = len(students) > 1 or len(teachers) > 1
    for g in out:
        same_method = [h for h in out if h.method == g.method]
        varying = sorted({k for h in same_method for k in set(h.settings) | set(g.settings)
                          if any(h.settings.get(k) != g.settings.get(k) for h in same_method)}
                         - {("student", "name"), ("teacher", "name")})
        keys = [k for k in _ALWAYS if k in g.settings] + [k for k in varying if k not in _ALWAYS]
        g.hyper_parts = _parts(g.settings, keys)
        if ("method", "temperature") not in g.hyper_parts and g.temperature is not None and g.method != "ce":
            g.hyper_parts = {("method", "temperature"): f"T={g.temperature:g}", **g.hyper_parts}
        g.hyper = ", ".join(g.hyper_parts.values())
        g.label = g.method_label(show_pair=show_pair)
    _unique(out)
    return out


def _parts(settings: dict[tuple, object], keys: list[tuple]) -> dict[tuple, str]:
    """``{key: "T=4"}`` for the keys a configuration sets. A nested option block that only some
    configurations have (``student.infodrop.*``) is named once, by its block name, where it is set."""
    blocks: dict[tuple, list[tuple]] = {}
    for k in keys:
        if len(k) > 2 and k[0] != "method":
            blocks.setdefault(k[:2], []).append(k)
    parts: dict[tuple, str] = {}
    for k in keys:
        block = k[:2] if len(k) > 2 and k[0] != "method" else None
        if block is not None and len(blocks[block]) > 1:
            if block not in parts and any(b in settings for b in blocks[block]):
                parts[block] = block[-1]
            continue
        if len(k) == 2 and any(b == k for b in blocks) and settings.get(k) is None:
            continue  # the block is absent here ("student.infodrop: null"): nothing to name
        if k in settings:
            name = _SHORT.get(".".join(k), k[-1] if k[0] == "method" else ".".join(k))
            parts[k] = f"{name}={_value(settings[k])}"
    return parts


def _unique(groups: list[RunGroup]) -> None:
    seen: dict[str, int] = {}
    for g in groups:
        if g.label in seen:
            seen[g.label] += 1
            g.label = f"{g.label} #{seen[g.label]}"
        else:
            seen[g.label] = 1
