"""Which teacher an analysis distils from: a checkpoint, a freshly trained one, the base's, or a shipped one."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from softlabels.analysis.base import AnalysisBase, experiment, method_config, with_epochs
from softlabels.config import TeacherConfig
from softlabels.errors import CheckpointError

__all__ = ["SHIPPED_TEACHERS", "ShippedTeacher", "resolve_teacher", "shipped_teacher"]

log = logging.getLogger("softlabels")

#: dataset -> (model, file stem under softlabels/assets/teachers)
SHIPPED_TEACHERS = {"fashion_mnist": ("resnet20", "fashion_mnist_resnet20")}


@dataclass(frozen=True)
class ShippedTeacher:
    """A teacher checkpoint shipped in ``softlabels/assets/teachers``, its sha256 checked.

    ``top1`` is its recorded test top-1 (%) with the shipped weights (the last epoch, no selection).
    """

    dataset: str
    model: str
    checkpoint: Path
    top1: float
    manifest: dict

    def config(self) -> TeacherConfig:
        return TeacherConfig(name=self.model, checkpoint=str(self.checkpoint))


def shipped_teacher(dataset: str = "fashion_mnist") -> ShippedTeacher | None:
    """The shipped teacher of ``dataset`` if present and its sha256 matches the manifest; None otherwise
    (a mismatch is logged as a warning)."""
    from softlabels.engine.checkpoint import sha256_of
    from softlabels.resources import assets_root

    if dataset not in SHIPPED_TEACHERS:
        return None
    model, stem = SHIPPED_TEACHERS[dataset]
    folder = assets_root() / "teachers"
    manifest_path, ckpt = folder / f"{stem}.json", folder / f"{stem}.pt"
    if not (manifest_path.is_file() and ckpt.is_file()):
        return None
    manifest = json.loads(manifest_path.read_text())
    if sha256_of(ckpt) != manifest["sha256"]:
        log.warning("warning: %s does not match its recorded sha256; not using it", ckpt)
        return None
    return ShippedTeacher(dataset, model, ckpt, float(manifest["last_top1"]), manifest)


def resolve_teacher(
    base: AnalysisBase,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    train: bool = False,
    epochs: int | None = None,
) -> TeacherConfig:
    """The teacher the analyses distil from.

    In order: ``checkpoint`` (a .pt file or a run folder; the model name is read from it unless
    ``name`` is given); with ``train``, a teacher ``name`` (default resnet20) trained here with the base
    data and optimizer (``epochs``: default the base's) into ``out/teacher_<name>`` (its final weights,
    ``last.pt``); the base config's ``teacher`` section; the dataset's shipped teacher.
    Raises CheckpointError naming the path, or saying how to provide a teacher.
    """
    from softlabels.engine.checkpoint import load_checkpoint
    from softlabels.resources import resolve_path

    if checkpoint is not None:
        path = resolve_path(checkpoint)
        if not path.exists():
            raise CheckpointError(
                f"teacher checkpoint not found: {path} (pass a .pt file or a run folder with best.pt/last.pt)"
            )
        ckpt = load_checkpoint(path)
        model = name or ckpt.get("model_name")
        if not model:
            raise CheckpointError(f"teacher checkpoint {ckpt['_path']} does not record its model: pass --teacher NAME")
        return TeacherConfig(name=str(model), checkpoint=str(ckpt["_path"]))
    if train:
        from softlabels.analysis.runner import log_progress, train_run

        model = name or "resnet20"
        source = base
        if epochs is not None:
            source = AnalysisBase(base.exp.model_copy(update={"schedule": with_epochs(base.exp.schedule, epochs)}),
                                  base.method, base.source)
        exp = experiment(source, Path(out), f"teacher_{model}", seed=base.seed, method=method_config(base, "ce"),
                         model=model)
        log_progress(f"training the teacher {model} in {exp.run_dir}")
        train_run(exp)
        return TeacherConfig(name=model, checkpoint=str(exp.run_dir / "last.pt"))
    if base.exp.teacher is not None:
        teacher = base.exp.teacher
        if name is not None:
            teacher = teacher.model_copy(update={"name": name})
        if not resolve_path(teacher.checkpoint).is_file():
            raise CheckpointError(
                f"teacher checkpoint not found: {teacher.checkpoint} (from the base config's teacher section; "
                "pass --teacher-checkpoint PATH)"
            )
        return teacher
    shipped = shipped_teacher(base.dataset)
    if shipped is not None:
        return TeacherConfig(name=name or shipped.model, checkpoint=str(shipped.checkpoint))
    raise CheckpointError(
        "this analysis distils from a teacher: pass --teacher-checkpoint PATH (a .pt file or a run folder), "
        "or --train-teacher to train one first"
    )
