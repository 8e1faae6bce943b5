"""Shared orchestration of the analyses: progress lines, resumable runs, and runs on a split of the pool.

Every run goes through the engine's resume logic: a finished run folder is reused, an unfinished one
resumed, so re-running an analysis is cheap and a killed one continues.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from softlabels.analysis.base import AnalysisBase, experiment
from softlabels.analysis.checks import AnalysisError
from softlabels.analysis.splits import SplitPlan
from softlabels.config import Experiment, MethodConfig, TeacherConfig

__all__ = ["SplitFamily", "log_progress", "run_on_split", "train_run", "train_split_family", "write_result_files"]


def log_progress(msg: str) -> None:
    """One ``[analyze] ...`` line on the console (the ``softlabels`` logger when it is set up, else stderr)."""
    logger = logging.getLogger("softlabels")
    if logger.hasHandlers():
        logger.info("[analyze] %s", msg)
    else:
        print(f"[analyze] {msg}", file=sys.stderr, flush=True)


def train_run(exp: Experiment) -> dict:
    """Train (or reuse, or resume) one run; its summary."""
    from softlabels.engine import run_or_resume

    return run_or_resume(exp)


def _split_record(indices: torch.Tensor) -> dict:
    idx = indices.cpu().long()
    return {"train_size": int(idx.numel()), "indices": idx.tolist()}


def run_on_split(exp: Experiment, indices: torch.Tensor) -> dict:
    """Train (or reuse, or resume) a model on ``indices`` only (positions in the full training set).

    The training loader is the base data restricted to ``indices``, handed to the Trainer (``data=``).
    The run folder gets a ``split.json`` with the indices; a folder whose split differs, or a run
    without one, is refused (AnalysisError) instead of being mixed in. Returns the run's summary.
    """
    from softlabels.data import InMemoryLoader, build_data
    from softlabels.engine import RunDir, Trainer
    from softlabels.engine.env import select_device
    from softlabels.io import read_json

    rd = RunDir(exp.run_dir)
    split_path = rd / "split.json"
    record = _split_record(indices)
    if split_path.is_file():
        if read_json(split_path, "split file").get("indices") != record["indices"]:
            raise AnalysisError(
                f"run folder {rd.path} was trained on a different split (other --subset, --splits or seed); "
                "use another --out folder"
            )
    elif rd.has_checkpoint() or rd.summary_path.is_file():
        raise AnalysisError(f"run folder {rd.path} holds a run that is not a split run of this analysis; "
                            "use another --out")
    if rd.is_finished(exp):
        return rd.summary()
    data = build_data(exp.data, device=select_device(exp.runtime.device), seed=exp.seed)
    full = data.train
    if not isinstance(full, InMemoryLoader):
        raise AnalysisError(
            f"split analyses need an in-memory dataset (fashion_mnist, cifar10, cifar100, synthetic), not {exp.data.name!r}"
        )
    if exp.data.drop_last and indices.numel() < full.batch_size:
        raise AnalysisError(f"a split has {indices.numel()} images, fewer than data.batch_size with data.drop_last")
    data.train = InMemoryLoader(
        full.images, full.labels, indices.cpu().long(), batch_size=full.batch_size, mean=data.info.mean,
        std=data.info.std, device=full.device, shuffle=True, augment=full.augment, crop_padding=full.crop_padding,
        flip=full.flip, drop_last=full.drop_last, seed=full.seed,
    )
    trainer = Trainer(exp, run_dir=rd.path, resume=rd.has_checkpoint(), data=data)
    rd.create()
    rd.write_json("split.json", record)  # after the Trainer checked the folder: it holds this run now
    return trainer.fit()


@dataclass(frozen=True)
class SplitFamily:
    """The models of one (method, student) trained on every split of a plan: run folders and records."""

    run_dirs: list[Path]
    records: list[dict]


def train_split_family(base: AnalysisBase, out: Path, prefix: str, plans: list[SplitPlan], n: int, *,
                       method: MethodConfig, teacher: TeacherConfig | None, model: str | None) -> SplitFamily:
    """Train one model per plan entry (``{prefix}_n{n}_p{partition}_s{split}_seed{seed}``)."""
    run_dirs, records = [], []
    for i, plan in enumerate(plans):
        name = plan.run_name(prefix, n)
        exp = experiment(base, out, name, seed=plan.train_seed, method=method, teacher=teacher, model=model,
                         split_run=True)
        log_progress(f"{prefix}: model {i + 1}/{len(plans)} ({name}, {plan.indices.numel()} training images)")
        summary = run_on_split(exp, plan.indices)
        run_dirs.append(exp.run_dir)
        records.append({"run": name, "partition": plan.partition, "split": plan.split, "seed": plan.seed,
                        "train_seed": plan.train_seed, "train_size": int(plan.indices.numel()),
                        "best_top1": summary.get("best_top1"), "last_top1": summary.get("last_top1")})
    return SplitFamily(run_dirs, records)


def write_result_files(out: Path, stem: str, result, tables: dict[str, list[dict]], text: str) -> str:
    """``<stem>.json`` (the typed result), one CSV per entry of ``tables`` (file name -> rows) and
    ``<stem>.md`` (``text``), all through :mod:`softlabels.io`; returns ``text``."""
    from softlabels.io import atomic_write_text, write_csv, write_json

    write_json(out / f"{stem}.json", result.to_json())
    for name, rows in tables.items():
        write_csv(out / name, rows)
    atomic_write_text(out / f"{stem}.md", text + "\n")
    return text
