"""One self-contained ``report.html``: figures as base64 PNG data URIs, tables, captions, inline CSS.

Nothing is fetched: a Content-Security-Policy forbids every network load, and every text taken from a
run folder goes through ``html.escape``. A small inline script records, on ``<body>``, how many images
decoded (``data-images-loaded`` / ``data-images-total``), the page's scroll width against the window's
(``data-scroll-width`` / ``data-client-width``) and the script errors or policy violations seen
(``data-errors``), so a headless browser can check the page.
"""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape
from pathlib import Path

from softlabels.report.figures import Plot
from softlabels.report.groups import RunGroup
from softlabels.report.loaders import AnalysisFile, Run
from softlabels.report.tables import TEST_MARK, analysis_table, group_table, per_class_table, run_details

_CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2330; background: #fafbfc; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 1.2rem 1.4rem 3rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d8dde6; padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
.meta { color: #5a6372; font-size: .9rem; }
.explain { background: #eef4fb; border-left: 4px solid #1f77b4; padding: .6rem 1rem; border-radius: 4px; }
.explain p { margin: .35rem 0; }
.notes { background: #fff8e6; border-left: 4px solid #e0a800; padding: .4rem 1rem; border-radius: 4px;
         font-size: .9rem; }
.warn { background: #fdecea; border-left: 4px solid #c62828; padding: .5rem 1rem; border-radius: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .86rem; background: #fff; margin: .4rem 0 1rem; max-width: 100%; }
th, td { border: 1px solid #d8dde6; padding: .22rem .4rem; text-align: right; }
td { white-space: nowrap; } td.w { white-space: normal; overflow-wrap: anywhere; }
#summary td.w, #runs td.w, #per-class td.w { min-width: 12rem; }
th { background: #f0f2f6; font-weight: 600; } td.l, th.l { text-align: left; }
table.dense { font-size: .8rem; } table.dense th { font-size: .76rem; }
tbody tr:nth-child(even) td { background-color: #f8f9fb; }
details summary { cursor: pointer; color: #1f77b4; margin: .3rem 0; }
figure { margin: 1.2rem 0 1.8rem; background: #fff; border: 1px solid #e2e6ed; border-radius: 6px;
         padding: .8rem; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: .9rem; color: #3a4250; margin-top: .5rem; }
figcaption a { color: #1f77b4; }
code { background: #eef0f4; padding: 0 .25rem; border-radius: 3px; font-size: .85em; }
#images-loaded { display: none; }
"""

_HEAD_SCRIPT = """
window.reportErrors = [];
window.addEventListener("error", function (e) { window.reportErrors.push(String(e.message || e.type)); }, true);
document.addEventListener("securitypolicyviolation", function (e) {
  window.reportErrors.push("CSP " + e.violatedDirective + " " + e.blockedURI); });
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var b = document.body, root = document.documentElement;
  b.dataset.imagesLoaded = String(ok);
  b.dataset.imagesTotal = String(imgs.length);
  b.dataset.scrollWidth = String(root.scrollWidth);
  b.dataset.clientWidth = String(root.clientWidth);
  b.dataset.errors = String(window.reportErrors.length);
  b.dataset.errorText = window.reportErrors.join(" | ");
  document.getElementById("images-loaded").textContent = ok + "/" + imgs.length;
});
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_EXPLAIN = """
<div class="explain">
<p><b>Regularization samples.</b> A training sample is a <i>regularization sample</i> when the student
already puts more probability on the true class y than the teacher's soft label does,
p<sub>s</sub>(y) &gt; p<sub>t</sub>(y), both softened at the run's temperature T. On such a sample the
soft-label loss pulls the student <i>away</i> from the true class: it lowers variance but adds bias
(Zhou et al., ICLR 2021). Every distillation run counts them each epoch, at its own T and at T = 1.</p>
<p><b>WSL weight.</b> Weighted Soft Labels scale each sample's soft-label loss by
w = 1 − exp(−CE<sub>student</sub> / CE<sub>teacher</sub>) (hard-label cross-entropies at T = 1, no
gradient): w is small on regularization samples and close to 1 where the teacher is much better.</p>
<p><b>Runs and seeds.</b> Runs whose configurations differ only in the seed are one configuration: curves
show the mean over its seeds with a ± 1 standard-deviation band, and n is the number of runs.</p>
</div>
"""


def _figure(plot: Plot) -> str:
    """The PNG inline, shown at 2/3 of its pixel size (sharp on high-density screens, not oversized)."""
    raw = plot.png.read_bytes()
    width = int.from_bytes(raw[16:20], "big") * 2 // 3
    data = base64.b64encode(raw).decode("ascii")
    return (f'<figure id="fig-{escape(plot.name)}"><img src="data:image/png;base64,{data}" width="{width}" '
            f'alt="{escape(plot.title)}"><figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)} '
            f'<a href="{escape(plot.svg.name)}">SVG</a> · <a href="{escape(plot.png.name)}">PNG</a></figcaption>'
            "</figure>")


def _test_selection_warning(runs: list[Run]) -> str:
    on_test = [r for r in runs if r.best_on_test]
    if not on_test:
        return ""
    who = "All runs" if len(on_test) == len(runs) else f"{len(on_test)} of {len(runs)} runs"
    return (f'<p class="warn"><b>Best epoch chosen on the test set.</b> {who} had no validation split, so their '
            f'"best" top-1 is the maximum over epochs of the test accuracy: optimistic, not a fair estimate '
            f"(marked {TEST_MARK}). Compare the last-epoch top-1, or train with <code>data.val_split</code> "
            "to choose the best epoch on held-out data.</p>")


def render_html(groups: list[RunGroup], analyses: list[AnalysisFile], plots: list[Plot], *,
                notes: list[str] | None = None, title: str | None = None) -> str:
    """The report page as a string."""
    runs = [r for g in groups for r in g.runs]
    title = title or f"softlabels report: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    all_notes = [n for r in runs for n in r.notes] + list(notes or [])
    datasets = sorted({str(r.dataset) for r in runs if r.dataset})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style><script>{_HEAD_SCRIPT}</script></head>",
        '<body data-images-loaded="0" data-images-total="0"><main>',
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {now} by <code>softlabels report</code> from '
        + ", ".join(([f"{len(runs)} run folder(s) in {len(groups)} configuration(s)"] if runs else [])
                    + ([f"{len(analyses)} analysis result(s)"] if analyses or not runs else []))
        + (f"; dataset: {escape(', '.join(datasets))}" if datasets else "") + ".</p>",
        _test_selection_warning(runs),
        _EXPLAIN if runs else "",
    ]
    if all_notes:
        parts.append('<div class="notes"><b>Notes</b><ul>' + "".join(f"<li>{escape(n)}</li>" for n in all_notes)
                     + "</ul></div>")
    if runs:
        parts += ["<h2>Runs</h2>", group_table(groups),
                  f'<p class="meta">One row per configuration; top-1 in %, mean ± sample std over its n runs. Best '
                  f"top-1 is at the epoch each run chose: on its validation split, or on the test set ({TEST_MARK}, "
                  "optimistic). Reg. samples: share of regularization samples in the last epoch (distillation "
                  "runs).</p>",
                  f"<details><summary>All {len(runs)} runs</summary>{run_details(groups)}</details>"]
    training = [p for p in plots if p.section == "training"]
    if training:
        parts.append("<h2>Training</h2>")
        parts += [_figure(p) for p in training]
    per_class = per_class_table(groups)
    if per_class:
        parts += ["<h2>Regularization samples per class</h2>",
                  '<p class="meta">Share (%) of each class\'s training samples that were regularization samples in '
                  "the last epoch, mean over seeds; darker is more.</p>", per_class]
    if analyses:
        parts.append("<h2>Analyses</h2>")
        by_file = {p.name: p for p in plots if p.section == "analysis"}
        names = [p.name for p in plots if p.section == "analysis"]
        for a, name in zip(analyses, names):
            parts += [f"<h3>{escape(by_file[name].title)} <small class=\"meta\">({escape(a.path.name)})</small></h3>",
                      _figure(by_file[name]), analysis_table(a)]
        if any(TEST_MARK in analysis_table(a) for a in analyses):
            parts.append(f'<p class="meta">{TEST_MARK} Best top-1 of runs without a validation split: the best epoch '
                         "was chosen on the test set (optimistic). The analyses answer with the last epoch.</p>")
    parts += ['<p id="images-loaded"></p>', "</main>", f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(groups: list[RunGroup], analyses: list[AnalysisFile], plots: list[Plot], out: Path, *,
               notes: list[str] | None = None, title: str | None = None) -> Path:
    """Write ``out/report.html`` (atomically) and return its path."""
    from softlabels.io import atomic_write_text

    path = Path(out) / "report.html"
    atomic_write_text(path, render_html(groups, analyses, plots, notes=notes, title=title))
    return path
