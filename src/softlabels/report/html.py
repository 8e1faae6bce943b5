"""One self-contained ``report.html``: figures as base64 PNG data URIs, tables, captions, inline CSS.

Nothing is fetched: a Content-Security-Policy forbids every network load, and every text taken from a
run folder goes through ``html.escape``. A tiny inline script counts the images that decoded
(``naturalWidth > 0``) into ``<body data-images-loaded>`` so a headless browser can check the page.
"""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape
from pathlib import Path

from softlabels.report import AnalysisSource, Run

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2330; background: #fafbfc; line-height: 1.45; }
main { max-width: 1360px; margin: 0 auto; padding: 1.2rem 1.6rem 3rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d8dde6; padding-bottom: .25rem; }
.meta { color: #5a6372; font-size: .9rem; }
.explain { background: #eef4fb; border-left: 4px solid #1f77b4; padding: .6rem 1rem; border-radius: 4px; }
.explain p { margin: .35rem 0; }
.notes { background: #fff8e6; border-left: 4px solid #e0a800; padding: .4rem 1rem; border-radius: 4px;
         font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; background: #fff; }
th, td { border: 1px solid #d8dde6; padding: .25rem .45rem; text-align: right; white-space: nowrap; }
th { background: #f0f2f6; } td.l, th.l { text-align: left; }
tbody tr:nth-child(even) td { background-color: #f8f9fb; }
figure { margin: 1.2rem 0 1.8rem; background: #fff; border: 1px solid #e2e6ed; border-radius: 6px;
         padding: .8rem; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: .9rem; color: #3a4250; margin-top: .5rem; }
figcaption a { color: #1f77b4; }
code { background: #eef0f4; padding: 0 .25rem; border-radius: 3px; font-size: .85em; }
#images-loaded { display: none; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(imgs.length);
  document.getElementById("images-loaded").textContent = ok + "/" + imgs.length;
});
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _num(v, fmt: str = "{:.2f}") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–"
    return fmt.format(v)


def _duration(s) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _text(v) -> str:
    return escape(str(v)) if v not in (None, "") else "–"


def _summary_table(runs: list[Run]) -> str:
    head = ["Run", "Method", "Student", "Teacher", "T", "Dataset", "Best top-1 (epoch)", "Last top-1",
            "Best top-5", "Last top-5", "Epochs", "Wall time", "Images/s", "Reg. samples"]
    rows = []
    for r in runs:
        epochs = r.stat("epochs")
        total = r.summary.get("total_epochs")
        ep = _text(epochs) if total in (None, epochs) else f"{_text(epochs)}/{_text(total)}"
        best_epoch = r.stat("best_epoch")
        best = _num(r.stat("best_top1")) + (f" ({_text(best_epoch)})" if best_epoch is not None else "")
        last_reg = r.last_with("reg_fraction")
        reg = _num(100 * last_reg["reg_fraction"], "{:.1f}%") if last_reg and isinstance(
            last_reg["reg_fraction"], (int, float)) else "–"
        cells = [
            f'<td class="l" title="{escape(str(r.path))}"><b>{escape(r.label)}</b></td>',
            f'<td class="l">{_text(r.method)}</td>',
            f'<td class="l">{_text(r.student)}</td>',
            f'<td class="l">{_text(r.teacher)}</td>',
            f"<td>{_num(r.temperature, '{:g}')}</td>",
            f'<td class="l">{_text(r.summary.get("dataset") or (r.config.get("data") or {}).get("name"))}</td>',
            f"<td>{best}</td>",
            f"<td>{_num(r.stat('last_top1'))}</td>",
            f"<td>{_num(r.stat('best_top5'))}</td>",
            f"<td>{_num(r.stat('last_top5'))}</td>",
            f"<td>{ep}</td>",
            f"<td>{_duration(r.summary.get('wall_time_s'))}</td>",
            f"<td>{_num(r.summary.get('images_per_s'), '{:.0f}')}</td>",
            f"<td>{reg}</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ths = "".join(f'<th class="l">{h}</th>' if i < 4 or h == "Dataset" else f"<th>{h}</th>" for i, h in enumerate(head))
    return (f'<div class="scroll"><table id="summary"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _per_class_table(runs: list[Run]) -> str:
    """Rows: classes; columns: distillation runs; cells: % regularization samples at the last epoch."""
    cols = []
    for r in runs:
        row = r.last_with("reg_fraction_per_class")
        vals = row.get("reg_fraction_per_class") if row else None
        if isinstance(vals, list) and vals:
            cols.append((r, row.get("epoch"), vals))
    if not cols:
        return ""
    n_classes = max(len(v) for _, _, v in cols)
    head = '<th class="l">class</th>' + "".join(
        f'<th title="{escape(str(r.path))}">{escape(r.label)}<br><small>{escape(r.kind)}, epoch {_text(ep)}</small></th>'
        for r, ep, _ in cols)
    body = []
    for c in range(n_classes):
        cells = [f'<td class="l">{c}</td>']
        for _, _, vals in cols:
            v = vals[c] if c < len(vals) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                a = max(0.0, min(1.0, float(v)))
                cells.append(f'<td style="background-color: rgba(31,119,180,{0.08 + 0.6 * a:.2f})">{100 * v:.1f}%</td>')
            else:
                cells.append("<td>–</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    means = ['<td class="l"><b>all</b></td>']
    for r, _, _ in cols:
        last = r.last_with("reg_fraction")
        means.append(f"<td><b>{_num(100 * last['reg_fraction'], '{:.1f}%') if last else '–'}</b></td>")
    return (f'<div class="scroll"><table id="per-class"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}<tr>{''.join(means)}</tr></tbody></table></div>")


def _analysis_tables(analyses: list[AnalysisSource]) -> str:
    parts = []
    for src in analyses:
        rows = "".join(
            f'<tr><td class="l">{escape(e.label)}</td>'
            + "".join(f"<td>{_num(e.values.get(k), '{:.4g}')}</td>" for k in ("bias", "variance", "risk"))
            + "</tr>"
            for e in src.entries)
        more = f" (first {len(src.entries)} entries only)" if src.truncated else ""
        parts.append(f'<p class="meta">{escape(str(src.path))}{more}</p><div class="scroll"><table class="analysis">'
                     '<thead><tr><th class="l">group</th><th>bias</th><th>variance</th><th>risk</th></tr></thead>'
                     f"<tbody>{rows}</tbody></table></div>")
    return "".join(parts)


def _figure(plot) -> str:
    data = base64.b64encode(plot.png.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{escape(plot.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{escape(plot.title)}"><figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)} '
            f'<a href="{escape(plot.svg.name)}">SVG</a> · <a href="{escape(plot.png.name)}">PNG</a></figcaption>'
            "</figure>")


_EXPLAIN = """
<div class="explain">
<p><b>Regularization samples.</b> A training sample is a <i>regularization sample</i> when the student
already puts more probability on the true class y than the teacher's soft label does,
p<sub>s</sub><sup>T</sup>(y) &gt; p<sub>t</sub><sup>T</sup>(y) at temperature T. On such a sample the
soft-label loss pulls the student <i>away</i> from the true class: it lowers variance but adds bias
(Zhou et al., ICLR 2021). Every distillation run counts them each epoch, at its own T and at T = 1.</p>
<p><b>WSL weight.</b> Weighted Soft Labels scale each sample's soft-label loss by
w = 1 − exp(−CE<sub>student</sub> / CE<sub>teacher</sub>) (hard-label cross-entropies at T = 1, no
gradient): w is small on regularization samples, where the student beats the teacher, and close to 1
where the teacher is much better. The weights are recorded for plain KD runs too, where they are not
applied.</p>
</div>
"""


def render_html(runs: list[Run], analyses: list[AnalysisSource], plots: list, *, notes: list[str] | None = None,
                title: str | None = None) -> str:
    """The report page as a string."""
    title = title or f"softlabels report: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    all_notes = [n for r in runs for n in r.notes] + list(notes or [])
    main_figs = [p for p in plots if not p.name.startswith("bias_variance")]
    bv_figs = [p for p in plots if p.name.startswith("bias_variance")]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>",
        '<body data-images-loaded="0" data-images-total="0"><main>',
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {now} by <code>softlabels report</code> from '
        f"{len(runs)} run folder(s) and {len(analyses)} analysis file(s).</p>",
        _EXPLAIN,
    ]
    if runs:
        parts += ["<h2>Runs</h2>", _summary_table(runs),
                  '<p class="meta">Best top-1 is at the epoch chosen by the run (validation top-1 when the run '
                  "had a validation split, else test top-1); top-1/top-5 in %. Reg. samples: share of "
                  "regularization samples in the last epoch (distillation runs). Hover a run name for its "
                  "folder.</p>"]
    if all_notes:
        parts.append('<div class="notes"><b>Notes</b><ul>' + "".join(f"<li>{escape(n)}</li>" for n in all_notes)
                     + "</ul></div>")
    if main_figs:
        parts.append("<h2>Training</h2>")
        parts += [_figure(p) for p in main_figs]
    per_class = _per_class_table(runs)
    if per_class:
        parts += ["<h2>Regularization samples per class</h2>",
                  '<p class="meta">Share of each class\'s training samples that were regularization samples '
                  "(p<sub>s</sub><sup>T</sup>(y) &gt; p<sub>t</sub><sup>T</sup>(y) at the run's T) in the last "
                  "epoch; darker is more. Classes by index.</p>", per_class]
    if analyses:
        parts.append("<h2>Bias and variance</h2>")
        parts += [_figure(p) for p in bv_figs]
        parts.append(_analysis_tables(analyses))
    parts += ['<p id="images-loaded"></p>', "</main>", f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_html(runs: list[Run], analyses: list[AnalysisSource], plots: list, out: Path, *,
               notes: list[str] | None = None, title: str | None = None) -> Path:
    """Write ``out/report.html`` (atomically) and return its path."""
    path = Path(out) / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(runs, analyses, plots, notes=notes, title=title), encoding="utf-8")
    tmp.replace(path)
    return path
