"""The run summary (summary.json) built from a Trainer and its metrics.jsonl."""
from __future__ import annotations

from softlabels.engine.env import environment
from softlabels.models.base import count_parameters


def run_summary(trainer, wall: float, images_per_s: float | None) -> dict:
    """summary.json of a run: best/last top-1/top-5 from metrics.jsonl, sizes, teacher, wall time, environment."""
    rows = trainer.run_dir.metrics()
    last = rows[-1] if rows else {}
    best_row = next((r for r in rows if r["epoch"] == trainer.best["epoch"]), {})
    if images_per_s is None:
        rates = [r["images_per_s"] for r in rows if r.get("images_per_s")]
        images_per_s = sum(rates) / len(rates) if rates else None
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
        # runtime.test_eval at_end: the best weights' test metrics sit on the last row as best_test_*
        "best_top1": best_row.get("test_top1", last.get("best_test_top1")),
        "best_top5": best_row.get("test_top5", last.get("best_test_top5")),
        "best_val_top1": best_row.get("val_top1"),
        "last_top1": last.get("test_top1"),
        "last_top5": last.get("test_top5"),
        "wall_time_s": wall,
        "images_per_s": images_per_s,
        "seed": trainer.exp.seed,
        "environment": environment(trainer.device),
    }
