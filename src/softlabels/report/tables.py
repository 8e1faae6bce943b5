"""The report's HTML tables: one row per run group (seeds aggregated), per-run details, per-class shares,
and the tables of the analysis results. Every text taken from a run folder goes through ``html.escape``."""
from __future__ import annotations

from html import escape

from softlabels.analysis.results import BiasVarianceResult, FilteringResult, SoftLabelBVResult, TemperatureSweepResult
from softlabels.report.groups import RunGroup
from softlabels.report.loaders import AnalysisFile, is_number

__all__ = ["analysis_table", "class_names", "group_table", "per_class_table", "run_details"]

TEST_MARK = "†"


def num(v, fmt: str = "{:.2f}") -> str:
    return fmt.format(v) if is_number(v) else "–"


def pm(mean, std, fmt: str = "{:.2f}") -> str:
    if not is_number(mean):
        return "–"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if is_number(std) else "")


def duration(s) -> str:
    if not is_number(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def text(v) -> str:
    return escape(str(v)) if v not in (None, "") else "–"


def class_names(dataset: str | None, n: int) -> list[str]:
    """The dataset's class names when it has them (e.g. Fashion-MNIST), else the indices."""
    names: tuple = ()
    if dataset:
        import importlib

        try:
            names = tuple(getattr(importlib.import_module(f"softlabels.data.{dataset}"), "CLASS_NAMES", ()))
        except Exception:  # no such module: indices
            names = ()
    return [names[c] if c < len(names) else str(c) for c in range(n)]


def _table(table_id: str, head: list[str], rows: list[list[str]], left: int = 1) -> str:
    ths = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(rows_cell(i, c, left) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>'


def rows_cell(i: int, cell: str, left: int) -> str:
    """Left-aligned text columns (the first one wraps), right-aligned numbers."""
    if i == 0:
        return f'<td class="l w">{cell}</td>'
    return f'<td class="l">{cell}</td>' if i < left else f"<td>{cell}</td>"


def group_table(groups: list[RunGroup]) -> str:
    """One row per configuration: top-1 mean ± std over its seeds, n, epochs, time, regularization share."""
    rows = []
    for g in groups:
        best = pm(*g.stats("best_top1")[:2]) + (f" {TEST_MARK}" if g.best_on_test else "")
        reg = []
        for r in g.runs:
            row = r.last_with("reg_fraction")
            if row and is_number(row["reg_fraction"]):
                reg.append(100 * row["reg_fraction"])
        reg_m = sum(reg) / len(reg) if reg else None
        epochs = sorted({r.stat("epochs") for r in g.runs if r.stat("epochs") is not None})
        walls = [r.summary.get("wall_time_s") for r in g.runs if is_number(r.summary.get("wall_time_s"))]
        rows.append([
            f'<b>{escape(g.method_label())}</b>', escape(g.pair), str(g.n),
            escape(", ".join(str(s) for s in g.seeds)), best, pm(*g.stats("last_top1")[:2]),
            "/".join(str(e) for e in epochs) or "–", duration(sum(walls) / len(walls) if walls else None),
            num(reg_m, "{:.1f}%"),
        ])
    head = ["Configuration", "Pair", "n", "Seeds", "Best top-1 (%)", "Last top-1 (%)", "Epochs",
            "Time per run", "Reg. samples"]
    return _table("summary", head, rows, left=2)


def run_details(groups: list[RunGroup]) -> str:
    """Every run: folder, seed, best top-1 with its epoch and how it was chosen, last top-1."""
    rows = []
    for g in groups:
        for r in g.runs:
            chosen = "test set " + TEST_MARK if r.best_on_test else "validation"
            rows.append([f'<span title="{escape(str(r.path))}">{escape(r.label)}</span>', escape(g.label),
                         text(r.summary.get("seed", r.config.get("seed"))),
                         f"{num(r.stat('best_top1'))} (epoch {text(r.stat('best_epoch'))})", chosen,
                         num(r.stat("last_top1"))])
    head = ["Run", "Configuration", "Seed", "Best top-1 (%)", "Best chosen on", "Last top-1 (%)"]
    return _table("runs", head, rows, left=2)


def per_class_table(groups: list[RunGroup]) -> str:
    """Rows: configurations; columns: classes (names when the dataset has them); cells: % regularization
    samples in the last epoch, mean over seeds."""
    rows, n_classes, dataset = [], 0, None
    for g in groups:
        per_run = []
        for r in g.runs:
            row = r.last_with("reg_fraction_per_class")
            vals = row.get("reg_fraction_per_class") if row else None
            if isinstance(vals, list) and vals and all(is_number(v) for v in vals):
                per_run.append(vals)
                dataset = dataset or r.dataset
        if per_run:
            k = min(len(v) for v in per_run)
            n_classes = max(n_classes, k)
            rows.append((g, [sum(v[c] for v in per_run) / len(per_run) for c in range(k)]))
    if not rows:
        return ""
    names = class_names(dataset, n_classes)
    body = []
    for g, vals in rows:
        cells = [f'<td class="l"><b>{escape(g.label)}</b>, n={g.n}</td>']
        for c in range(n_classes):
            v = vals[c] if c < len(vals) else None
            if is_number(v):
                a = max(0.0, min(1.0, float(v)))
                cells.append(f'<td style="background-color: rgba(31,119,180,{0.06 + 0.6 * a:.2f})">{100 * v:.1f}</td>')
            else:
                cells.append("<td>–</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    head = '<th class="l">Configuration</th>' + "".join(f"<th>{escape(n)}</th>" for n in names)
    return (f'<table id="per-class" class="dense"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def analysis_table(a: AnalysisFile) -> str:
    """The numbers behind an analysis figure."""
    res = a.result
    if isinstance(res, BiasVarianceResult):
        head = ["Model", "Width", "Parameters", "Models", "Bias (nats)", "Variance (nats)", "Risk (nats)",
                "MSE bias²", "MSE variance", "Member top-1 (%)", "Ensemble top-1 (%)"]
        rows = [[escape(m.name), text(m.width), num(m.parameters, "{:,.0f}"), str(m.num_models),
                 pm(m.bias, m.bias_sem, "{:.3f}"), pm(m.variance, m.variance_sem, "{:.3f}"),
                 pm(m.risk, m.risk_sem, "{:.3f}"), num(m.mse_bias2, "{:.3f}"), num(m.mse_variance, "{:.3f}"),
                 pm(m.member_top1_mean, m.member_top1_std), num(m.ensemble_top1)] for m in res.models]
        return _table("bv-" + a.path.stem, head, rows)
    if isinstance(res, SoftLabelBVResult):
        head = ["Students", "Models", "Bias (nats)", "Variance (nats)", "Risk (nats)", "Member top-1 (%)",
                "Ensemble top-1 (%)"]
        rows = [[escape(m.name), str(m.num_models), pm(m.bias, m.bias_sem, "{:.3f}"),
                 pm(m.variance, m.variance_sem, "{:.3f}"), pm(m.risk, m.risk_sem, "{:.3f}"),
                 pm(m.member_top1_mean, m.member_top1_std), num(m.ensemble_top1)] for m in res.methods]
        head2 = ["Method", "Test samples", "Count", "Mean Δbias", "Mean Δvariance", "Bias up", "Variance down",
                 "Both"]
        rows2 = [[escape(c.method), escape(c.group), f"{c.count:,}", num(c.mean_delta_bias, "{:+.3f}"),
                  num(c.mean_delta_variance, "{:+.3f}"), num(100 * c.frac_bias_up if is_number(c.frac_bias_up)
                                                             else None, "{:.0f}%"),
                  num(100 * c.frac_variance_down if is_number(c.frac_variance_down) else None, "{:.0f}%"),
                  num(100 * c.frac_bias_up_variance_down if is_number(c.frac_bias_up_variance_down) else None,
                      "{:.0f}%")] for c in res.changes]
        return _table("slbv-" + a.path.stem, head, rows) + _table("slbv-changes-" + a.path.stem, head2, rows2, left=2)
    if isinstance(res, TemperatureSweepResult):
        head = ["T", "Runs", "Reg. samples, mean over epochs", "Reg. samples, last epoch", "Last top-1 (%)",
                "Best top-1 (%) " + TEST_MARK]
        rows = [[f"{r.temperature:g}", str(r.runs), pm(_pct(r.reg_fraction_mean), _pct(r.reg_fraction_mean_std),
                                                       "{:.1f}"),
                 pm(_pct(r.reg_fraction_last), _pct(r.reg_fraction_last_std), "{:.1f}"), pm(r.last_top1, r.last_top1_std),
                 pm(r.best_top1, r.best_top1_std)] for r in res.per_temperature]
        return _table("ts-" + a.path.stem, head, rows)
    if isinstance(res, FilteringResult):
        head = ["Arm", "Seeds", "Last top-1 (%)", "Best top-1 (%) " + TEST_MARK, "Reg. samples, last epoch (%)"]
        rows = [[escape(x.arm), str(x.n), pm(x.last_top1_mean, x.last_top1_std), pm(x.best_top1_mean, x.best_top1_std),
                 pm(_pct(x.reg_fraction_last_mean), _pct(x.reg_fraction_last_std), "{:.1f}")] for x in res.arms]
        return _table("filter-" + a.path.stem, head, rows)
    return ""


def _pct(v):
    return 100 * v if is_number(v) else None
