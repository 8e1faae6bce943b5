"""Built-in: the epoch's row appended to metrics.jsonl (flushed to disk) and metrics.csv rewritten
(main process), after the checkpoint that covers the epoch."""
from __future__ import annotations

from softlabels.callbacks.base import Callback


class MetricFiles(Callback):
    order = 60

    def on_epoch_end(self, trainer, record: dict) -> None:
        if trainer.dist.is_main:
            trainer.run_dir.append_metrics(record)
            trainer.run_dir.write_csv()
