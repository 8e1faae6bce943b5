"""Built-in: ``best.pt`` when the epoch is the best so far, ``last.pt`` every ``runtime.checkpoint_every``
epochs and after the last one (main process).

Order inside an epoch: best.pt, then last.pt, then (MetricFiles, later) the metrics row, so a kill
at any moment leaves a folder whose last.pt covers every row of metrics.jsonl but possibly one,
which ``last.pt`` carries (``record``) and a resume restores. Before any write the student's and
auxiliary modules' parameters and buffers are checked: a NaN/inf stops the run
(NonFiniteLossError) and the kept checkpoints stay the last good ones.
"""
from __future__ import annotations

from softlabels.callbacks.base import Callback


class Checkpointer(Callback):
    order = 50

    def on_epoch_end(self, trainer, record: dict) -> None:
        if not trainer.dist.is_main:
            return
        epoch = record["epoch"]
        improved = trainer.best["epoch"] == epoch
        due = epoch % trainer.exp.runtime.checkpoint_every == 0 or epoch == trainer.total_epochs
        if not (improved or due):
            return
        trainer.check_finite_state(epoch, "best.pt" if improved else "last.pt")
        if improved:
            trainer.run_dir.save_checkpoint(trainer.weights_state(record), "best")
        if due:
            trainer.run_dir.save_checkpoint(trainer.full_state(record), "last")
