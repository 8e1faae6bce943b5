"""``softlabels report``: the subcommand's arguments; the work is in ``softlabels.report``.

Kept free of matplotlib imports so that building the CLI parser stays fast.
"""
from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Plots (PNG and SVG) and one self-contained report.html from run folders written by `softlabels train`:
accuracy and loss curves, regularization samples per epoch and per class, regularization fraction and best
top-1 against the temperature, WSL weight histograms, and bias/variance/risk bars from any analysis JSON
found in the folders given. A folder that holds run folders (e.g. runs/demo) stands for all of them.
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
                   help="run folders, folders of run folders, or analysis folders / JSON files (bias, variance, risk)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: report/ next to the first run folder, i.e. RUN_DIR/../report)")
    p.add_argument("--title", default=None, help="page title (default: 'softlabels report: N runs')")
    p.set_defaults(func=_cmd_report)
    return p
