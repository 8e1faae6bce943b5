"""Version-2 report sections, from the run folders and the collected rows alone.

* ``curves``: the per-epoch validation top-1 of the rows in ``results.curves`` (student alone: does
  the schedule converge?), with the change over the last 5 epochs.
* ``shares``: for the rows in ``results.share``, each seed's regularization-sample share (mean over
  epochs of ``reg_fraction``, the fraction of training samples where the student's CE is below the
  teacher's, at the row's own T) against its accuracy: Pearson r with a 95 % interval across seeds,
  at one T (the paper's argument: a higher share goes with lower accuracy); ``results.share_paired``
  compares the share of two rows seed by seed (does WSL lower it?).
* ``claims``: the "what this says about WSL" section. Every sentence is chosen by the sign of the
  measured difference and whether its 95 % confidence interval excludes 0; nothing is hard-coded.

Differences are in top-1 points (test set; "best" = at the epoch chosen on validation), shares in
percentage points.
"""
from __future__ import annotations

from pathlib import Path

from softlabels.reproduce import bias_variance
from softlabels.reproduce.plan import Plan, read_metrics
from softlabels.stats import mean_std, paired_comparison, pearson_ci


def compare(a: dict, b: dict, key: str) -> dict:
    """Seed-by-seed comparison of two collected rows on ``key`` ("best", "last", ...), common seeds only."""
    common = sorted(set(a["seeds"]) & set(b["seeds"]))
    res = paired_comparison([a[key][a["seeds"].index(s)] for s in common],
                            [b[key][b["seeds"].index(s)] for s in common])
    return {**res, "seeds": common}


# ----------------------------------------------------------------------------- curves
def curves(plan: Plan, results: dict) -> dict:
    """{"pair/row": {"label", "seeds": {seed: {"val_top1": [...], "test_top1": [...]}}, "last5_change"}}."""
    out: dict[str, dict] = {}
    for row in plan.results.curves:
        for pair_name, pair in results["pairs"].items():
            entry = pair["methods"].get(row)
            if not entry or not entry["seeds"]:
                continue
            seeds, changes = {}, []
            for seed, run_dir in zip(entry["seeds"], entry["run_dirs"]):
                rows = read_metrics(Path(run_dir))
                val = [r.get("val_top1") for r in rows]
                seeds[str(seed)] = {"val_top1": val, "test_top1": [r.get("test_top1") for r in rows]}
                if len(val) >= 10 and None not in val:
                    changes.append(sum(val[-5:]) / 5 - sum(val[-10:-5]) / 5)
            out[f"{pair_name}/{row}"] = {"label": plan.methods[row].label or row, "seeds": seeds,
                                         "last5_change": mean_std(changes)[0]}
    return out


