"""The report's training figures, one line per run group: mean over seeds with a ± std band, n in the legend.

``make_plots`` returns the figures in report order with captions, and notes on the figures it left out.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib import rc_context

from softlabels.report.analysis_plots import analysis_plots
from softlabels.report.figures import (
    STYLE,
    Plot,
    epoch_axis,
    many_entries_height,
    new_figure,
    palette,
    place_legend,
    save,
)
from softlabels.report.groups import RunGroup, band
from softlabels.report.loaders import AnalysisFile

MAX_WSL_PANELS = 6


def _entry(g: RunGroup) -> str:
    return f"{g.label}, n={g.n}"


def _curve(ax, g: RunGroup, key: str, *, scale: float = 1.0, ls: str = "-", label: str | None = None,
           with_band: bool = True) -> int:
    """Mean ± std of ``key`` per epoch over the group's runs; returns the last epoch drawn (0: nothing)."""
    epochs, means, stds, _ = band(r.series(key) for r in g.runs)
    if not epochs:
        return 0
    m = [scale * v for v in means]
    marker = "o" if len(epochs) <= 25 else None
    ax.plot(epochs, m, color=g.color, ls=ls, marker=marker, ms=3.5, lw=1.6, label=label)
    if with_band and g.n > 1:
        lo = [a - scale * s for a, s in zip(m, stds)]
        hi = [a + scale * s for a, s in zip(m, stds)]
        if len(epochs) == 1:
            ax.errorbar(epochs, m, yerr=[[m[0] - lo[0]], [hi[0] - m[0]]], color=g.color, capsize=4, ls="none")
        else:
            ax.fill_between(epochs, lo, hi, color=g.color, alpha=0.18, lw=0)
    return epochs[-1]


def accuracy_figure(groups: list[RunGroup]):
    fig, (ax,) = new_figure(width=9.0, height=many_entries_height(len(groups) + 1))
    n, last = 0, 0
    val_drawn = False
    for g in groups:
        e = _curve(ax, g, "test_top1", label=_entry(g))
        if e:
            n += 1
            last = max(last, e)
        if _curve(ax, g, "val_top1", ls=":", with_band=False):
            val_drawn = True
    if not n:
        return None
    if val_drawn:
        ax.plot([], [], color="0.4", ls=":", label="dotted: validation top-1")
        n += 1
    ax.set(xlabel="epoch", ylabel="test top-1 accuracy (%)")
    fig.suptitle("Test accuracy per epoch (mean ± std over seeds)")
    epoch_axis(ax, last)
    place_legend(fig, ax, n)
    return fig


def loss_figure(groups: list[RunGroup]):
    fig, (ax_tr, ax_te) = new_figure(ncols=2, width=5.2, height=many_entries_height(len(groups) + 4, 4.2))
    last = {"train": 0, "test": 0}
    positive = {"train": True, "test": True}
    for g in groups:
        for ax, key, tag in ((ax_tr, "train_loss", "train"), (ax_te, "test_loss", "test")):
            e = _curve(ax, g, key, label=_entry(g) if tag == "test" else None)
            if e:
                last[tag] = max(last[tag], e)
                positive[tag] &= all(v > 0 for r in g.runs for v in r.series(key)[1])
    if not (last["train"] or last["test"]):
        return None
    ax_tr.set(xlabel="epoch", ylabel="training loss (the method's total, nats)", title="Training loss")
    ax_te.set(xlabel="epoch", ylabel="test cross-entropy (nats)", title="Test loss")
    for ax, tag in ((ax_tr, "train"), (ax_te, "test")):
        if last[tag]:
            epoch_axis(ax, last[tag])
            if positive[tag]:
                ax.set_yscale("log")
        else:
            ax.set_visible(False)
    n = sum(1 for g in groups if g.runs[0].series("test_loss")[0])
    if n:
        fig.legend(*ax_te.get_legend_handles_labels(), loc="outside lower center", ncol=min(2, n), fontsize="small")
    return fig


