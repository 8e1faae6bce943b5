"""``train.log``: everything the console shows, kept in the run folder.

The :class:`LogFile` callback runs first (``order`` 0): at ``on_fit_start`` it attaches a file
handler to the ``softlabels`` logger (and hooks ``warnings.showwarning`` for the life of the run,
so Python warnings of any library are shown as usual and also kept). Every line the console
prints -- the start-of-run header, warnings, the epoch lines, the final summary or the
interruption notice -- is also appended to ``<run folder>/train.log`` with a time stamp. Records logged between the construction of the
callbacks and ``on_fit_start`` (the Trainer's checks of the run folder) are held and written
first. A resumed run appends below a separator line.
Only the main process writes under torchrun. ``--quiet`` quiets the console, not the file.

The handler is detached by :func:`close_run_log`, which the console callback calls after it has
printed the final summary (it runs after every other callback); without a console callback the
next run's ``on_fit_start`` or the end of the process closes it.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

from softlabels.callbacks.base import Callback

LOGGER_NAME = "softlabels"
FILE_ONLY = "file_only"  # a record with this attribute set goes to train.log only (e.g. an error the CLI prints)


def message_text(record: logging.LogRecord) -> str:
    """A record as the console shows it: the message, ``warning: ...`` / ``error: ...`` above INFO."""
    text = record.getMessage()
    return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


class _FileFormatter(logging.Formatter):
    """``2026-12-01 02:10:11 <the console text>``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} {message_text(record)}"


class _RunLogHandler(logging.FileHandler):
    """Appends to train.log."""


_open: list[tuple] = []  # (handler, the warnings.showwarning it replaced, its replacement)


def _separator(path: Path, trainer) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if trainer.start_epoch > 0:
        what = f"resumed after epoch {trainer.start_epoch}/{trainer.total_epochs}"
    elif path.is_file() and path.stat().st_size > 0:
        what = "started again"
    else:
        return f"===== run {trainer.exp.name} started {stamp} =====\n"
    return f"\n===== run {trainer.exp.name} {what} {stamp} =====\n"


def open_run_log(trainer) -> _RunLogHandler:
    """Attach a train.log handler for ``trainer``'s run folder (closing any left open)."""
    close_run_log()
    path = Path(trainer.run_dir.path) / "train.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = _separator(path, trainer)
    handler = _RunLogHandler(path, mode="a", encoding="utf-8")
    handler.stream.write(header)
    handler.setFormatter(_FileFormatter())
    handler.setLevel(logging.INFO)
    log = logging.getLogger(LOGGER_NAME)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    previous = warnings.showwarning

    def show_and_keep(message, category, filename, lineno, file=None, line=None):
        """Python warnings of any library: shown as usual, and written to train.log."""
        previous(message, category, filename, lineno, file, line)
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, None, None))

    warnings.showwarning = show_and_keep
    _open.append((handler, previous, show_and_keep))
    return handler


def close_run_log() -> None:
    """Detach and close every train.log handler this module opened (restoring ``warnings.showwarning``)."""
    while _open:
        handler, previous, ours = _open.pop()
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        if warnings.showwarning is ours:
            warnings.showwarning = previous
        handler.close()


class _StartupBuffer(logging.Handler):
    """Holds the records logged between the callbacks' construction and ``on_fit_start`` (the
    Trainer's checks of the run folder, e.g. "starting it over"), for train.log."""

    LIMIT = 200

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            self.records.append(record)


_startup: list[_StartupBuffer] = []


def _take_startup_records() -> list[logging.LogRecord]:
    records = []
    while _startup:
        buffer = _startup.pop()
        logging.getLogger(LOGGER_NAME).removeHandler(buffer)
        records = buffer.records + records
    return records


class LogFile(Callback):
    """Built-in: writes the run's console text to ``<run folder>/train.log`` (main process only)."""

    order = 0  # first, so that every other callback's start-of-run output is in the file

    def __init__(self, params=None) -> None:
        super().__init__(params)
        _take_startup_records()  # a Trainer built earlier but never run
        buffer = _StartupBuffer()
        logging.getLogger(LOGGER_NAME).addHandler(buffer)
        _startup.append(buffer)

    def on_fit_start(self, trainer) -> None:
        records = _take_startup_records()
        if trainer.dist.is_main:
            handler = open_run_log(trainer)
            for record in records:
                handler.handle(record)

    def on_exception(self, trainer, exc: BaseException) -> None:
        _take_startup_records()
