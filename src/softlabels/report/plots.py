"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no GUI, no global backend).

Each figure is written as ``NAME.png`` and ``NAME.svg``; ``make_plots`` returns them in report order
with a caption, and notes on the figures it left out (and why).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rc_context, rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from softlabels.report import AnalysisSource, Run

DPI = 110
_STYLE = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


@dataclass
class Plot:
    name: str  # file stem: NAME.png, NAME.svg
    title: str
    caption: str
    png: Path
    svg: Path


def _colors(n: int) -> list:
    base = list(rcParams["axes.prop_cycle"].by_key()["color"])
    if n <= len(base):
        return base
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2):
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _epoch_axis(*axes) -> None:
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax, n_entries: int) -> None:
    """Inside the axes for a few entries, outside on the right for many."""
    if not n_entries:
        return
    if n_entries <= 8:
        ax.legend(fontsize="small", framealpha=0.8)
    else:
        ax.legend(fontsize="x-small", ncol=1 if n_entries <= 24 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _hist(row: dict | None) -> list[float] | None:
    h = (row or {}).get("wsl_weight_hist")
    if isinstance(h, list) and h and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in h):
        return [float(v) for v in h]
    return None


def _save(fig: Figure, out: Path, name: str, title: str, caption: str) -> Plot:
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, format="png", metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return Plot(name, title, caption, png, svg)


def _style_proxy(ax, ls: str, label: str) -> None:
    """One gray legend entry standing for a line style, when per-run entries would be too many."""
    ax.plot([], [], color="0.4", ls=ls, label=label)


def accuracy_figure(runs: list[Run], colors: dict[str, object]) -> Figure | None:
    fig, (ax,) = _new_figure(width=7.5, height=4.6)
    compact = len(runs) > 4  # one legend entry per run, line styles explained once
    n = 0
    styles_used = set()
    for r in runs:
        c = colors[r.label]
        x, y = r.series("test_top1")
        if x:
            ax.plot(x, y, color=c, marker="o" if len(x) <= 30 else None, ms=3,
                    label=r.label if compact else f"{r.label} test")
            n += 1
        for key, ls, tag in (("train_top1", "--", "train"), ("val_top1", ":", "val")):
            x, y = r.series(key)
            if x:
                ax.plot(x, y, color=c, ls=ls, alpha=0.8, label=None if compact else f"{r.label} {tag}")
                n += 0 if compact else 1
                styles_used.add((ls, tag))
    if not n:
        return None
    if compact:
        for ls, tag in sorted(styles_used):
            _style_proxy(ax, ls, "dashed: train" if tag == "train" else "dotted: validation")
            n += 1
    ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Accuracy per epoch")
    _epoch_axis(ax)
    _legend(ax, n)
    return fig


def loss_figure(runs: list[Run], colors: dict[str, object]) -> Figure | None:
    fig, (ax_tr, ax_te) = _new_figure(ncols=2, width=5.6, height=4.4)
    n_tr = n_te = 0
    positive = {"train": True, "test": True}
    for r in runs:
        c = colors[r.label]
        for ax, key, tag in ((ax_tr, "train_loss", "train"), (ax_te, "test_loss", "test")):
            x, y = r.series(key)
            if x:
                ax.plot(x, y, color=c, label=r.label)
                positive[tag] &= all(v > 0 for v in y)
                if tag == "train":
                    n_tr += 1
                else:
                    n_te += 1
    if not (n_tr or n_te):
        return None
    ax_tr.set(xlabel="epoch", ylabel="loss", title="Training loss (the method's total)")
    ax_te.set(xlabel="epoch", ylabel="cross-entropy", title="Test loss (cross-entropy)")
    _epoch_axis(ax_tr, ax_te)
    if n_tr and positive["train"]:
        ax_tr.set_yscale("log")
    if n_te and positive["test"]:
        ax_te.set_yscale("log")
    _legend(ax_tr, n_tr)
    _legend(ax_te, n_te)
    return fig


def reg_fraction_figure(runs: list[Run], colors: dict[str, object]) -> Figure | None:
    reg = [r for r in runs if r.has_regularization]
    if not reg:
        return None
    fig, (ax,) = _new_figure(width=7.5, height=4.6)
    compact = len(reg) > 4
    n = 0
    t1_drawn = False
    for r in reg:
        c = colors[r.label]
        x, y = r.series("reg_fraction")
        ax.plot(x, [100 * v for v in y], color=c, marker="o" if len(x) <= 30 else None, ms=3,
                label=f"{r.label} ({r.kind})")
        n += 1
        x, y = r.series("reg_fraction_t1")
        if x:
            ax.plot(x, [100 * v for v in y], color=c, ls="--", alpha=0.8,
                    label=None if compact else f"{r.label} (at T=1)")
            n += 0 if compact else 1
            t1_drawn = True
    if compact and t1_drawn:
        _style_proxy(ax, "--", "dashed: same run at T=1")
        n += 1
    ax.set(xlabel="epoch", ylabel="regularization samples (% of training samples)",
           title=r"Regularization samples per epoch: $p_s^T(y) > p_t^T(y)$")
    ax.set_ylim(bottom=0)
    _epoch_axis(ax)
    _legend(ax, n)
    return fig


