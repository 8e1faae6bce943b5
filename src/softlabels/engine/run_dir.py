"""``RunDir``: the one reader and writer of a run folder.

A run folder (``<output_dir>/<name>/``) holds::

    config.yaml      the resolved Experiment (written when the run starts)
    metrics.jsonl    one row per finished epoch (written after the checkpoint that covers it)
    metrics.csv      the flat scalar columns of metrics.jsonl
    last.pt          full training state (every ``runtime.checkpoint_every`` epochs and the last one)
    best.pt          student weights at the best epoch
    summary.json     written when the run ends
    train.log        console text of the run (the logging callbacks)
    .lock            advisory lock held for the life of a run (never deleted)

Everything else in the package (analysis, reproduce, report, demo, evaluate) reads run folders
through this class, so "finished" and "damaged" mean one thing everywhere.
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softlabels import io
from softlabels.errors import CheckpointError, ConfigError, UserError

if TYPE_CHECKING:
    from softlabels.config import Experiment

LOCK_NAME = ".lock"


class RunDir:
    """Paths, readers and atomic writers of one run folder (which need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_file = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def csv_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def last_path(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    # ---------------------------------------------------------------- state
    def exists(self) -> bool:
        return self.path.is_dir()

    def is_run(self) -> bool:
        """True when the folder holds a run's config.yaml (a run started here)."""
        return self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.last_path.is_file()

    def contents(self) -> list[str]:
        """Names in the folder, leaving out the lock and ``.*.tmp`` leftovers of killed writes."""
        if not self.exists():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp")))

    def clean_tmp(self) -> list[str]:
        """Delete ``.*.tmp`` leftovers of writes cut by a kill (here and in per_sample/); returns their names."""
        removed = []
        for folder in (self.path, self.path / "per_sample"):
            if folder.is_dir():
                for p in folder.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                    removed.append(p.name)
        return removed

    # ---------------------------------------------------------------- readers
    def raw_config(self) -> dict:
        """config.yaml as a mapping (ConfigError naming the file when missing or damaged)."""
        from softlabels.config import read_yaml

        if not self.config_path.is_file():
            raise CheckpointError(f"{self.path} is not a run folder (no config.yaml)")
        try:
            return read_yaml(self.config_path, kind="run config")
        except UnicodeDecodeError:
            raise ConfigError(f"run config {self.config_path} is not UTF-8 text; the file is damaged") from None

    def config(self) -> Experiment:
        """The validated Experiment of config.yaml (errors name the file)."""
        from softlabels.config import validate_config

        return validate_config(self.raw_config(), str(self.config_path))

    def metrics(self) -> list[dict]:
        """metrics.jsonl rows ([] when absent; stops at a line cut by a kill)."""
        return io.read_jsonl(self.metrics_path)

    def summary(self) -> dict | None:
        """summary.json, or None when the run has not ended (UserError naming the file if damaged)."""
        if not self.summary_path.is_file():
            return None
        data = io.read_json(self.summary_path, what="run summary")
        if not isinstance(data, dict):
            raise UserError(f"run summary {self.summary_path} is damaged (not a JSON object); delete it and resume")
        return data

    def is_finished(self, exp: Experiment | None = None) -> bool:
        """summary.json records all the run's epochs; with ``exp``, the run also asked for the same
        ``schedule.epochs`` (a longer schedule makes a finished run unfinished again)."""
        summary = self.summary()
        if summary is None or summary.get("epochs") is None or summary.get("epochs") != summary.get("total_epochs"):
            return False
        if exp is not None:
            saved = self.raw_config().get("schedule", {}) or {}
            if saved.get("epochs") != exp.schedule.epochs:
                return False
        return True

    def load_checkpoint(self, which: str = "last") -> dict:
        """``last.pt`` or ``best.pt`` loaded safely (``weights_only=True``), CheckpointError naming the file."""
        from softlabels.engine.checkpoint import load_checkpoint

        return load_checkpoint(self.last_path if which == "last" else self.best_path)

    # ---------------------------------------------------------------- writers
    def create(self) -> None:
        """Make the folder (and parents); one-line UserError when that is impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"cannot create run folder {self.path}: a file is in the way (is output_dir a file?); "
                            "choose another output_dir or name") from None
        except NotADirectoryError:
            raise UserError(f"cannot create run folder {self.path}: part of the path is a file "
                            "(is output_dir a file?); choose another output_dir") from None
        except PermissionError:
            raise UserError(f"cannot create run folder {self.path}: permission denied; choose a writable "
                            "output_dir") from None
        except OSError as exc:
            raise UserError(f"cannot create run folder {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"run folder {self.path} is not writable; choose a writable output_dir")

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomic ``<folder>/<name>`` JSON (indent 2, NaN/inf as null)."""
        path = self.path / name
        io.write_json(path, obj)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        io.atomic_write_text(path, text)
        return path

    def write_config(self, exp: Experiment) -> None:
        from softlabels.config import to_yaml

        io.atomic_write_text(self.config_path, to_yaml(exp))

    def append_metrics(self, row: dict) -> None:
        io.append_jsonl(self.metrics_path, row)

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from ``rows``."""
        io.write_jsonl(self.metrics_path, rows)
        io.write_csv(self.csv_path, rows)

    def write_csv(self) -> None:
        """metrics.csv from the current metrics.jsonl."""
        io.write_csv(self.csv_path, self.metrics())

    def save_checkpoint(self, state: dict, which: str = "last") -> Path:
        """Atomic ``last.pt`` / ``best.pt`` (temp file + rename)."""
        from softlabels.engine.checkpoint import save_atomic

        path = self.last_path if which == "last" else self.best_path
        save_atomic(state, path)
        return path

    # ---------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold an advisory lock (``fcntl.flock`` on ``.lock``) for the block; creates the folder.

        A second process that asks for the lock of the same folder gets a one-line UserError naming
        the folder and the holder's pid. The lock ends with the process, so a killed run never
        leaves a stale lock. Re-entrant within one RunDir object.
        """
        if self._lock_file is not None:
            yield self
            return
        self.create()
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks
            fcntl = None
        try:
            f = open(self.lock_path, "a+")
        except OSError as exc:
            raise UserError(f"cannot lock run folder {self.path}: {exc.strerror}; choose a writable output_dir") from None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                f.seek(0)
                holder = f.read().strip() or "?"
                f.close()
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise UserError(f"run folder {self.path} is in use by another run (pid {holder}); wait for it to "
                                    "finish or choose another name/output_dir") from None
                raise UserError(f"cannot lock run folder {self.path}: {exc.strerror}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f
        try:
            yield self
        finally:
            self._lock_file = None
            f.close()  # closing releases the flock
