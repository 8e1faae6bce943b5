"""Figure plumbing shared by the report's plots: Agg canvas (no pyplot), style, saving PNG (150 dpi) + SVG."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 150
STYLE = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
         "font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8.5, "svg.hashsalt": "softlabels"}


@dataclass
class Plot:
    name: str  # file stem: NAME.png, NAME.svg
    title: str
    caption: str
    png: Path
    svg: Path
    section: str = "training"  # "training" or "analysis"


def palette(n: int) -> list:
    base = list(rcParams["axes.prop_cycle"].by_key()["color"])
    if n <= len(base):
        return base
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2):
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def epoch_axis(ax, last_epoch: int) -> None:
    """Integer epoch ticks; a short run (1-3 epochs) gets a half-epoch margin instead of a 0.95-1.05 axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if last_epoch <= 3:
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.set_xticks(range(1, last_epoch + 1))


def legend(ax, n_entries: int, *, outside: bool | None = None) -> None:
    """Inside the axes for a few entries, outside on the right for many."""
    if not n_entries:
        return
    if outside is None:
        outside = n_entries > 6
    if not outside:
        ax.legend(framealpha=0.85)
    else:
        ax.legend(fontsize="small", ncol=1 if n_entries <= 22 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  framealpha=0.85)


def many_entries_height(n_entries: int, base: float = 4.6) -> float:
    """Figure height (inches) leaving room for a legend of ``n_entries`` in two columns below the axes."""
    return base if n_entries <= 10 else base + 0.19 * -(-n_entries // 2)


def place_legend(fig, ax, n_entries: int) -> None:
    """Inside the axes for up to 4 entries, on the right for up to 10, in two columns below for more."""
    if n_entries > 10:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small")
    else:
        legend(ax, n_entries, outside=n_entries > 4)


def save(fig: Figure, out: Path, name: str, title: str, caption: str, section: str = "training") -> Plot:
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return Plot(name, title, caption, png, svg, section)
