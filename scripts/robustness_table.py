#!/usr/bin/env python
"""Top-1 under common corruptions for groups of runs (e.g. with and without InfoDrop), mean over seeds.

    python scripts/robustness_table.py --out docs/results/infodrop_corruptions \
        --group "student=results/fashion_mnist/resnet20-resnet8/student/default" \
        --group "student + InfoDrop=results/fashion_mnist/resnet20-resnet8/student_infodrop/default"

Each group folder holds run folders (seed0, seed1, ...); each run's best.pt (weights at the epoch chosen on
the validation split) is evaluated on the clean test set and on every default corruption at severities 1-5
(`softlabels eval RUN --corruptions` does the same for one run). Writes OUT.json (every number) and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from softlabels.evaluate import evaluate_checkpoint
from softlabels.stats import mean_std


def _mean_std(values: list[float]) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {}
    for spec in args.group:
        label, _, folder = spec.partition("=")
        runs = sorted(p for p in Path(folder).iterdir() if (p / "best.pt").is_file()) if Path(folder).is_dir() else []
        if not runs:
            print(f"robustness_table: no run folders with best.pt under {folder}", file=sys.stderr)
            return 2
        results[label] = []
        for run in runs:
            res = evaluate_checkpoint(run, device=args.device, corruptions=[])
            res["run_dir"] = str(run)
            results[label].append(res)
            print(f"{label} {run.name}: clean {res['top1']:.2f}", file=sys.stderr, flush=True)
    names = list(next(iter(results.values()))[0]["corruptions"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| Runs | seeds | clean | " + " | ".join(names) + " | mean corrupted |",
             "|---|---|---|" + "---|" * (len(names) + 1)]
    for label, runs in results.items():
        per_name = {n: [statistics.mean(r["corruptions"][n].values()) for r in runs] for n in names}
        overall = [statistics.mean(per_name[n][i] for n in names) for i in range(len(runs))]
        lines.append(f"| {label} | {len(runs)} | {_mean_std([r['top1'] for r in runs])} | "
                     + " | ".join(_mean_std(per_name[n]) for n in names) + f" | {_mean_std(overall)} |")
    text = ("Top-1 (%) on the test set, clean and under each corruption (mean over severities 1-5), "
            "mean ± std over seeds.\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
