"""Training engine: the Trainer, evaluation, checkpoints, the run folder, schedules and optimizers.

Names are imported lazily, so ``softlabels.engine.optim`` / ``run_dir`` can be used by methods and
tools without importing the Trainer (and everything it imports).
"""
from __future__ import annotations

__all__ = ["RunDir", "Trainer", "evaluate", "experiment_from_run", "run_or_resume", "train"]


def __getattr__(name: str):
    if name == "RunDir":
        from softlabels.engine.run_dir import RunDir

        return RunDir
    if name in ("Trainer", "experiment_from_run", "run_or_resume", "train"):
        from softlabels.engine import trainer

        return getattr(trainer, name)
    if name == "evaluate":
        from softlabels.engine.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'softlabels.engine' has no attribute {name!r}")
