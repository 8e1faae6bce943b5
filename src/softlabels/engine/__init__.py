"""Training engine: the Trainer, evaluation, checkpoints, schedules and metric files."""
from softlabels.engine.trainer import Trainer, evaluate, experiment_from_run, run_or_resume, train

__all__ = ["Trainer", "evaluate", "experiment_from_run", "run_or_resume", "train"]
