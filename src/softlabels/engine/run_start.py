"""How a run starts in its folder: fresh, started over, or resumed -- and which folders it refuses.

Rules (nothing is ever overwritten that is not this run's):

* a folder another process is running in is refused by name (its lock is held);
* without ``--resume``: an empty or missing folder starts fresh; a folder with ``last.pt`` or
  ``summary.json`` is refused ("continue it with --resume"); a folder holding only this run's own
  files from before its first checkpoint (same config.yaml) starts over; anything else is refused;
* with ``--resume``: ``last.pt`` is loaded (a weights-only or old-format file is refused, a changed
  config is refused naming the keys); a run folder of this config without ``last.pt`` (killed in its
  first epoch) starts over; a folder that is no run is refused.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from softlabels.errors import CheckpointError, ConfigError, UserError

if TYPE_CHECKING:
    from softlabels.config import Experiment
    from softlabels.engine.run_dir import RunDir

# keys a resumed run may change: a longer schedule, console/threads, where the folder lives, what is logged
RESUMABLE_CHANGES = ("schedule.epochs", "runtime.progress", "runtime.threads", "runtime.test_eval", "output_dir",
                     "callbacks", "loggers", "imports")
RESUME_KEYS = ("optimizers", "rng", "epoch", "best")


def diff_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def config_changes(saved: dict, exp: Experiment) -> list[str]:
    """Keys in which ``exp`` differs from a run's saved config, leaving out :data:`RESUMABLE_CHANGES`."""
    ours = exp.model_dump(mode="json")
    return [d for d in diff_keys(saved, ours)
            if not any(d == k or d.startswith(k + ".") for k in RESUMABLE_CHANGES)]


def check_resumable(state: dict, path) -> None:
    """CheckpointError unless ``state`` is a full training state this version can continue."""
    missing = [k for k in RESUME_KEYS if k not in state]
    if not missing:
        return
    if "optimizer" in state and "rng" in state:
        raise CheckpointError(f"checkpoint {path} was written by an older softlabels (one optimizer) and cannot be "
                              "resumed by this version; start the run over in a new folder")
    raise CheckpointError(f"checkpoint {path} holds weights only (no {', '.join(missing)}): it cannot be resumed; "
                          "start a new run (student.init can load these weights)")


def _is_this_run(rd: RunDir, exp: Experiment) -> bool:
    try:
        return rd.is_run() and not config_changes(rd.raw_config(), exp)
    except UserError:  # a damaged config.yaml is not this run's
        return False


def plan_start(trainer) -> str:
    """Check the trainer's run folder and load the resumed state; returns "fresh", "restart" or "resume"."""
    rd, exp = trainer.run_dir, trainer.exp
    if rd.lock_path.is_file() and trainer.dist.is_main:  # a run was here: is one still running?
        with rd.lock():  # refused now, with the folder's name, when another run holds it
            pass
    if trainer.resume:
        if rd.has_checkpoint():
            state = rd.load_checkpoint("last")
            check_resumable(state, rd.last_path)
            changes = config_changes(state.get("config") or {}, exp) if state.get("config") is not None else []
            if changes:
                raise ConfigError(f"cannot resume {rd.path}: the config differs from the run's in "
                                  f"{', '.join(changes[:8])}; resume with the run's own config.yaml")
            trainer.load_state(state)
            return "resume"
        if not rd.is_run():
            raise CheckpointError(f"cannot resume: no last.pt in {rd.path} and no run was started there "
                                  "(start the run without --resume)")
        if not _is_this_run(rd, exp):
            raise ConfigError(f"cannot resume {rd.path}: it has no last.pt and its config.yaml differs from this "
                              "run's; start the run in another folder")
        trainer.log.warning(f"{rd.path} has no last.pt yet (the run stopped before its first checkpoint): "
                            "starting it over")
        return "restart"
    contents = rd.contents()
    if not contents:
        return "fresh"
    if rd.has_checkpoint() or rd.summary_path.is_file():
        raise ConfigError(f"run folder {rd.path} already holds a run; continue it with --resume {rd.path}, or choose "
                          "another name/output_dir (nothing was overwritten)")
    if _is_this_run(rd, exp):
        trainer.log.warning(f"{rd.path} holds this run's files from before its first checkpoint: starting it over")
        return "restart"
    shown = ", ".join(contents[:6]) + (", ..." if len(contents) > 6 else "")
    raise ConfigError(f"run folder {rd.path} is not empty ({shown}) and holds no run of this config; choose another "
                      "name/output_dir or empty it (nothing was overwritten)")


def restore_metrics(rows: list[dict], start_epoch: int, record: dict | None) -> list[dict]:
    """metrics.jsonl rows of a resumed run: those up to the checkpoint's epoch, plus the checkpoint's own
    row (``record`` in last.pt) when a kill came between the checkpoint and the metrics write."""
    kept = [r for r in rows if isinstance(r.get("epoch"), int) and r["epoch"] <= start_epoch]
    if record is not None and not any(r["epoch"] == start_epoch for r in kept):
        kept = [r for r in kept if r["epoch"] < start_epoch] + [record]
    return kept
