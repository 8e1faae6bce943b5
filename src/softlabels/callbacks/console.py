"""Console output of a run, all through the ``softlabels`` logger (so ``train.log`` holds it too).

What a run shows on stderr::

    start-of-run header     versions, device and threads, parameter counts, teacher and its recorded
                            test top-1, data sizes, run folder, the epoch a resumed run starts after
    warnings                e.g. no validation split: the best epoch is chosen on the test set
    per-epoch bar           (terminal only) kept on screen, live running means of the loss and the
                            training top-1 refreshed about every 0.5 s, img/s and the run-level ETA
    epoch line              one per epoch: loss, train/val/test top-1, regularization share, speed,
                            epoch time, ETA of the run, ``*`` on the best epoch so far
    final summary           best epoch and how it was chosen, last top-1, wall time, run folder

Not a terminal (CI, ``| tee``, a log file): no bar and no control characters, only lines.
``set_quiet(True)`` (``softlabels train --quiet``): warnings and errors only; ``train.log`` still
gets everything. Under torchrun only the main process prints (other ranks: warnings and errors,
prefixed with their rank).

The ``softlabels`` logger gets its own stderr handler unless the root logger already writes to
the terminal (then the records reach it by propagation, so nothing is shown twice, and the
root's handlers decide what is shown).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

from softlabels.callbacks.base import Callback
from softlabels.callbacks.log_file import FILE_ONLY, LOGGER_NAME, close_run_log, message_text

_settings = {"quiet": False}


# ----------------------------------------------------------------------------- logging set-up
class _ConsoleHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` through ``tqdm.write``, so a bar on screen stays below."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, FILE_ONLY, False):
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        text = message_text(record)
        return f"[rank {self.rank}] {text}" if self.rank else text


def _root_writes_to_terminal() -> bool:
    return any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout)
               for h in logging.getLogger().handlers)


def set_quiet(quiet: bool) -> None:
    """Console shows warnings and errors only (``--quiet``); ``train.log`` is not affected."""
    _settings["quiet"] = bool(quiet)
    setup_console()


def setup_console(rank: int = 0) -> logging.Logger:
    """The ``softlabels`` logger with its stderr handler (once per process); INFO, or WARNING when
    quiet or not the main process."""
    log = logging.getLogger(LOGGER_NAME)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    handler = next((h for h in log.handlers if isinstance(h, _ConsoleHandler)), None)
    if handler is None:
        if _root_writes_to_terminal():
            return log
        handler = _ConsoleHandler()
        log.addHandler(handler)
    handler.setFormatter(_ConsoleFormatter(rank))
    handler.setLevel(logging.WARNING if _settings["quiet"] or rank != 0 else logging.INFO)
    return log


# ----------------------------------------------------------------------------- text helpers
def duration(seconds: float | None) -> str:
    """45s, 3m05s, 2h07m."""
    if seconds is None or seconds != seconds:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def selection_warning(trainer) -> str | None:
    """The plain warning when the best epoch is chosen on the test set (no validation split)."""
    if trainer.data.val is not None:
        return None
    return ("no validation split (data.val_split: 0): the best epoch is chosen on the TEST set, so best_top1 "
            "is optimistic; set data.val_split for an honest choice")


def header_lines(trainer) -> list[str]:
    """The start-of-run header: what runs, where, on what."""
    from softlabels import __version__
    from softlabels.models.base import count_parameters

    exp, data, method = trainer.exp, trainer.data, trainer.method
    aux = sum(p.numel() for p in method.auxiliary.parameters())
    lines = [f"softlabels {__version__} · torch {torch.__version__} · run '{exp.name}' · method {exp.method.name} "
             f"· seed {exp.seed}"]
    dev = trainer.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    world = f" · {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
    lines.append(f"device {dev}{f' ({name})' if name else ''} · torch threads {torch.get_num_threads()}{world}"
                 f" · amp {exp.runtime.amp}")
    lines.append(f"student {exp.student.name}: {count_parameters(method.student):,} parameters"
                 f" · auxiliary modules: {aux:,} parameters")
    teacher = getattr(trainer, "teacher_info", None)
    if teacher:
        top1 = teacher.get("recorded_top1")
        recorded = f"recorded test top-1 {top1:.2f}%" if isinstance(top1, (int, float)) else "no recorded test top-1"
        lines.append(f"teacher {teacher['name']} ({teacher['checkpoint']}, sha256 {str(teacher.get('sha256'))[:12]}) · "
                     f"{recorded}")
    sizes = [f"train {data.train.num_samples:,}"]
    sizes.append(f"val {data.val.num_samples:,}" if data.val is not None else "val none")
    sizes.append(f"test {data.test.num_samples:,}")
    lines.append(f"data {data.info.name}: {' / '.join(sizes)} · batch {exp.data.batch_size} · "
                 f"{len(data.train)} steps per epoch · {trainer.total_epochs} epochs")
    where = f"run folder {trainer.run_dir.path}"
    if trainer.start_epoch > 0:
        where += f" · resumed after epoch {trainer.start_epoch}/{trainer.total_epochs}"
    lines.append(where)
    return lines


def epoch_line(record: dict, total_epochs: int, best_epoch: int | None, eta: float | None) -> str:
    r = record
    parts = [f"epoch {r['epoch']:>3}/{total_epochs}"]
    if "train_loss" in r:
        parts.append(f"loss {r['train_loss']:.4f}")
    if "train_top1" in r:
        parts.append(f"train {r['train_top1']:.2f}")
    if "val_top1" in r:
        parts.append(f"val {r['val_top1']:.2f}")
    if "test_top1" in r:  # absent on epochs skipped by runtime.test_eval: when_best
        parts.append(f"test {r['test_top1']:.2f}")
    if r.get("reg_fraction") is not None:
        parts.append(f"reg {100 * r['reg_fraction']:.1f}%")
    if r.get("images_per_s"):
        parts.append(f"{r['images_per_s']:.0f} img/s")
    if r.get("epoch_time_s") is not None:
        parts.append(duration(r["epoch_time_s"]))
    if r["epoch"] < total_epochs:
        parts.append(f"ETA {duration(eta)}")
    if best_epoch == r["epoch"]:
        parts.append("*best")
    return "  ".join(parts)


def summary_lines(summary: dict, run_path) -> list[str]:
    """The final summary printed (and kept in train.log) at the end of a run."""
    def pct(v):
        return f"{v:.2f}%" if isinstance(v, (int, float)) else "n/a"

    by = summary.get("best_selected_by") or "test_top1"
    chosen = "on the validation split" if by.startswith("val") else "on the TEST set (optimistic: no validation split)"
    best = (f"best test top-1 {pct(summary.get('best_top1'))} (top-5 {pct(summary.get('best_top5'))}) at epoch "
            f"{summary.get('best_epoch')}, chosen {chosen}")
    lines = [f"done: {summary.get('name')} · {summary.get('epochs')}/{summary.get('total_epochs')} epochs · {best}"]
    tail = f"last test top-1 {pct(summary.get('last_top1'))} · wall time {duration(summary.get('wall_time_s'))}"
    if summary.get("images_per_s"):
        tail += f" · {summary['images_per_s']:.0f} img/s"
    lines.append(tail + f" · run folder {run_path}")
    return lines


# ----------------------------------------------------------------------------- the bar
class _EpochBar:
    """A tqdm bar for one epoch with running means kept on the device (read about every 0.5 s)."""

    REFRESH_S = 0.5

    def __init__(self, desc: str, steps: int, device: torch.device) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr, disable=None,
                        mininterval=self.REFRESH_S, unit="step")
        self.sums = torch.zeros(2, device=device)  # loss * n, correct (float32: MPS has no float64)
        self.seen = 0
        self.last_refresh = 0.0

    @property
    def shown(self) -> bool:
        return not self.bar.disable

    def step(self, step_output, targets: torch.Tensor, eta: float | None) -> None:
        n = targets.numel()
        loss = sum(t.detach().float() for t in step_output.terms.values())
        correct = (step_output.logits.detach().argmax(1) == targets).sum()
        self.sums += torch.stack([loss * n, correct.float()])  # stays on the device: no sync per step
        self.seen += n
        now = time.perf_counter()
        last = self.bar.n + 1 >= self.bar.total
        if now - self.last_refresh >= self.REFRESH_S or last:
            (loss_sum, hits), seen = self.sums.tolist(), self.seen  # the only host sync, about twice a second
            self.bar.set_postfix_str(f"loss {loss_sum / max(seen, 1):.4f} · train {100 * hits / max(seen, 1):.2f}%"
                                     f" · run ETA {duration(eta)}", refresh=False)
            self.last_refresh = now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- the callback
class Console(Callback):
    """Built-in: header, per-epoch bar, epoch lines, final summary and the interruption notice."""

    order = 90  # after the callbacks that fill the epoch record

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.bar: _EpochBar | None = None
        # now rather than at on_fit_start: the Trainer's own start-up warnings come before that event
        self.log = setup_console(int(os.environ.get("RANK", "0")))
        self.epoch_times: list[float] = []
        self.epoch, self.epoch_t0, self.step_in_epoch = 0, time.perf_counter(), 0
        self.saved_epoch: int | None = None

    # timing for the ETA: this process's steps and epochs
    def _eta(self, trainer, step_in_epoch: int) -> float | None:
        steps = max(len(trainer.data.train), 1)
        epochs_left = trainer.total_epochs - self.epoch - 1
        if self.epoch_times:
            per_epoch = sum(self.epoch_times) / len(self.epoch_times)
            return per_epoch * (1 - step_in_epoch / steps) + per_epoch * epochs_left
        elapsed = time.perf_counter() - self.epoch_t0
        if step_in_epoch == 0:
            return None
        per_step = elapsed / step_in_epoch
        return per_step * (steps - step_in_epoch + epochs_left * steps)

    def on_fit_start(self, trainer) -> None:
        self.log = setup_console(trainer.dist.rank)
        self.epoch_times: list[float] = []
        self.epoch, self.epoch_t0, self.step_in_epoch = trainer.start_epoch, time.perf_counter(), 0
        self.saved_epoch = trainer.start_epoch or None
        if not trainer.dist.is_main:
            return
        for line in header_lines(trainer):
            self.log.info(line)
        note = selection_warning(trainer)
        if note:
            self.log.warning(note)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.epoch, self.epoch_t0, self.step_in_epoch = epoch, time.perf_counter(), 0
        show = trainer.exp.runtime.progress and trainer.dist.is_main and not _settings["quiet"]
        self.bar = None
        if show:
            bar = _EpochBar(f"epoch {epoch + 1}/{trainer.total_epochs}", len(trainer.data.train), trainer.device)
            self.bar = bar if bar.shown else None

    def on_train_batch_end(self, trainer, step_output, batch) -> None:
        self.step_in_epoch += 1
        if self.bar is not None:
            self.bar.step(step_output, batch[1], self._eta(trainer, self.step_in_epoch))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, trainer, record: dict) -> None:
        self._close_bar()
        self.epoch_times.append(time.perf_counter() - self.epoch_t0)
        if trainer.dist.is_main:
            eta = self._eta(trainer, len(trainer.data.train))
            self.log.info(epoch_line(record, trainer.total_epochs, (trainer.best or {}).get("epoch"), eta))

    def on_checkpoint(self, trainer, state: dict) -> None:
        self.saved_epoch = state.get("epoch", self.saved_epoch)

    def on_fit_end(self, trainer, summary: dict) -> None:
        try:
            if trainer.dist.is_main:
                for line in summary_lines(summary, trainer.run_dir.path):
                    self.log.info(line)
        finally:
            close_run_log()

    def on_exception(self, trainer, exc: BaseException) -> None:
        self._close_bar()
        try:
            if not trainer.dist.is_main:
                return
            if isinstance(exc, KeyboardInterrupt):
                self.log.warning(interrupt_notice(trainer.run_dir.path, self.epoch + 1, self.saved_epoch))
                exc.softlabels_notice_shown = True  # the CLI does not repeat it
            else:  # the CLI prints the error itself; keep it in train.log
                self.log.error(f"run stopped: {type(exc).__name__}: {exc}", extra={FILE_ONLY: True})
        finally:
            close_run_log()


def interrupt_notice(run_path, during: int | None = None, saved_epoch: int | None = None) -> str:
    """What to do after Ctrl-C, naming the actual run folder (and the checkpoint's epoch when known)."""
    path = Path(run_path)
    where = f" during epoch {during}" if during else ""
    if (path / "last.pt").is_file():
        saved = f" (epoch {saved_epoch})" if saved_epoch else ""
        return f"interrupted{where}; continue from the last checkpoint{saved} with: softlabels train --resume {path}"
    return f"interrupted{where} before the first checkpoint of {path}; nothing to resume: the same command starts it over"
