#!/usr/bin/env python
"""Regenerate the results reports, JSON and figures of the benchmark plans from their logs alone.

v1 (configs/reproduce/fashion_mnist.yaml): docs/results/fashion_mnist.json, docs/results/fashion_mnist_v1.md and
the temperature plot, from the committed run folders under results/fashion_mnist (byte for byte).
v2 (configs/reproduce/fashion_mnist_v2.yaml, when results/fashion_mnist_v2 exists): docs/results.md,
docs/results/fashion_mnist_v2.json and its figures. Trains nothing; the same as `softlabels reproduce PLAN --collect`.

    python scripts/regenerate_results.py [PLAN ...]
"""
import os
import sys
from pathlib import Path

from softlabels.reproduce import load_plan
from softlabels.reproduce.collect import write_results

PLANS = ["configs/reproduce/fashion_mnist.yaml", "configs/reproduce/fashion_mnist_v2.yaml"]

if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)  # the plans' paths are relative to the repository root
    for plan_path in sys.argv[1:] or PLANS:
        plan = load_plan(plan_path)
        if not sys.argv[1:] and not Path(plan.output_dir).is_dir():
            print(f"{plan_path}: no run folders under {plan.output_dir} yet; skipped", file=sys.stderr)
            continue
        write_results(plan, log=lambda m: print(m, file=sys.stderr))
