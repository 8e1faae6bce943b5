"""Results of a plan from its run folders alone: a JSON file, a markdown report and a plot.

Reads only ``summary.json``, ``metrics.jsonl`` and the teachers' ``best.pt`` (for the sha256) of
the runs the plan names; it trains nothing, so ``softlabels reproduce PLAN --collect`` regenerates
``results.json`` and the report from committed logs on any machine.

"best" is the test top-1 at the epoch chosen on the validation split; "last" is the test top-1
after the last epoch; "test-max" (the maximum of test top-1 over epochs, which several papers
report) is kept in the JSON for comparison but never used to choose anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from softlabels.engine.checkpoint import sha256_of
from softlabels.reproduce import bias_variance, findings, pair_tables
from softlabels.reproduce.pair_tables import fmt as _fmt
from softlabels.reproduce.plan import (
    Plan,
    finished_summary,
    get_dotted,
    read_metrics,
    tag_of,
    teacher_checkpoint,
    teacher_run,
)
from softlabels.reproduce.runner import final_runs, selection_state
from softlabels.stats import mean_std, student_t_sf_two_sided


def _plan_file(source: str) -> str:
    """The plan path as the user gave it (symbolic links kept); an absolute path inside the working
    directory is made relative to it."""
    import os

    p = Path(source)
    if not p.is_absolute():
        return source
    rel = os.path.relpath(p, os.getcwd())
    return source if rel.startswith("..") else rel


def _rel(path: Path | str) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def collect(plan: Plan) -> dict:
    """The machine-readable results of ``plan`` (see module docstring)."""
    chosen, table, complete = selection_state(plan)
    teachers = {}
    for name in plan.teachers:
        run = teacher_run(plan, name)
        summary = finished_summary(run.run_dir)
        ckpt = teacher_checkpoint(plan, name)
        teachers[name] = {
            "model": get_dotted(run.config, "student.name"),
            "run_dir": _rel(run.run_dir),
            "checkpoint": _rel(ckpt),
            "sha256": sha256_of(ckpt) if ckpt.is_file() else None,
            "best_top1": summary and summary.get("best_top1"),
            "last_top1": summary and summary.get("last_top1"),
            "best_epoch": summary and summary.get("best_epoch"),
            "epochs": summary and summary.get("total_epochs"),
            "wall_time_s": summary and summary.get("wall_time_s"),
        }
    pairs: dict[str, Any] = {
        name: {"teacher": p.teacher, "teacher_model": teachers[p.teacher]["model"], "student": p.student,
               "methods": {}}
        for name, p in plan.pairs.items()
    }
    run_dirs = {str(Path(c["run_dir"])) for c in table}  # every run counted once for the compute total
    for run in final_runs(plan, chosen):
        entry = pairs[run.pair]["methods"].setdefault(run.method, {
            "method": get_dotted(run.config, "method.name"), "values": run.values, "tag": tag_of(run.values),
            "selected": bool(plan.methods[run.method].select), "inherited_from": sorted(plan.methods[run.method].inherit),
            "seeds": [], "best": [], "last": [], "test_max": [], "best_epoch": [], "run_dirs": [],
            "reg_fraction_last": [], "missing_seeds": [],
        })
        summary = finished_summary(run.run_dir)
        if summary is None:
            entry["missing_seeds"].append(run.seed)
            continue
        rows = read_metrics(run.run_dir)
        entry["seeds"].append(run.seed)
        entry["best"].append(summary["best_top1"])
        entry["last"].append(summary["last_top1"])
        entry["best_epoch"].append(summary["best_epoch"])
        tests = [r["test_top1"] for r in rows if "test_top1" in r]  # every epoch unless test_eval: when_best
        entry["test_max"].append(max(tests) if rows and len(tests) == len(rows) else None)
        entry["reg_fraction_last"].append(rows[-1].get("reg_fraction") if rows else None)
        entry["run_dirs"].append(_rel(run.run_dir))
        run_dirs.add(str(run.run_dir))
    wall = sum(t["wall_time_s"] or 0 for t in teachers.values())
    wall += sum((finished_summary(d) or {}).get("wall_time_s") or 0 for d in run_dirs)
    for pair in pairs.values():
        for entry in pair["methods"].values():
            for key in ("best", "last", "test_max"):
                m, s = mean_std(entry[key])
                entry[f"{key}_mean"], entry[f"{key}_std"] = m, s
        pair["paired"] = _paired(plan, pair["methods"])
    return {
        "plan": plan.name,
        "plan_file": _plan_file(plan.source),
        "seeds": plan.seeds,
        "selection": {"seed": plan.selection.seed, "metric": plan.selection.metric, "complete": complete,
                      "chosen": {f"{p}/{m}": v for (p, m), v in chosen.items()},
                      "candidates": [{**c, "run_dir": _rel(c["run_dir"])} for c in table]},
        "base": plan.base,
        "teachers": teachers,
        "pairs": pairs,
        "temperature": _temperature_curves(plan, table),
        "compute_s": wall,
        **_version2(plan, pairs, teachers),
    }


def _paired(plan: Plan, methods: dict) -> dict:
    """``results.paired``: each row against each listed row, seed by seed (best and last)."""
    out = {}
    for row, others in plan.results.paired.items():
        for other in others:
            if row not in methods or other not in methods:
                continue
            a, b = methods[row], methods[other]
            if plan.results.version >= 2:
                res = {key: findings.compare(a, b, key) for key in ("best", "last")}
                out[f"{row}-{other}"] = {"seeds": res["best"].pop("seeds"), **res}
                res["last"].pop("seeds")
                continue
            common = sorted(set(a["seeds"]) & set(b["seeds"]))
            out[f"{row}-{other}"] = {
                "seeds": common,
                **{key: _paired_v1([a[key][a["seeds"].index(s)] for s in common],
                                   [b[key][b["seeds"].index(s)] for s in common]) for key in ("best", "last")},
            }
    return out


def _paired_v1(a: list, b: list) -> dict:
    """The version-1 record (no interval or effect size; t from the closed form), kept byte for byte."""
    import math

    diffs = [float(x) - float(y) for x, y in zip(a, b) if x is not None and y is not None]
    mean, std = mean_std(diffs)
    out = {"n": len(diffs), "diffs": diffs, "mean_diff": mean, "std_diff": std,
           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "t": None, "p": None}
    if std is not None and std > 0:
        t = mean / (std / math.sqrt(len(diffs)))
        out.update(t=t, p=student_t_sf_two_sided(t, len(diffs) - 1))
    return out


def _version2(plan: Plan, pairs: dict, teachers: dict) -> dict:
    """Curves, shares (version 2 only, so version-1 JSON stays byte for byte)."""
    if plan.results.version < 2:
        return {}
    partial = {"pairs": pairs, "teachers": teachers}
    out = {"curves": findings.curves(plan, partial), "shares": findings.shares(plan, partial)}
    if plan.results.bias_variance is not None:  # written by ``reproduce --bias-variance``; null until then
        out["bias_variance"] = bias_variance.load(plan)
    return out


def _temperature_curves(plan: Plan, table: list[dict]) -> dict:
    """Regularization-sample fraction per epoch of each temperature-grid run (selection runs)."""
    out: dict[str, dict] = {}
    for c in table:
        if not c["key"].endswith("temperature"):
            continue
        rows = read_metrics(Path(c["run_dir"]))
        frac = [r.get("reg_fraction") for r in rows]
        if not rows or frac[0] is None:
            continue
        out.setdefault(f"{c['pair']}/{c['method']}", {})[str(c["value"])] = {
            "reg_fraction": frac, "reg_fraction_t1": [r.get("reg_fraction_t1") for r in rows],
            "val_top1": c["score"], "test_top1_last": rows[-1].get("test_top1"),
        }
    return out


# ----------------------------------------------------------------------------- plot + markdown
def plot_temperature(results: dict, path: Path) -> Path | None:
    """Regularization-sample fraction per epoch, one line per T, one panel per pair/method."""
    curves = results["temperature"]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, by_t) in zip(axes[0], sorted(curves.items())):
        for t, c in sorted(by_t.items(), key=lambda kv: float(kv[0])):
            ax.plot(range(1, len(c["reg_fraction"]) + 1), [100 * f for f in c["reg_fraction"]], marker="o",
                    ms=3, label=f"T={t} (val {c['val_top1']:.1f})" if c["val_top1"] is not None else f"T={t}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("regularization samples (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    findings.save_figure(fig, path)
    return path


def markdown(plan: Plan, results: dict, figure: Path | None, doc_dir: Path,
             curve_figure: Path | None = None) -> str:
    lines = [f"# Results: {plan.name}", "",
             f"Generated by `softlabels reproduce {results['plan_file']} --collect` from the run folders "
             f"under `{_rel(plan.output_dir)}` (do not edit by hand; notes come from "
             f"`{plan.results.notes or '—'}`). Seeds {', '.join(map(str, plan.seeds))}; "
             "**best** = test top-1 at the epoch with the best validation top-1, **last** = test top-1 after the "
             "last epoch; mean ± sample std over seeds. Hyperparameters marked (val) were chosen on the held-out "
             f"validation split with seed {plan.selection.seed}"
             + (f" on pair {plan.selection.on_pair} and used for every pair" if plan.selection.on_pair else "")
             + ", never on the test set. "
             f"Total compute of the runs: {results['compute_s'] / 60:.0f} min.", ""]
    if not results["selection"]["complete"]:
        lines += ["**Incomplete:** some selection runs have not finished; the table shows what has.", ""]
    lines += ["## Teachers", "", "| Teacher | Model | best | last | epochs | sha256 | checkpoint |", "|---|---|---|---|---|---|---|"]
    for name, t in results["teachers"].items():
        lines.append(f"| {name} | {t['model']} | {_fmt(t['best_top1'])} | {_fmt(t['last_top1'])} | {_fmt(t['epochs'], 'd')} | "
                     f"`{(t['sha256'] or '—')[:16]}` | `{t['checkpoint']}` |")
    lines.append("")
    for pair_name, pair in results["pairs"].items():
        lines += [f"## {pair_name}: {pair['teacher_model']} → {pair['student']}", ""]
        lines += pair_tables.rows_section(plan, pair, results["teachers"][pair["teacher"]])
        lines += pair_tables.paired_section(plan, pair["paired"])
    lines += ["## Selection on the validation split", "",
              "| Pair | Method | step | key | value | val top-1 | chosen |", "|---|---|---|---|---|---|---|"]
    chosen = results["selection"]["chosen"]
    for c in results["selection"]["candidates"]:
        pick = chosen.get(f"{c['pair']}/{c['method']}", {}).get(c["key"])
        lines.append(f"| {c['pair']} | {c['method']} | {c['step']} | {c['key']} | {c['value']} | {_fmt(c['score'])} | "
                     f"{'✔' if pick == c['value'] else ''} |")
    lines.append("")
    if figure is not None:
        lines += ["## Regularization samples and temperature", "",
                  f"![regularization samples per epoch for each temperature]({_rel_to(figure, doc_dir)})", "",
                  "| Pair/method | T | mean reg. fraction over epochs | last epoch | val top-1 |", "|---|---|---|---|---|"]
        for name, by_t in sorted(results["temperature"].items()):
            for t, c in sorted(by_t.items(), key=lambda kv: float(kv[0])):
                fr = [f for f in c["reg_fraction"] if f is not None]
                lines.append(f"| {name} | {t} | {100 * sum(fr) / len(fr):.1f} % | {100 * fr[-1]:.1f} % | "
                             f"{_fmt(c['val_top1'])} |")
        lines.append("")
    if plan.results.version >= 2:
        lines += _v2_sections(plan, results, curve_figure, doc_dir)
    lines += _paper_section(plan)
    if plan.results.notes and Path(plan.results.notes).is_file():
        lines += [Path(plan.results.notes).read_text().rstrip(), ""]
    return "\n".join(lines)


def _v2_sections(plan: Plan, results: dict, curve_figure: Path | None, doc_dir: Path) -> list[str]:
    """Convergence curves, regularization share vs accuracy, and the generated WSL summary."""
    lines: list[str] = []
    if results.get("curves"):
        lines += ["## Convergence: validation top-1 per epoch", ""]
        if curve_figure is not None:
            lines += [f"![validation top-1 per epoch]({_rel_to(curve_figure, doc_dir)})", ""]
        lines += ["| Pair/row | seeds | epochs | val top-1, last epoch (mean) | change over the last 5 epochs |",
                  "|---|---|---|---|---|"]
        for name, c in sorted(results["curves"].items()):
            lasts = [s["val_top1"][-1] for s in c["seeds"].values() if s["val_top1"]]
            epochs = max((len(s["val_top1"]) for s in c["seeds"].values()), default=0)
            lines.append(f"| {name} ({c['label']}) | {len(c['seeds'])} | {epochs} | {_fmt(mean_std(lasts)[0])} | "
                         f"{_fmt(c['last5_change'], '+.2f')}{'' if c['last5_change'] is None else ' points'} |")
        lines.append("")
    shares = results.get("shares") or {}
    if shares.get("rows"):
        lines += ["## Regularization samples vs accuracy within one T, across seeds", "",
                  "Share = mean over epochs of the fraction of training samples whose student CE is below the "
                  "teacher's (the paper's regularization samples), at the row's own T; r = Pearson correlation "
                  "of share and best top-1 over the seeds, with a Fisher-z 95 % interval (wide with few seeds).", "",
                  "| Pair/row | T | seeds | share (%) per seed | best per seed | r (share, best) [95 % CI] | "
                  "r (last-epoch share, last) |", "|---|---|---|---|---|---|---|"]
        for name, s in sorted(shares["rows"].items()):
            r, rl = s["r_share_best"], s["r_share_last"]
            ci = f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if r["ci_low"] is not None else ""
            lines.append(f"| {name} | {s['values'].get('method.temperature', '—')} | {len(s['seeds'])} | "
                         f"{', '.join(_fmt(v, '.1f') for v in s['share_mean'])} | "
                         f"{', '.join(_fmt(v) for v in s['best'])} | {_fmt(r['r'], '+.2f')}{ci} | "
                         f"{_fmt(rl['r'], '+.2f')} |")
        lines.append("")
    lines += bias_variance.markdown_lines(results.get("bias_variance"))
    lines += findings.claims(plan, results, shares or {"rows": {}, "paired": {}})
    return lines


def _rel_to(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _paper_section(plan: Plan) -> list[str]:
    if not plan.results.paper_numbers or not Path(plan.results.paper_numbers).is_file():
        return []
    data = yaml.safe_load(Path(plan.results.paper_numbers).read_text())
    lines = [f"## {data.get('title', 'Published numbers')}", "", data.get("note", "").strip(), ""]
    for table in data.get("tables", []):
        cols = table["columns"]
        lines += [f"### {table['title']}", "", "| " + " | ".join(["Setting", *cols, "our config", "here"]) + " |",
                  "|" + "---|" * (len(cols) + 3)]
        for row in table["rows"]:
            vals = [_fmt(row.get(c)) if isinstance(row.get(c), (int, float)) else str(row.get(c, "—")) for c in cols]
            lines.append("| " + " | ".join([row["setting"], *vals, f"`{row['config']}`", "not run here"]) + " |")
        lines.append("")
    return lines


def write_results(plan: Plan, log=None) -> dict:
    """Collect, then write the JSON, the figure and the markdown named in ``plan.results``."""
    results = collect(plan)
    json_path, md_path = Path(plan.results.json_path), Path(plan.results.markdown)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    figure = plot_temperature(results, Path(plan.results.figures) / f"{plan.name}_reg_vs_temperature.png")
    curve_figure = None
    if plan.results.version >= 2:
        curve_figure = findings.plot_curves(results.get("curves") or {},
                                            Path(plan.results.figures) / f"{plan.name}_val_curves.png")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(plan, results, figure, md_path.parent, curve_figure) + "\n")
    if log:
        log(f"wrote {json_path} and {md_path}" + (f" and {figure}" if figure else ""))
    return results