def reg_fraction_figure(groups: list[RunGroup]):
    reg = [g for g in groups if any(r.has_regularization for r in g.runs)]
    if not reg:
        return None
    fig, (ax,) = new_figure(width=9.0, height=many_entries_height(len(reg)))
    last, n = 0, 0
    for g in reg:
        last = max(last, _curve(ax, g, "reg_fraction", scale=100, label=_entry(g)))
        n += 1
    ax.set(xlabel="epoch", ylabel="regularization samples (% of training samples)")
    fig.suptitle("Regularization samples per epoch, at each run's T (mean ± std over seeds)")
    ax.set_ylim(bottom=0)
    epoch_axis(ax, last)
    place_legend(fig, ax, n)
    return fig


def temperature_figure(groups: list[RunGroup]):
    """Regularization share (last epoch) and last-epoch top-1 against T, one line per method; None unless
    distillation groups at two or more temperatures exist."""
    reg = [g for g in groups if g.temperature is not None and any(r.has_regularization for r in g.runs)]
    if len({g.temperature for g in reg}) < 2:
        return None
    fig, (ax_f, ax_a) = new_figure(ncols=2, width=5.2, height=4.2)
    temp_key = ("method", "temperature")
    series: dict[str, list[RunGroup]] = defaultdict(list)  # one line per configuration apart from T
    for g in reg:
        series[g.method_label(without=(temp_key,))].append(g)
    series = {k: gs for k, gs in series.items() if len({g.temperature for g in gs}) >= 2}
    if not series:
        return None
    colors = dict(zip(series, palette(len(series))))
    for name, gs in series.items():
        pts_f, pts_a = defaultdict(list), defaultdict(list)
        for g in gs:
            for r in g.runs:
                _, y = r.series("reg_fraction")
                if y:
                    pts_f[g.temperature].append(100 * y[-1])
                v = r.stat("last_top1")
                if isinstance(v, (int, float)):
                    pts_a[g.temperature].append(float(v))
        for ax, pts in ((ax_f, pts_f), (ax_a, pts_a)):
            ts = sorted(pts)
            if not ts:
                continue
            means = [sum(pts[t]) / len(pts[t]) for t in ts]
            errs = [(sum((v - m) ** 2 for v in pts[t]) / (len(pts[t]) - 1)) ** 0.5 if len(pts[t]) > 1 else 0.0
                    for t, m in zip(ts, means)]
            ax.errorbar(ts, means, yerr=errs, color=colors[name], marker="o", capsize=3,
                        label=f"{name}, n per T: {'/'.join(str(len(pts[t])) for t in ts)}")
    all_ts = sorted({g.temperature for gs in series.values() for g in gs})
    for ax in (ax_f, ax_a):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ts, [f"{t:g}" for t in all_ts])
        ax.minorticks_off()
    if len(series) > 3:
        fig.legend(*ax_f.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small")
    else:
        ax_a.legend(fontsize="small")
    ax_f.set(xlabel="temperature T", ylabel="regularization samples, last epoch (%)", title="Regularization share vs T")
    ax_a.set(xlabel="temperature T", ylabel="last-epoch test top-1 (%)", title="Accuracy vs T")
    ax_f.set_ylim(bottom=0)
    return fig


def _hist(row: dict | None) -> list[float] | None:
    h = (row or {}).get("wsl_weight_hist")
    if isinstance(h, list) and h and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in h):
        return [float(v) for v in h]
    return None