def plot_curves(data: dict, path: Path) -> Path | None:
    """Validation top-1 per epoch, one line per seed, one panel per pair/row."""
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], sorted(data.items())):
        for seed, s in sorted(c["seeds"].items()):
            ax.plot(range(1, len(s["val_top1"]) + 1), s["val_top1"], lw=1.2, label=f"seed {seed}")
        ax.set_title(f"{name} ({c['label']})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return path


# ----------------------------------------------------------------------------- shares
def _share_of(run_dir: str) -> tuple[float | None, float | None]:
    """(mean over epochs, last epoch) of ``reg_fraction`` in percent; None when the run logs none."""
    fr = [r.get("reg_fraction") for r in read_metrics(Path(run_dir))]
    fr = [f for f in fr if f is not None]
    if not fr:
        return None, None
    return 100 * sum(fr) / len(fr), 100 * fr[-1]


def shares(plan: Plan, results: dict) -> dict:
    """{"rows": {"pair/row": per-seed shares and accuracies, r with CI}, "paired": {"pair/a-b": comparison}}."""
    rows: dict[str, dict] = {}
    per_seed: dict[tuple[str, str], dict[int, float]] = {}
    names = list(dict.fromkeys([*plan.results.share, *plan.results.share_paired,
                                *(o for others in plan.results.share_paired.values() for o in others)]))
    for row in names:
        for pair_name, pair in results["pairs"].items():
            entry = pair["methods"].get(row)
            if not entry or not entry["seeds"]:
                continue
            means, lasts = zip(*(_share_of(d) for d in entry["run_dirs"]))
            per_seed[(pair_name, row)] = {s: m for s, m in zip(entry["seeds"], means) if m is not None}
            if row not in plan.results.share:
                continue
            rows[f"{pair_name}/{row}"] = {
                "label": plan.methods[row].label or row, "values": entry["values"], "seeds": entry["seeds"],
                "share_mean": list(means), "share_last": list(lasts), "best": entry["best"], "last": entry["last"],
                "r_share_best": pearson_ci(means, entry["best"]), "r_share_last": pearson_ci(lasts, entry["last"]),
            }
    paired: dict[str, dict] = {}
    for row, others in plan.results.share_paired.items():
        for other in others:
            for pair_name in results["pairs"]:
                a, b = per_seed.get((pair_name, row)), per_seed.get((pair_name, other))
                if not a or not b:
                    continue
                common = sorted(set(a) & set(b))
                paired[f"{pair_name}/{row}-{other}"] = {
                    "seeds": common, **paired_comparison([a[s] for s in common], [b[s] for s in common])}
    return {"rows": rows, "paired": paired}


# ----------------------------------------------------------------------------- claims
def _ci(res: dict, unit: str = "points") -> str:
    if res.get("mean_diff") is None:
        return "no paired seeds"
    text = f"{res['mean_diff']:+.2f} {unit}"
    if res.get("ci_low") is not None:
        text += f" (95 % CI {res['ci_low']:+.2f} to {res['ci_high']:+.2f}"
        text += f", d_z {res['d_z']:+.2f}" if res.get("d_z") is not None else ""
        text += f", {res['n']} seeds)"
    else:
        text += f" ({res['n']} seed{'s' if res['n'] != 1 else ''}, no interval)"
    return text


def direction(res: dict | None) -> str:
    """"higher" / "lower" when the 95 % interval excludes 0, "unclear" otherwise (or without an interval)."""
    if not res or res.get("ci_low") is None:
        return "unclear"
    if res["ci_low"] > 0:
        return "higher"
    if res["ci_high"] < 0:
        return "lower"
    return "unclear"


def _sentence(title: str, res: dict, if_higher: str, if_lower: str, if_unclear: str, unit: str = "points") -> str:
    verdict = {"higher": if_higher, "lower": if_lower, "unclear": if_unclear}[direction(res)]
    return f"- **{title}**: {_ci(res, unit)}. {verdict}"


def _grid_lines(roles: dict, rows: dict, label: dict, where: str = "") -> list[str]:
    """The scaling x weighting comparisons of one grid, {role: row}; a comparison whose rows did not run is left
    out. ``where`` is appended to every title (e.g. ", 30 epochs")."""
    r = roles.get
    checks = [
        ("wsl", "kd", "the paper's headline comparison",
         "WSL beats KD here, as the paper reports.", "WSL is worse than KD here, against the paper's claim.",
         "The difference is within the noise of these seeds: the paper's claim is not confirmed here."),
        ("wsl", "kd_same_scale", "same loss scale: only the sample weights differ",
         "The sample weights themselves help.", "The sample weights themselves hurt.",
         "No measurable effect of the sample weights once the loss scale is the same."),
        ("kd_same_scale", "kd", "loss scale alone, no weights",
         "The scaling alone (CE 1 / soft alpha) is better than KD's usual scaling.",
         "The scaling alone is worse than KD's usual scaling.", "The loss scaling alone makes no clear difference."),
        ("wsl_kd_scale", "kd", "the weights at KD's scaling",
         "The weights help at KD's scaling too.", "The weights hurt at KD's scaling.",
         "No clear effect of the weights at KD's scaling."),
        ("filtered", "kd_same_scale", "filtering",
         "Dropping the soft loss of regularization samples helps, in line with the paper's argument that it hurts.",
         "Dropping it hurts: here the regularization samples' soft loss is useful, against the paper's argument.",
         "Dropping it makes no clear difference."),
        ("kd", "student", "KD's gain over the student", "KD helps.", "KD hurts.", "No clear gain from KD."),
        ("wsl", "student", "WSL's gain over the student", "WSL helps.", "WSL hurts.", "No clear gain from WSL."),
    ]
    out = []
    for a, b, what, hi, lo, unclear in checks:
        ra, rb = r(a), r(b)
        if ra in rows and rb in rows and rows[ra]["seeds"] and rows[rb]["seeds"]:
            title = f"{label.get(ra)} − {label.get(rb)} ({what}{where})"
            out.append(_sentence(title, compare(rows[ra], rows[rb], "best"), hi, lo, unclear))
    return out


def claims(plan: Plan, results: dict, share_data: dict) -> list[str]:
    """Markdown lines of the "what this says about WSL" section (empty without ``results.claims``)."""
    c = plan.results.claims
    if c is None or c.pair not in results["pairs"]:
        return []
    rows = results["pairs"][c.pair]["methods"]
    label = {m: plan.methods[m].label or m for m in plan.methods}
    lines = ["## What this says about WSL", "",
             f"Generated from the numbers above (pair {c.pair}, test top-1 at the validation-chosen epoch, paired "
             "by seed). A claim is called supported or contradicted only when the 95 % confidence interval of the "
             "paired difference excludes 0; otherwise this benchmark cannot tell.", ""]
    lines += _grid_lines(c.roles(), rows, label, f", {plan.epochs_of(c.wsl)} epochs")
    for name, s in sorted(share_data["rows"].items()):
        if not name.startswith(f"{c.pair}/"):
            continue
        r = s["r_share_best"]
        if r["r"] is None:
            continue
        where = f"{s['label']} (T {s['values'].get('method.temperature', '—')})"
        ci = f" (95 % CI {r['ci_low']:+.2f} to {r['ci_high']:+.2f})" if r["ci_low"] is not None else ""
        if r["ci_low"] is not None and r["ci_high"] < 0:
            verdict = "a higher share went with lower accuracy, as the paper argues."
        elif r["ci_low"] is not None and r["ci_low"] > 0:
            verdict = "a higher share went with higher accuracy, against the paper's argument."
        else:
            verdict = "no relation can be told from these seeds."
        lines.append(f"- **Share vs accuracy within one T, across seeds, {where}**: r {r['r']:+.2f}{ci}, "
                     f"{r['n']} seeds: {verdict}")
    for name, res in sorted(share_data["paired"].items()):
        if not name.startswith(f"{c.pair}/"):
            continue
        a, b = name.split("/", 1)[1].split("-", 1)
        lines.append(_sentence(f"Regularization-sample share, {label.get(a)} − {label.get(b)} (each at its own T)",
                               res, "WSL training raised the share.", "WSL training lowered the share.",
                               "No clear difference in the share.", unit="pp"))
    lines += bias_variance.claim_lines(results.get("bias_variance"))
    lines += _shorter_schedule(plan, c, rows, label)
    lines += _strength(plan, results, label)
    lines.append("")
    return lines


def _shorter_schedule(plan: Plan, c, rows: dict, label: dict) -> list[str]:
    """Convergence (the student on the main schedule vs the shorter one), then the grid's comparisons again on
    the shorter schedule (``claims.shorter_schedule``, {role: row})."""
    short = c.shorter_schedule
    if not short:
        return []
    out = []
    s_long, s_short = c.student, short.get("student")
    if s_long in rows and s_short in rows and rows[s_long]["seeds"] and rows[s_short]["seeds"]:
        out.append(_sentence(
            f"Convergence: {label.get(s_long)} − {label.get(s_short)}", compare(rows[s_long], rows[s_short], "best"),
            "The shorter schedule has not converged for the student alone: the comparisons above are on the longer "
            "one; below, the same comparisons on the shorter schedule, where distillation's gains include faster "
            "convergence.",
            "The longer schedule is worse for the student alone (over-fitting): the shorter one is enough.",
            "Doubling the schedule makes no clear difference to the student alone: the shorter schedule has "
            "converged."))
    wsl_short = short.get("wsl")
    where = f", {plan.epochs_of(wsl_short)} epochs" if wsl_short in plan.methods else ""
    return out + _grid_lines(short, rows, label, where)


def _strength(plan: Plan, results: dict, label: dict) -> list[str]:
    c = plan.results.claims
    out = []
    for pair_name, (student, kd, wsl) in c.strength.items():
        pair = results["pairs"].get(pair_name)
        if not pair or not all(r in pair["methods"] for r in (student, kd, wsl)):
            continue
        m = pair["methods"]
        teacher = results["teachers"][pair["teacher"]]["best_top1"]
        kd_gain, wsl_gain = compare(m[kd], m[student], "best"), compare(m[wsl], m[student], "best")
        gap = compare(m[wsl], m[kd], "best")
        winner = {"higher": "WSL ahead", "lower": "KD ahead", "unclear": "no clear winner"}[direction(gap)]
        top1 = "—" if teacher is None else f"{teacher:.2f}"
        out.append(f"- **Teacher {pair['teacher_model']} ({top1} %) → {pair['student']}**: KD over the student "
                   f"{_ci(kd_gain)}; WSL over the student {_ci(wsl_gain)}; WSL − KD {_ci(gap)} ({winner}).")
    return out


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as PNG (110 dpi) at ``path`` and as SVG beside it, then close it; fixed SVG ids and no
    date, so a results figure regenerates byte for byte from the same logs."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    with plt.rc_context({"svg.hashsalt": "softlabels"}):
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    plt.close(fig)