def temperature_figure(runs: list[Run], colors: dict[str, object]) -> Figure | None:
    """Regularization fraction and best top-1 against T, one line per method; None unless Ts differ."""
    reg = [r for r in runs if r.has_regularization and r.temperature is not None]
    if len({r.temperature for r in reg}) < 2:
        return None
    fig, (ax_f, ax_a) = _new_figure(ncols=2, width=5.6, height=4.4)
    by_method: dict[str, list[Run]] = defaultdict(list)
    for r in reg:
        by_method[r.method or "?"].append(r)
    method_colors = dict(zip(by_method, _colors(len(by_method))))
    n_f = n_a = 0
    for method, rs in by_method.items():
        c = method_colors[method]
        final: dict[float, list[float]] = defaultdict(list)
        mean: dict[float, list[float]] = defaultdict(list)
        top1: dict[float, list[float]] = defaultdict(list)
        for r in rs:
            _, y = r.series("reg_fraction")
            final[r.temperature].append(100 * y[-1])
            mean[r.temperature].append(100 * sum(y) / len(y))
            b = r.stat("best_top1")
            if isinstance(b, (int, float)):
                top1[r.temperature].append(float(b))
        ts = sorted(final)
        ax_f.plot(ts, [sum(final[t]) / len(final[t]) for t in ts], color=c, marker="o", label=f"{method}: last epoch")
        ax_f.plot(ts, [sum(mean[t]) / len(mean[t]) for t in ts], color=c, marker="x", ls="--",
                  label=f"{method}: mean over epochs")
        n_f += 2
        ts = sorted(top1)
        if ts:
            ax_a.plot(ts, [sum(top1[t]) / len(top1[t]) for t in ts], color=c, marker="o", label=method)
            for t in ts:  # individual runs (seeds) when several share a temperature
                if len(top1[t]) > 1:
                    ax_a.scatter([t] * len(top1[t]), top1[t], color=c, alpha=0.4, s=12)
            n_a += 1
    styles = [":", "-.", (0, (6, 2)), (0, (1, 3))]
    refs = [r for r in runs if r.temperature is None and r not in reg]
    for i, r in enumerate(refs):  # runs without a temperature (teacher, student alone): gray reference lines
        b = r.stat("best_top1")
        if isinstance(b, (int, float)):
            ax_a.axhline(float(b), color="0.35", ls=styles[i % len(styles)], lw=1.2,
                         label=f"{r.label} ({r.method or '?'})")
            n_a += 1
    all_ts = sorted({r.temperature for r in reg})
    if len(all_ts) <= 12:
        for ax in (ax_f, ax_a):
            ax.set_xticks(all_ts, [f"{t:g}" for t in all_ts])
    ax_f.set(xlabel="temperature T", ylabel="regularization samples (%)", title="Regularization fraction vs T")
    ax_a.set(xlabel="temperature T", ylabel="best top-1 (%)", title="Best top-1 vs T")
    ax_f.set_ylim(bottom=0)
    _legend(ax_f, n_f)
    _legend(ax_a, n_a)
    return fig


def wsl_weight_figure(runs: list[Run], colors: dict[str, object]) -> Figure | None:
    rs = [r for r in runs if any(_hist(row) for row in r.rows)]
    if not rs:
        return None
    ncols = min(3, len(rs))
    nrows = -(-len(rs) // ncols)
    fig, axes = _new_figure(ncols=ncols, nrows=nrows, width=4.4, height=3.4)
    for ax, r in zip(axes, rs):
        valid = [row for row in r.rows if _hist(row)]
        first, last = valid[0], valid[-1]
        c = colors[r.label]
        for row, is_last in ((last, True), (first, False)) if first is not last else ((first, True),):
            h = _hist(row)
            total = sum(h) or 1.0
            k = len(h)
            edges = [i / k for i in range(k + 1)]
            pct = [100 * v / total for v in h]
            label = f"epoch {row.get('epoch', '?')}"
            if is_last:  # last epoch: filled bars in the run's colour
                ax.stairs(pct, edges, fill=True, color=c, alpha=0.75, label=label)
            else:  # first epoch: black outline on top
                ax.stairs(pct, edges, color="black", lw=1.3, label=label)
            m = row.get("wsl_weight_mean")
            if isinstance(m, (int, float)):
                ax.axvline(m, color=c if is_last else "black", ls="--", lw=1.2)
        ax.set(xlim=(0, 1), xlabel="WSL weight w", ylabel="% of samples", title=f"{r.label} ({r.kind})")
        ax.title.set_fontsize("medium")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize="small")  # first epoch first
    for ax in axes[len(rs):]:
        ax.set_visible(False)
    fig.suptitle(r"WSL weights $w = 1 - \exp(-\mathrm{CE}_s / \mathrm{CE}_t)$, first and last epoch (dashed: mean)")
    return fig


