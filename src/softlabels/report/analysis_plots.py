"""Figures of the typed analysis results (``softlabels analyze``), one kind of figure per kind of result."""
from __future__ import annotations

import re
from pathlib import Path

from softlabels.analysis.results import (
    BiasVarianceResult,
    FilteringResult,
    SoftLabelBVResult,
    TemperatureSweepResult,
)
from softlabels.report.figures import Plot, new_figure, save
from softlabels.report.loaders import AnalysisFile

__all__ = ["analysis_plots", "error_bar_note"]

_BV_COLORS = {"bias": "tab:blue", "variance": "tab:orange", "risk": "tab:green"}
_NATS = "nats per test sample"


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "analysis"


def error_bar_note(entries) -> str:
    has = any(getattr(e, "bias_sem", None) is not None for e in entries)
    return ("Error bars: ± 1 standard error of the mean over the test samples." if has else
            "No error bars: this result file records no standard errors (written before they were added; "
            "re-run the analysis to get them).")


def _bars(ax, labels: list[str], entries) -> None:
    """Grouped bars of bias, variance and risk per entry, with standard-error bars when recorded."""
    keys = ("bias", "variance", "risk")
    width = 0.8 / len(keys)
    xs = list(range(len(entries)))
    for j, k in enumerate(keys):
        vals = [getattr(e, k) if getattr(e, k) is not None else float("nan") for e in entries]
        errs = [getattr(e, f"{k}_sem", None) for e in entries]
        yerr = [e or 0.0 for e in errs] if any(e is not None for e in errs) else None
        ax.bar([x - 0.4 + width * (j + 0.5) for x in xs], vals, width=width, color=_BV_COLORS[k], label=k,
               yerr=yerr, capsize=3 if yerr else 0)
    ax.set_xticks(xs, labels)
    ax.set_ylabel(f"mean over the test set ({_NATS})")
    ax.legend()


def _bias_variance(res: BiasVarianceResult, source: str, name: str, out: Path) -> Plot:
    models = res.models
    widths = [m.width for m in models]
    setting = (f"{res.splits} disjoint splits × {res.partitions} partition(s) × {len(res.seeds)} seed(s) "
               f"= {models[0].num_models if models else 0} models each, {res.method.get('name', '?')} training, "
               f"{res.checkpoint} weights")
    if all(w is not None for w in widths) and len(widths) >= 2:
        fig, (ax,) = new_figure(width=7.2, height=4.4)
        for k in ("bias", "variance", "risk"):
            vals = [getattr(m, k) for m in models]
            errs = [getattr(m, f"{k}_sem") for m in models]
            ax.errorbar(widths, vals, yerr=[e or 0.0 for e in errs] if any(e is not None for e in errs) else None,
                        color=_BV_COLORS[k], marker="o", capsize=3, label=k)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        family = models[0].name.rsplit("_w", 1)[0]
        ax.set(xlabel=f"width k ({family}_wk: stage channels k, 2k, 4k, 8k)", ylabel=f"mean ({_NATS})",
               title=f"Bias, variance and risk against width ({res.dataset})")
        ax.legend()
    else:
        fig, (ax,) = new_figure(width=max(5.5, 1.6 + 1.3 * len(models)), height=4.4)
        _bars(ax, [m.name for m in models], models)
        ax.set_title(f"Bias, variance and risk per model ({res.dataset})")
    caption = (f"{source}: cross-entropy decomposition (Heskes): risk = bias + variance, {setting}. "
               f"{error_bar_note(models)}")
    return save(fig, out, name, "Bias and variance", caption, section="analysis")


def _soft_label_bv(res: SoftLabelBVResult, source: str, name: str, out: Path) -> Plot:
    fig, (ax, ax_d) = new_figure(ncols=2, width=5.4, height=4.4)
    label = {"ce": "CE (no teacher)", "kd": f"KD (T={res.temperature:g})", "wsl": f"WSL (T={res.temperature:g})"}
    _bars(ax, [label.get(m.name, m.name) for m in res.methods], res.methods)
    ax.set_title(f"Students' bias, variance and risk ({res.dataset})")
    groups = [g for g in ("regularization", "other") if any(c.group == g for c in res.changes)]
    methods = [m for m in ("kd", "wsl") if any(c.method == m for c in res.changes)]
    width = 0.8 / max(1, 2 * len(methods))
    xs = list(range(len(groups)))
    j = 0
    for m in methods:
        for k, hatch in (("mean_delta_bias", None), ("mean_delta_variance", "//")):
            vals = [next((getattr(c, k) for c in res.changes if c.method == m and c.group == g), None) or 0.0
                    for g in groups]
            ax_d.bar([x - 0.4 + width * (j + 0.5) for x in xs], vals, width=width,
                     color="tab:purple" if m == "kd" else "tab:red", hatch=hatch, alpha=0.85,
                     label=f"{label[m]}: Δ{k.rsplit('_', 1)[1]}")
            j += 1
    counts = {g: next((c.count for c in res.changes if c.group == g), 0) for g in groups}
    ax_d.set_xticks(xs, [f"{'regularization' if g == 'regularization' else 'other'} samples\n(n={counts[g]:,})"
                         for g in groups])
    ax_d.axhline(0, color="0.3", lw=0.8)
    ax_d.set(ylabel=f"mean change against CE ({_NATS})", title="Change against CE, by test-sample group")
    ax_d.legend(fontsize="small")
    reg = res.regularization
    caption = (f"{source}: {res.splits} students per method on the same disjoint splits. Left: Heskes "
               f"decomposition of the test cross-entropy. {error_bar_note(res.methods)} Right: mean per-sample change "
               f"against CE on regularization samples ({reg.count:,} of {reg.num_samples:,}: the CE students' "
               f"softened average puts more probability on the true class than the teacher at T = "
               f"{res.temperature:g}) and on the other test samples.")
    return save(fig, out, name, "Soft labels: bias and variance", caption, section="analysis")


