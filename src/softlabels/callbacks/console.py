"""Built-in: one line per epoch on stderr through ``trainer.log`` (the "softlabels" logger).

On the main process it attaches a stderr handler to the logger for the life of the run (unless
one is attached already), so method messages (``Distiller.log``) show too.
"""
from __future__ import annotations

import logging
import sys

from softlabels.callbacks.base import Callback


class Console(Callback):
    order = 90

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._handler: logging.Handler | None = None

    def on_fit_start(self, trainer) -> None:
        log = trainer.log
        if trainer.dist.is_main and not any(getattr(h, "softlabels_console", False) for h in log.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.softlabels_console = True
            log.addHandler(handler)
            self._handler = handler

    def on_epoch_end(self, trainer, record: dict) -> None:
        if not trainer.dist.is_main:
            return
        r = record
        parts = [f"epoch {r['epoch']:>3}/{trainer.total_epochs}", f"loss {r['train_loss']:.4f}",
                 f"train {r['train_top1']:.2f}", f"test {r['test_top1']:.2f}"]
        if "val_top1" in r:
            parts.append(f"val {r['val_top1']:.2f}")
        if "reg_fraction" in r:
            parts.append(f"reg {100 * r['reg_fraction']:.1f}%")
        if r.get("images_per_s"):
            parts.append(f"{r['images_per_s']:.0f} img/s")
        trainer.log.info("  ".join(parts))

    def _detach(self, trainer) -> None:
        if self._handler is not None:
            self._handler.flush()
            trainer.log.removeHandler(self._handler)
            self._handler = None

    def on_fit_end(self, trainer, summary: dict) -> None:
        self._detach(trainer)

    def on_exception(self, trainer, exc: BaseException) -> None:
        self._detach(trainer)