def analysis_figure(src: AnalysisSource) -> Figure:
    entries = src.entries
    keys = [k for k in ("bias", "variance", "risk") if any(k in e.values for e in entries)]
    fig, (ax,) = _new_figure(width=max(5.0, min(14.0, 1.2 + 0.9 * len(entries) * len(keys) / 2)), height=4.4)
    width = 0.8 / len(keys)
    colors = dict(zip(("bias", "variance", "risk"), ("tab:blue", "tab:orange", "tab:green")))
    xs = list(range(len(entries)))
    for j, k in enumerate(keys):
        vals = [e.values.get(k, float("nan")) for e in entries]
        ax.bar([x - 0.4 + width * (j + 0.5) for x in xs], vals, width=width, color=colors[k], label=k)
    ax.set_xticks(xs, [e.label for e in entries], rotation=30 if len(entries) > 4 else 0,
                  ha="right" if len(entries) > 4 else "center", fontsize="small")
    ax.set(ylabel="mean", title=f"Bias, variance and risk: {src.path.name}")
    ax.legend(fontsize="small")
    return fig


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "analysis"


def make_plots(runs: list[Run], analyses: list[AnalysisSource], out: Path) -> tuple[list[Plot], list[str]]:
    """Draw every figure the data allow into ``out``; return them and notes on the ones left out."""
    palette = _colors(len(runs))
    colors = {r.label: palette[i % len(palette)] for i, r in enumerate(runs)}
    plots: list[Plot] = []
    notes: list[str] = []

    with rc_context(_STYLE):
        fig = accuracy_figure(runs, colors)
        if fig is not None:
            plots.append(_save(fig, out, "accuracy", "Accuracy",
                               "Test top-1 per epoch (solid), training top-1 on augmented batches (dashed) "
                               "and validation top-1 when the run has a validation split (dotted)."))
        fig = loss_figure(runs, colors)
        if fig is not None:
            plots.append(_save(fig, out, "loss", "Loss",
                               "Left: the training objective (the method's weighted sum of loss terms, so its "
                               "scale differs between methods). Right: cross-entropy on the test set."))
        fig = reg_fraction_figure(runs, colors)
        if fig is not None:
            plots.append(_save(fig, out, "reg_fraction", "Regularization samples",
                               "Share of training samples that are regularization samples, p_s^T(y) > p_t^T(y): "
                               "the student already puts more probability on the true class than the teacher's "
                               "soft label, so the soft-label loss pulls the student away from the true class. "
                               "Solid: at the run's temperature T; dashed: at T = 1."))
        else:
            notes.append("No regularization-sample plots: no run has reg_fraction in its metrics "
                         "(only distillation runs record it).")
        fig = temperature_figure(runs, colors)
        if fig is not None:
            plots.append(_save(fig, out, "temperature", "Temperature",
                               "Left: regularization fraction at each run's T, last epoch and mean over epochs, "
                               "one line per method (runs sharing a method and T are averaged). Right: best "
                               "top-1 against T; gray lines are runs without a temperature (teacher, student alone)."))
        elif any(r.has_regularization for r in runs):
            ts = sorted({r.temperature for r in runs if r.has_regularization and r.temperature is not None})
            notes.append("No plot against temperature: it needs distillation runs at two or more temperatures "
                         f"(found T = {', '.join(f'{t:g}' for t in ts) or 'unknown'}).")
        fig = wsl_weight_figure(runs, colors)
        if fig is not None:
            plots.append(_save(fig, out, "wsl_weights", "WSL weights",
                               "Distribution of the per-sample WSL weight w = 1 − exp(−CE_s / CE_t), with the "
                               "hard-label cross-entropies of student and teacher at T = 1, at the first epoch "
                               "(black outline) and the last (filled). w is small when the student already fits the sample "
                               "better than the teacher (a regularization sample) and near 1 when the teacher "
                               "is much better. It is recorded for every distillation run, also for plain KD, "
                               "where it is not applied."))
        used: set[str] = set()
        for src in analyses:
            stem = f"bias_variance_{_stem(src.path.stem)}" if src.path.stem != "bias_variance" else "bias_variance"
            name, k = stem, 2
            while name in used:
                name, k = f"{stem}_{k}", k + 1
            used.add(name)
            plots.append(_save(analysis_figure(src), out, name, f"Bias and variance: {src.path.name}",
                               f"From {src.path}: mean bias, variance and risk (expected loss) per model group. "
                               "Soft labels trade bias for variance; the WSL paper ties the extra bias to "
                               "regularization samples."))
    return plots, notes
