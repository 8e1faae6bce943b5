"""Built-in: the method's per-epoch diagnostics and run-folder artifacts (``Distiller`` hooks)."""
from __future__ import annotations

from softlabels.callbacks.base import Callback


class MethodHooks(Callback):
    """on_epoch_end: ``record.update(method.diagnostics())`` (every process), then each of
    ``method.artifacts()`` written as JSON into the run folder (main process)."""

    order = 10

    def on_epoch_end(self, trainer, record: dict) -> None:
        record.update(trainer.method.diagnostics())
        if trainer.dist.is_main:
            for name, obj in trainer.method.artifacts().items():
                trainer.run_dir.write_json(name, obj)
