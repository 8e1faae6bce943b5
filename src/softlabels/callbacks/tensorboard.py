"""TensorBoard logger (``loggers: [tensorboard]``; needs ``pip install 'softlabels[tensorboard]'``).

Writes event files to ``<run folder>/tensorboard`` (or ``log_dir``) through
``torch.utils.tensorboard``: every scalar of the epoch record at step = epoch (1-based; names in
:mod:`softlabels.callbacks.tracking`), the WSL weight histogram as a histogram, and the resolved
config as text. View with ``tensorboard --logdir <run folder>``. A resumed run appends to the same
folder; steps after the resumed epoch written by the interrupted process are dropped.
"""
from __future__ import annotations

from pathlib import Path

from softlabels.callbacks.base import Callback, CallbackParams, register_logger
from softlabels.callbacks.tracking import epoch_histograms, require, trainer_scalars


class TensorBoardParams(CallbackParams):
    log_dir: str | None = None
    """Event-file folder; default ``<run folder>/tensorboard``."""
    flush_secs: int = 30
    """How often (s) pending events are written; the file is flushed at every epoch end anyway."""


@register_logger("tensorboard")
class TensorBoardLogger(Callback):
    """Scalars per epoch and the WSL weight histogram to TensorBoard (main process only)."""

    order = 200  # after every callback that adds fields to the epoch record
    Params = TensorBoardParams

    def __init__(self, params: TensorBoardParams | None = None) -> None:
        super().__init__(params)
        require("tensorboard", logger="tensorboard", extra="tensorboard")
        self.writer = None

    def log_dir(self, trainer) -> Path:
        return Path(self.params.log_dir) if self.params.log_dir else Path(trainer.run_dir.path) / "tensorboard"

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        from softlabels.config import to_yaml

        resumed = trainer.start_epoch > 0
        self.writer = SummaryWriter(str(self.log_dir(trainer)), flush_secs=self.params.flush_secs,
                                    purge_step=trainer.start_epoch + 1 if resumed else None)
        if not resumed:
            self.writer.add_text("config", "```yaml\n" + to_yaml(trainer.exp) + "\n```", global_step=0)

    def on_epoch_end(self, trainer, record: dict) -> None:
        if self.writer is None:
            return
        step = int(record["epoch"])
        for tag, value in trainer_scalars(trainer, record).items():
            self.writer.add_scalar(tag, value, global_step=step)
        for tag, (counts, edges) in epoch_histograms(record).items():
            self._add_histogram(tag, counts, edges, step)
        self.writer.flush()

    def _add_histogram(self, tag: str, counts: list[float], edges: list[float], step: int) -> None:
        """A pre-binned histogram: bucket limits are the right edges of the bins."""
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        used = [i for i, c in enumerate(counts) if c > 0]
        self.writer.add_histogram_raw(
            tag,
            min=edges[used[0]], max=edges[used[-1] + 1], num=sum(counts),
            sum=sum(c * x for c, x in zip(counts, centres)),
            sum_squares=sum(c * x * x for c, x in zip(counts, centres)),
            bucket_limits=edges[1:], bucket_counts=counts, global_step=step,
        )

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_fit_end(self, trainer, summary: dict) -> None:
        self._close()

    def on_exception(self, trainer, exc: BaseException) -> None:
        self._close()
