"""Markdown of one pair in a plan's report: its rows (one table, or one per ``results.groups`` entry) and the
paired comparisons.

A row's cells: best and last test top-1 (mean ± sample std over seeds), seeds run (and missing), the
hyperparameters with where they came from, and each seed's best. A group with a ``baseline`` row adds the
seed-paired difference of best top-1 to that row with its 95 % confidence interval (an mdistiller-style
"Δ vs student" column, paired by seed). Rows in no group are shown last under "Other rows".
"""
from __future__ import annotations

from typing import Any

from softlabels.reproduce.plan import Plan
from softlabels.stats import paired_comparison


def fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def plus_minus(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def values_text(entry: dict) -> str:
    """"temperature 4, alpha 2.25 (val)", "... (from kd)" or "defaults"."""
    if not entry["values"]:
        return "defaults"
    text = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in entry["values"].items())
    if entry["inherited_from"]:
        text += f" (from {', '.join(entry['inherited_from'])})"
    elif entry["selected"]:
        text += " (val)"
    return text


def _delta(entry: dict, base: dict) -> str:
    """best(entry) − best(base), paired by seed, as "+1.23 [+0.50, +1.96]"; "—" without common seeds."""
    common = sorted(set(entry["seeds"]) & set(base["seeds"]))
    if not common:
        return "—"
    res = paired_comparison([entry["best"][entry["seeds"].index(s)] for s in common],
                            [base["best"][base["seeds"].index(s)] for s in common])
    ci = f" [{res['ci_low']:+.2f}, {res['ci_high']:+.2f}]" if res["ci_low"] is not None else ""
    return f"{res['mean_diff']:+.2f}{ci}"


def _row(plan: Plan, name: str, e: dict, base: dict | None, baseline: str | None = None) -> str:
    missing = f" (+{len(e['missing_seeds'])} missing)" if e["missing_seeds"] else ""
    cells = [plan.methods[name].label or name, plus_minus(e["best_mean"], e["best_std"]),
             plus_minus(e["last_mean"], e["last_std"]), f"{len(e['seeds'])}{missing}", values_text(e),
             ", ".join(f"{v:.2f}" for v in e["best"])]
    if base is not None:
        cells.insert(3, "(reference)" if name == baseline else _delta(e, base))
    return "| " + " | ".join(cells) + " |"


def _table(plan: Plan, pair: dict, teacher: dict, rows: list[str], baseline: str | None) -> list[str]:
    methods = pair["methods"]
    base = methods.get(baseline) if baseline else None
    head = ["Row", "best", "last", "seeds", "hyperparameters", "per-seed best"]
    if baseline:
        head.insert(3, f"Δ best vs {plan.methods[baseline].label or baseline} [95 % CI]")
    teacher_cells = [f"Teacher ({pair['teacher_model']})", fmt(teacher["best_top1"]), fmt(teacher["last_top1"]),
                     "1", "trained once", "—"]
    if baseline:
        teacher_cells.insert(3, "—")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(teacher_cells) + " |"]
    empty = {"seeds": [], "best": []}
    lines += [_row(plan, name, methods[name], (base or empty) if baseline else None, baseline) for name in rows]
    return [*lines, ""]


def rows_section(plan: Plan, pair: dict, teacher: dict) -> list[str]:
    """The row table(s) of one pair: one per group that has rows on this pair, then the rest."""
    methods = pair["methods"]
    if not plan.results.groups:
        return _table(plan, pair, teacher, list(methods), None)
    lines: list[str] = []
    shown: set[str] = set()
    for group in plan.results.groups:
        rows = [r for r in group.rows if r in methods]
        if not rows:
            continue
        shown.update(rows)
        lines += [f"### {group.title}", ""]
        if group.note:
            lines += [group.note.strip(), ""]
        lines += _table(plan, pair, teacher, rows, next((b for b in group.baselines() if b in methods), None))
    rest = [r for r in methods if r not in shown]
    if rest:
        lines += ["### Other rows", "", *_table(plan, pair, teacher, rest, None)]
    return lines


def paired_section(plan: Plan, paired: dict) -> list[str]:
    """The paired-comparison table: version 2 with the 95 % interval and d_z, version 1 as first published."""
    if not paired:
        return []
    label = {m: plan.methods[m].label or m for m in plan.methods}
    if plan.results.version >= 2:
        lines = ["Paired over seeds (same seed = same data order, augmentation and initialisation); difference in "
                 "top-1 points with its 95 % confidence interval, Cohen's d_z (mean / std of the differences) and "
                 "the paired t-test:", "",
                 "| Comparison | metric | mean diff [95 % CI] | d_z | wins/losses | t | p (two-sided) |",
                 "|---|---|---|---|---|---|---|"]
    else:
        lines = ["Paired over seeds (same seed = same data order, augmentation and initialisation):", "",
                 "| Comparison | metric | mean diff | std | wins/losses | t | p (two-sided) |",
                 "|---|---|---|---|---|---|---|"]
    for comp, res in paired.items():
        a, b = comp.split("-", 1)
        for key in ("best", "last"):
            r = res[key]
            if plan.results.version >= 2:
                ci = f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if r["ci_low"] is not None else ""
                cells = f"{fmt(r['mean_diff'], '+.2f')}{ci} | {fmt(r['d_z'], '+.2f')}"
            else:
                cells = f"{fmt(r['mean_diff'], '+.2f')} | {fmt(r['std_diff'])}"
            lines.append(f"| {label[a]} − {label[b]} | {key} | {cells} | {r['wins']}/{r['losses']} of {r['n']} | "
                         f"{fmt(r['t'])} | {fmt(r['p'], '.3f')} |")
    return [*lines, ""]
