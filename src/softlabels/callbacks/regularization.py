"""Built-in: regularization-sample and WSL-weight statistics, and the per-sample dump.

Runs only when the method has a logit temperature (``method.temperature``; a combination uses its
first component's) and a teacher: the statistics are counted at that temperature and at T = 1
(``softlabels.analysis.regularization``). Feature methods without a temperature (FitNet, AT, ...)
get no ``reg_*`` fields rather than numbers at an arbitrary T.
"""
from __future__ import annotations

from softlabels.callbacks.base import Callback
from softlabels.engine.distributed import all_reduce_sum


class RegularizationStats(Callback):
    """Feeds ``trainer.tracker`` every training step and adds its epoch summary to the record."""

    order = 20

    def on_epoch_start(self, trainer, epoch: int) -> None:
        trainer.tracker.reset()

    def on_train_batch_end(self, trainer, step_output, batch: tuple) -> None:
        if step_output.teacher_logits is not None:
            _, targets, indices = batch
            trainer.tracker.update(step_output.logits, step_output.teacher_logits, targets, indices)

    def on_epoch_end(self, trainer, record: dict) -> None:
        record.update(trainer.tracker.summary(lambda t: all_reduce_sum(t, trainer.dist)))


class PerSampleDump(Callback):
    """``runtime.per_sample_dump``: per_sample/epoch_NNNN.pt with every sample's p_s, p_t, weight and
    regularization flag (one file per process under torchrun: epoch_NNNN.rankR.pt)."""

    order = 25

    def on_epoch_end(self, trainer, record: dict) -> None:
        from softlabels.engine.checkpoint import save_atomic

        folder = trainer.run_dir.path / "per_sample"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.dist.rank}" if trainer.dist.enabled else ""
        epoch = record["epoch"]
        save_atomic({"epoch": epoch, **trainer.tracker.sample_table()}, folder / f"epoch_{epoch:04d}{suffix}.pt")
