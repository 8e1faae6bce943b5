"""The run summary (summary.json) built from a Trainer and its metrics.jsonl."""
from __future__ import annotations

import math

from softlabels.engine.env import environment
from softlabels.models.base import count_parameters


def best_test_metrics(best_row: dict, last_row: dict) -> dict:
    """{"top1", "top5"} test metrics (%) of the best-validation weights: from the best epoch's row, or, when that
    epoch was not tested (``runtime.test_eval: at_end``), from the ``best_test_*`` fields of the last row."""
    top1 = best_row.get("test_top1")
    if isinstance(top1, (int, float)) and not isinstance(top1, bool) and math.isfinite(top1):
        return {"top1": top1, "top5": best_row.get("test_top5")}
    return {"top1": last_row.get("best_test_top1"), "top5": last_row.get("best_test_top5")}


def run_summary(trainer, wall: float, images_per_s: float | None) -> dict:
    """summary.json of a run: best/last top-1/top-5 from metrics.jsonl, sizes, teacher, wall time, environment."""
    rows = trainer.run_dir.metrics()
    last = rows[-1] if rows else {}
    best_row = next((r for r in rows if r["epoch"] == trainer.best["epoch"]), {})
    if images_per_s is None:
        rates = [r["images_per_s"] for r in rows if r.get("images_per_s")]
        images_per_s = sum(rates) / len(rates) if rates else None
    best_test = best_test_metrics(best_row, last)
    return {
        "name": trainer.exp.name,
        "method": trainer.exp.method.name,
        "student": trainer.exp.student.name,
        "student_parameters": count_parameters(trainer.method.student),
        "auxiliary_parameters": sum(p.numel() for p in trainer.method.auxiliary.parameters()),
        "teacher": trainer.teacher_info,
        "dataset": trainer.data.info.name,
        "epochs": last.get("epoch", 0),
        "total_epochs": trainer.total_epochs,
        "best_epoch": trainer.best["epoch"],
        "best_selected_by": trainer.best.get("selected_by", "test_top1"),
        "best_selected_on_test_set": trainer.data.val is None,
        "best_selection_note": None if trainer.data.val is not None else (
            "no validation split: the best epoch was chosen on the test set, so best_top1 is optimistic"),
        "best_top1": best_test["top1"],
        "best_top5": best_test["top5"],
        "best_val_top1": best_row.get("val_top1"),
        "last_top1": last.get("test_top1"),
        "last_top5": last.get("test_top5"),
        "wall_time_s": wall,
        "images_per_s": images_per_s,
        "seed": trainer.exp.seed,
        "environment": environment(trainer.device),
    }
