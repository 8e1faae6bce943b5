#!/usr/bin/env python
"""Regenerate docs/results/fashion_mnist.json, docs/results.md and the temperature plot from the logs alone.

Reads the committed run folders under results/fashion_mnist (summary.json, metrics.jsonl, the teachers'
best.pt for their sha256); trains nothing. Same as `softlabels reproduce PLAN --collect`.

    python scripts/regenerate_results.py [PLAN]
"""
import sys
from pathlib import Path

from softlabels.reproduce import load_plan
from softlabels.reproduce.collect import write_results

if __name__ == "__main__":
    plan_path = sys.argv[1] if len(sys.argv) > 1 else "configs/reproduce/fashion_mnist.yaml"
    root = Path(__file__).resolve().parent.parent
    import os

    os.chdir(root)  # the plan's paths are relative to the repository root
    write_results(load_plan(plan_path), log=lambda m: print(m, file=sys.stderr))
