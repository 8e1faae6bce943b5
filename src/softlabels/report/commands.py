"""``softlabels report``: the subcommand's arguments; the work is in ``softlabels.report``.

Kept free of matplotlib imports so that building the CLI parser stays fast.
"""
from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Figures (PNG at 150 dpi and SVG) and one self-contained report.html from run folders written by
`softlabels train` and results written by `softlabels analyze`. Runs that differ only in their seed are one
configuration, drawn as mean ± std over its seeds with n in the legend: accuracy and loss curves,
regularization samples per epoch and per class (class names when the dataset has them), regularization
share and last-epoch top-1 against the temperature, WSL weight histograms; each analysis result gets its
own figure and table. A folder that holds run folders at any depth (e.g. results/fashion_mnist) stands for
all of them. When a run chose its best epoch on the test set (no validation split) the page says so.
"""


def _cmd_report(args) -> int:
    from softlabels.report import build_report

    html = build_report(args.paths, args.out, title=args.title)
    print(html)
    print(f"report: open {html} in a browser (plots as PNG and SVG next to it)", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``report`` on the CLI's subparsers."""
    p = sub.add_parser(
        "report",
        help="plots and a self-contained HTML report from run folders",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR",
                   help="run folders, folders holding run folders, or analysis results (JSON of `softlabels analyze`)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: report/ next to the first run folder, i.e. RUN_DIR/../report)")
    p.add_argument("--title", default=None, help="page title (default: 'softlabels report: N runs')")
    p.set_defaults(func=_cmd_report)
    return p