def wsl_weight_figure(groups: list[RunGroup]) -> tuple[object, int]:
    """Last-epoch WSL weight histograms (mean share over seeds) per group; (figure or None, groups left out)."""
    gs = [g for g in groups if any(_hist(row) for r in g.runs for row in r.rows)]
    if not gs:
        return None, 0
    gs.sort(key=lambda g: not g.method.startswith("wsl"))  # WSL groups first
    shown, left = gs[:MAX_WSL_PANELS], max(0, len(gs) - MAX_WSL_PANELS)
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=4.2, height=3.2)
    for ax, g in zip(axes, shown):
        shares = []
        for r in g.runs:
            h = _hist(next((row for row in reversed(r.rows) if _hist(row)), None))
            if h:
                total = sum(h) or 1.0
                shares.append([100 * v / total for v in h])
        k = len(shares[0])
        mean = [sum(s[i] for s in shares) / len(shares) for i in range(k)]
        ax.stairs(mean, [i / k for i in range(k + 1)], fill=True, color=g.color, alpha=0.75)
        ax.set(xlim=(0, 1), xlabel="WSL weight w", ylabel="% of training samples")
        ax.set_title(f"{g.label}, n={g.n}", fontsize="small")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(r"WSL weights $w = 1 - \exp(-\mathrm{CE}_s / \mathrm{CE}_t)$ in the last epoch (mean over seeds)")
    return fig, left


def make_plots(groups: list[RunGroup], analyses: list[AnalysisFile], out: Path) -> tuple[list[Plot], list[str]]:
    """Draw every figure the data allow into ``out``; return them and notes on the ones left out."""
    for g, c in zip(groups, palette(len(groups))):
        g.color = c
    plots: list[Plot] = []
    notes: list[str] = []
    with rc_context(STYLE):
        fig = accuracy_figure(groups)
        if fig is not None:
            plots.append(save(fig, out, "accuracy", "Accuracy",
                              "Test top-1 per epoch, mean over the seeds of each configuration with a ± 1 std band "
                              "(n = number of runs); dotted: validation top-1 when the runs have a validation split."))
        fig = loss_figure(groups)
        if fig is not None:
            plots.append(save(fig, out, "loss", "Loss",
                              "Left: the training objective (the method's weighted sum of loss terms, so its scale "
                              "differs between methods). Right: cross-entropy on the test set. Mean ± std over seeds."))
        fig = reg_fraction_figure(groups)
        if fig is not None:
            plots.append(save(fig, out, "reg_fraction", "Regularization samples",
                              "Share of training samples whose student already puts more probability on the true "
                              "class than the teacher's soft label (p_s(y) > p_t(y), both softened at the run's T): "
                              "there the soft-label loss pulls the student away from the true class."))
        elif groups:
            notes.append("No regularization-sample plots: no run has reg_fraction in its metrics "
                         "(only distillation runs record it).")
        fig = temperature_figure(groups)
        if fig is not None:
            plots.append(save(fig, out, "temperature", "Temperature",
                              "Left: share of regularization samples in the last epoch against T. Right: last-epoch "
                              "test top-1 against T (final weights, no epoch selection). Points: mean over the runs "
                              "at that T, bars: ± 1 std over them (none for a single run)."))
        elif any(r.has_regularization for g in groups for r in g.runs):
            ts = sorted({g.temperature for g in groups if g.temperature is not None})
            notes.append("No plot against temperature: it needs one configuration (method and other settings) "
                         f"at two or more temperatures (found T = {', '.join(f'{t:g}' for t in ts) or 'unknown'}).")
        fig, left = wsl_weight_figure(groups)
        if fig is not None:
            plots.append(save(fig, out, "wsl_weights", "WSL weights",
                              "Distribution of the per-sample WSL weight w in the last epoch (hard-label "
                              "cross-entropies of student and teacher at T = 1). w is small where the student "
                              "already fits a sample better than the teacher and near 1 where the teacher is much "
                              "better; it is recorded for every distillation run, also for KD, where it is not "
                              "applied."))
            if left:
                notes.append(f"WSL weight histograms: {left} more configuration(s) not drawn "
                             f"(the first {MAX_WSL_PANELS}, WSL first, are shown).")
        a_plots, a_notes = analysis_plots(analyses, out)
        plots += a_plots
        notes += a_notes
    return plots, notes