def _temperature_sweep(res: TemperatureSweepResult, source: str, name: str, out: Path) -> Plot:
    from softlabels.stats import describe_correlation

    rows = res.per_temperature
    ts = [r.temperature for r in rows]
    fig, (ax_f, ax_a) = new_figure(ncols=2, width=5.2, height=4.2)
    for key, lab, marker in (("reg_fraction_mean", "mean over epochs", "o"), ("reg_fraction_last", "last epoch", "s")):
        vals = [100 * getattr(r, key) if getattr(r, key) is not None else float("nan") for r in rows]
        errs = [100 * (getattr(r, f"{key}_std") or 0.0) for r in rows]
        ax_f.errorbar(ts, vals, yerr=errs, marker=marker, capsize=3, label=lab)
    for key, lab, marker in (("last_top1", "last epoch", "o"), ("best_top1", "best epoch (chosen on test: optimistic)",
                                                                   "x")):
        vals = [getattr(r, key) if getattr(r, key) is not None else float("nan") for r in rows]
        errs = [getattr(r, f"{key}_std") or 0.0 for r in rows]
        ax_a.errorbar(ts, vals, yerr=errs, marker=marker, capsize=3, label=lab, ls="-" if key == "last_top1" else ":")
    for ax in (ax_f, ax_a):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ts, [f"{t:g}" for t in ts])
        ax.minorticks_off()
        ax.legend(fontsize="small")
    ax_f.set(xlabel="temperature T", ylabel="regularization samples (% of training samples)",
             title="Regularization share vs T (KD)")
    ax_f.set_ylim(bottom=0)
    ax_a.set(xlabel="temperature T", ylabel="test top-1 (%)", title="Accuracy vs T (KD)")
    n = sum(1 for r in rows if r.reg_fraction_mean is not None)
    c = res.answers.count_vs_temperature
    a = res.answers.accuracy_vs_count.across_temperatures
    seeds = f"seed{'s' if len(res.seeds) > 1 else ''} {', '.join(map(str, res.seeds))}"
    caption = (f"{source}: KD at {len(ts)} temperatures, {seeds}; bars: ± 1 "
               f"std over seeds (none with one seed). Spearman of the regularization share against T: "
               f"{describe_correlation(c.spearman, n)}; of last-epoch top-1 against the share: "
               f"{describe_correlation(a.spearman_last, n)}.")
    return save(fig, out, name, "Temperature sweep", caption, section="analysis")


def _filtering(res: FilteringResult, source: str, name: str, out: Path) -> Plot:
    fig, (ax, ax_r) = new_figure(ncols=2, width=5.2, height=4.2)
    arms = [a.arm for a in res.arms]
    names = {"kd": "KD (w ≡ 1)", "filter": "KD, regularization\nsamples filtered", "wsl": "WSL"}
    xs = list(range(len(arms)))
    colors = ["tab:blue", "tab:gray", "tab:red"]
    for key, ax_, scale, ylabel in (("last_top1", ax, 1.0, "last-epoch test top-1 (%)"),
                                    ("reg_fraction_last", ax_r, 100.0, "regularization samples, last epoch (%)")):
        means = [(getattr(a, f"{key}_mean") or 0.0) * scale for a in res.arms]
        stds = [(getattr(a, f"{key}_std") or 0.0) * scale for a in res.arms]
        for x, m, sd, c in zip(xs, means, stds, colors):
            if key == "last_top1":  # accuracy: points (a bar's baseline would be arbitrary)
                ax_.errorbar([x], [m], yerr=[sd], color=c, marker="D", ms=7, capsize=6, lw=2)
            else:
                ax_.bar([x], [m], yerr=[sd], capsize=4, color=c, alpha=0.8)
        for x, arm in zip(xs, arms):
            pts = [getattr(r, key) * scale for r in res.runs if r.arm == arm and getattr(r, key) is not None]
            ax_.scatter([x + 0.12] * len(pts), pts, color="black", s=14, zorder=3)
        ax_.set_xticks(xs, [names.get(a, a) for a in arms])
        ax_.set_xlim(-0.6, len(xs) - 0.4)
        ax_.set_ylabel(ylabel)
    ax.set_title("Accuracy per arm (mean ± std, dots: seeds)")
    ax_r.set_title("Regularization share per arm")
    m = res.methods.get("wsl", {})
    caption = (f"{source}: three arms of the wsl method with the same T = {m.get('temperature', '?')}, "
               f"α = {m.get('alpha', '?')} and seeds {', '.join(map(str, res.seeds))}; bars: mean ± 1 std over seeds, "
               "dots: single seeds. Last-epoch top-1 (final weights; the best epoch would have been chosen on the "
               "test set).")
    return save(fig, out, name, "Filtering regularization samples", caption, section="analysis")


_DRAW = {BiasVarianceResult: _bias_variance, SoftLabelBVResult: _soft_label_bv,
         TemperatureSweepResult: _temperature_sweep, FilteringResult: _filtering}


def analysis_plots(analyses: list[AnalysisFile], out: Path) -> tuple[list[Plot], list[str]]:
    """One figure per analysis result file (names ``analysis_<file stem>``)."""
    plots, notes, used = [], [], set()
    for a in analyses:
        stem, k = f"analysis_{_stem(a.path.stem)}", 2
        name = stem
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        plots.append(_DRAW[type(a.result)](a.result, a.path.name, name, out))
    return plots, notes

