"""The paper's experiments as resumable functions; ``softlabels analyze`` is a thin layer over them.

Each experiment takes a BASE config, a raw dict in the format of ``configs/*/*.yaml`` (its ``data``,
``student``, ``optim``, ``schedule``, ``runtime``, ``seed`` and, optionally, ``method`` and ``teacher``
sections are used; see :func:`base_config`), and an output folder. It trains what it needs there with
the engine's resume logic (finished runs are reused, unfinished ones resumed, so re-running a
command is cheap and a killed one continues), then writes its numbers as JSON and CSV (and a
Markdown table) into the same folder, where ``softlabels report`` finds both the runs and the
bias/variance JSON.

- :func:`bias_variance_experiment` — Yang et al.'s protocol: N models on N disjoint stratified splits
  of the training set (repeated over random partitions and seeds), per-sample and mean bias, variance
  and risk of the cross-entropy (Heskes) and the MSE estimate, optionally against model width.
- :func:`temperature_sweep` — KD at several temperatures: regularization-sample fraction per epoch,
  best/last top-1, and whether the fraction rises with T and accuracy falls as it rises.
- :func:`filtering_experiment` — KD vs KD with regularization samples filtered out vs WSL, same seeds.
- :func:`soft_label_bias_variance` — CE, KD and WSL students over the same splits; per-sample changes of
  bias and variance (KD − CE, WSL − CE) on regularization samples and on the others.

The training pool is the base config's training set after ``data.train_subset`` (drawn with the base
``seed``). Split runs use no validation split; they are evaluated with their final weights
(``last.pt``) unless ``checkpoint="best"`` is asked for (the best epoch is chosen on the test set).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softlabels.analysis.bias_variance import cross_entropy_bias_variance, mse_bias_variance
from softlabels.errors import CheckpointError, UserError
from softlabels.stats import mean_std

__all__ = [
    "AnalysisError",
    "DEFAULT_BASE",
    "FILTERING_ARMS",
    "SplitPlan",
    "base_config",
    "bias_variance_experiment",
    "check_seeds",
    "check_values",
    "disjoint_stratified_splits",
    "filtering_experiment",
    "markdown_table",
    "pearson",
    "plan_splits",
    "resolve_teacher",
    "run_on_split",
    "soft_label_bias_variance",
    "spearman",
    "temperature_sweep",
    "test_log_probs",
    "training_pool",
]


class AnalysisError(UserError):
    """An analysis was asked for something it cannot do (bad list values, too few splits, a foreign folder)."""


#: built-in base: the demo's low-data Fashion-MNIST setting (10 % = 600 images a class), resnet8 student.
DEFAULT_BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "fashion_mnist", "train_subset": 0.1, "batch_size": 128, "crop_padding": 2, "flip": True},
    "student": {"name": "resnet8"},
    "method": {"name": "ce"},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    "schedule": {"name": "cosine", "epochs": 15, "warmup_epochs": 1},
    "runtime": {"progress": True},
}

_STREAM_PARTITION = 1001  # seed stream of the N-way partitions (see softlabels.data.base.generator)
_SEED_STRIDE = 1000  # split-run training seed = seed * 1000 + partition * N + split


def _log(msg: str) -> None:
    print(f"[analyze] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- config
def _set_epochs(raw: dict, epochs: int) -> None:
    """Set schedule.epochs, keeping warm-up below it; multistep milestones that no longer fit are scaled
    proportionally (e.g. 150/180/210 of 240 epochs become 9/11/13 of 15)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AnalysisError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    sch = raw.setdefault("schedule", {})
    old = int(sch.get("epochs", 240))
    sch["epochs"] = epochs
    if int(sch.get("warmup_epochs", 0)) >= epochs:
        sch["warmup_epochs"] = epochs - 1
    milestones = sch.get("milestones", [150, 180, 210])
    if sch.get("name", "multistep") == "multistep" and any(m > epochs for m in milestones):
        # scaled only when they no longer fit, so that a longer --epochs can resume a finished run
        sch["milestones"] = sorted({min(epochs, max(1, round(m * epochs / max(old, 1)))) for m in milestones})


def base_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    dataset: str | None = None,
    model: str | None = None,
    epochs: int | None = None,
    subset: int | float | None = None,
    device: str | None = None,
) -> dict:
    """The raw base config of an analysis: a YAML file (or :data:`DEFAULT_BASE`), then the options.

    Args:
        path: an experiment YAML file (e.g. ``configs/fashion_mnist/kd.yaml``); None = built-in defaults.
            Its ``name`` and ``output_dir`` are ignored; its ``teacher`` is the default teacher and its
            ``method`` parameters are the defaults of the methods the analyses train.
        overrides: dotted ``key=value`` overrides (as for ``softlabels train``).
        dataset, model, epochs, subset, device: shortcuts for ``data.name``, ``student.name``,
            ``schedule.epochs`` (warm-up and multistep milestones follow), ``data.train_subset`` (a
            fraction in (0, 1] or a number of images) and ``runtime.device``.
    Returns:
        The raw dict, checked with :func:`softlabels.config.validate_config` (method and teacher aside).
    Raises:
        ConfigError / AnalysisError with one line naming the file or option.
    """
    from softlabels.config import apply_overrides, read_yaml, validate_config

    raw = read_yaml(path) if path is not None else copy.deepcopy(DEFAULT_BASE)
    raw = apply_overrides(raw, list(overrides))
    if dataset is not None:
        raw.setdefault("data", {})["name"] = dataset
    if model is not None:
        raw["student"] = {**(raw.get("student") or {}), "name": model}
    if epochs is not None:
        _set_epochs(raw, epochs)
    if subset is not None:
        raw.setdefault("data", {})["train_subset"] = subset
    if device is not None:
        raw.setdefault("runtime", {})["device"] = device
    if "student" not in raw:
        raw["student"] = {"name": "resnet8"}
    check = {k: v for k, v in raw.items() if k not in ("teacher", "method")}
    validate_config({**check, "method": {"name": "ce"}}, str(path or "<analysis base>"), check_files=False)
    return raw


def _method(base: dict, name: str, **forced: Any) -> dict:
    """A method section: the base's parameters when the base uses the same method, else the method's
    defaults; a temperature in the base carries over to any distillation method; ``forced`` wins."""
    section = base.get("method") or {}
    params = {k: v for k, v in section.items() if k != "name"} if section.get("name") == name else {}
    if name != "ce" and "temperature" in section and "temperature" not in params:
        params["temperature"] = section["temperature"]
    params.update({k: v for k, v in forced.items() if v is not None})
    if name == "ce":
        return {"name": "ce"}
    return {"name": name, **params}


def _experiment(base: dict, out: Path, name: str, *, seed: int, method: dict, teacher: dict | None = None,
                model: str | None = None, split_run: bool = False):
    from softlabels.config import validate_config

    raw = copy.deepcopy({k: v for k, v in base.items() if k not in ("name", "output_dir", "teacher", "method")})
    raw.update(name=name, output_dir=str(out), seed=int(seed), method=copy.deepcopy(method))
    if model is not None:
        raw["student"] = {**(raw.get("student") or {}), "name": model}
    if method["name"] != "ce":
        if teacher is None:
            raise CheckpointError(f"method {method['name']!r} needs a teacher: pass --teacher-checkpoint PATH")
        raw["teacher"] = copy.deepcopy(teacher)
        if split_run:
            raw["teacher"]["cache"] = False  # the cache is keyed on the configured subset, not on a split
    if split_run:
        raw.setdefault("data", {})["val_split"] = 0
    return validate_config(raw, f"<analysis run {name}>")


def resolve_teacher(
    base: dict,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    train: bool = False,
    epochs: int | None = None,
) -> dict:
    """The teacher section ``{"name", "checkpoint"}`` the analyses distil from.

    In order: ``checkpoint`` (a .pt file or a run folder; the model name is read from it unless
    ``name`` is given); with ``train``, a teacher ``name`` (default resnet20) trained here with the base
    data and optimizer (``epochs``: default the base's) into ``out/teacher_<name>`` (its final weights,
    ``last.pt``); the base config's ``teacher`` section; for Fashion-MNIST the shipped resnet20 teacher.
    Raises CheckpointError naming the path, or saying how to provide a teacher.
    """
    from softlabels.engine.checkpoint import load_checkpoint

    if checkpoint is not None:
        from softlabels.resources import resolve_path

        path = resolve_path(checkpoint)
        if not path.exists():
            raise CheckpointError(
                f"teacher checkpoint not found: {path} (pass a .pt file or a run folder with best.pt/last.pt)"
            )
        ckpt = load_checkpoint(path)
        model = name or ckpt.get("model_name")
        if not model:
            raise CheckpointError(f"teacher checkpoint {ckpt['_path']} does not record its model: pass --teacher NAME")
        return {"name": str(model), "checkpoint": str(ckpt["_path"])}
    if train:
        from softlabels.engine import run_or_resume

        model = name or "resnet20"
        raw = copy.deepcopy(base)
        if epochs is not None:
            _set_epochs(raw, epochs)
        exp = _experiment(raw, Path(out), f"teacher_{model}", seed=int(base.get("seed", 0)), method={"name": "ce"},
                          model=model)
        _log(f"training the teacher {model} in {exp.run_dir}")
        run_or_resume(exp)
        return {"name": model, "checkpoint": str(exp.run_dir / "last.pt")}
    if base.get("teacher"):
        teacher = copy.deepcopy(base["teacher"])
        if name is not None:
            teacher["name"] = name
        from softlabels.resources import resolve_path

        if not resolve_path(teacher.get("checkpoint", "")).is_file():
            raise CheckpointError(
                f"teacher checkpoint not found: {teacher.get('checkpoint')} (from the base config's teacher section; "
                "pass --teacher-checkpoint PATH)"
            )
        return teacher
    if (base.get("data") or {}).get("name", "fashion_mnist") == "fashion_mnist":
        from softlabels.demo import shipped_teacher

        shipped = shipped_teacher()
        if shipped is not None:
            return {"name": name or "resnet20", "checkpoint": str(shipped)}
    raise CheckpointError(
        "this analysis distils from a teacher: pass --teacher-checkpoint PATH (a .pt file or a run folder), "
        "or --train-teacher to train one first"
    )


# --------------------------------------------------------------------------------------------- splits
def disjoint_stratified_splits(labels: torch.Tensor, n: int, seed: int, partition: int = 0) -> list[torch.Tensor]:
    """Partition positions ``0..len(labels)-1`` into ``n`` disjoint, stratified parts of equal size.

    Args:
        labels: int64 (P,) labels of the pool.
        n: number of parts (>= 1).
        seed, partition: the partition is a pure function of both (different ``partition`` values give
            independent random partitions).
    Returns:
        ``n`` sorted int64 tensors of positions into ``labels``, disjoint and covering all of them; each
        class is dealt round-robin, so part sizes, and each class's count in each part, differ by at most 1.
    """
    from softlabels.data.base import generator

    labels = labels.cpu().long()
    if n < 1:
        raise AnalysisError(f"the number of splits must be >= 1, got {n}")
    perm = torch.randperm(labels.numel(), generator=generator(seed, _STREAM_PARTITION, partition))
    order = perm[torch.sort(labels[perm], stable=True).indices]  # grouped by class, random within a class
    return [torch.sort(order[j::n]).values for j in range(n)]


def training_pool(base: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of the base config's training set after ``data.train_subset`` (base ``seed``).

    Indices are positions in the full original training set (int64, sorted); labels int64, aligned.
    """
    from softlabels.config import validate_config
    from softlabels.data import build_data

    raw = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("teacher", "method")}
    raw.setdefault("data", {})["val_split"] = 0
    exp = validate_config({**raw, "method": {"name": "ce"}}, "<analysis base>", check_files=False)
    bundle = build_data(exp.data, device="cpu", seed=exp.seed)
    loader = bundle.train
    return loader.indices.clone(), loader.dataset_labels.clone()


@dataclass(frozen=True)
class SplitPlan:
    """One model of a split experiment: train on ``indices`` (positions in the full training set)."""

    partition: int
    seed: int  # the user-facing seed
    split: int
    group: int  # MSE group: the N models of one (partition, seed) were trained on disjoint sets
    train_seed: int
    indices: torch.Tensor = field(repr=False)

    def run_name(self, prefix: str, n: int) -> str:
        return f"{prefix}_n{n}_p{self.partition}_s{self.split}_seed{self.seed}"


def plan_splits(base: dict, splits: int, partitions: int = 1, seeds: Sequence[int] = (0,)) -> list[SplitPlan]:
    """The models of a split experiment: ``partitions`` random N-way stratified partitions of the training
    pool (:func:`training_pool`), one model per part and seed; the same plan for every method and width."""
    if splits < 2:
        raise AnalysisError(f"--splits must be >= 2 (disjoint training sets for the variance), got {splits}")
    if partitions < 1:
        raise AnalysisError(f"--partitions must be >= 1, got {partitions}")
    if splits * partitions > _SEED_STRIDE:
        raise AnalysisError(f"--splits x --partitions must be at most {_SEED_STRIDE}")
    pool, labels = training_pool(base)
    data_seed = int(base.get("seed", 0))
    smallest = int(torch.bincount(labels).min()) if labels.numel() else 0
    if pool.numel() < splits or smallest < splits:
        _log(f"warning: the training pool ({pool.numel()} images, smallest class {smallest}) "
             f"has fewer images of some class than --splits {splits}")
    plans = []
    for p in range(partitions):
        parts = disjoint_stratified_splits(labels, splits, data_seed, p)
        for si, s in enumerate(seeds):
            for j, part in enumerate(parts):
                plans.append(SplitPlan(p, int(s), j, p * len(seeds) + si, int(s) * _SEED_STRIDE + p * splits + j,
                                       pool[part]))
    return plans


def _split_record(indices: torch.Tensor) -> dict:
    idx = indices.cpu().long()
    return {"train_size": int(idx.numel()), "indices": idx.tolist()}


def run_on_split(exp, indices: torch.Tensor) -> dict:
    """``run_or_resume`` for a model trained only on ``indices`` (positions in the full training set).

    The run folder gets a ``split.json`` with the indices; a folder whose split differs, or a run
    without one, is refused (AnalysisError) instead of being mixed in. Returns the run's summary.
    """
    import yaml

    from softlabels.data import InMemoryLoader
    from softlabels.engine import Trainer

    rd = exp.run_dir
    split_path = rd / "split.json"
    record = _split_record(indices)
    if split_path.is_file():
        saved = json.loads(split_path.read_text())
        if saved.get("indices") != record["indices"]:
            raise AnalysisError(
                f"run folder {rd} was trained on a different split (other --subset, --splits or seed); "
                "use another --out folder"
            )
    elif (rd / "last.pt").is_file() or (rd / "summary.json").is_file():
        raise AnalysisError(f"run folder {rd} holds a run that is not a split run of this analysis; use another --out")
    summary_path = rd / "summary.json"
    if summary_path.is_file() and (rd / "config.yaml").is_file():
        summary = json.loads(summary_path.read_text())
        saved_epochs = yaml.safe_load((rd / "config.yaml").read_text())["schedule"]["epochs"]
        if summary.get("epochs") == summary.get("total_epochs") and saved_epochs == exp.schedule.epochs:
            return summary
    rd.mkdir(parents=True, exist_ok=True)
    tmp = split_path.with_name(f".split.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, split_path)
    resume = (rd / "last.pt").is_file()
    if not resume and (rd / "metrics.jsonl").is_file():
        (rd / "metrics.jsonl").unlink()  # killed before its first checkpoint: nothing to keep
    trainer = Trainer(exp, run_dir=rd, resume=resume)
    old = trainer.data.train
    if not isinstance(old, InMemoryLoader):
        raise AnalysisError(
            f"split analyses need an in-memory dataset (fashion_mnist, cifar10, cifar100, synthetic), not {exp.data.name!r}"
        )
    if exp.data.drop_last and indices.numel() < old.batch_size:
        raise AnalysisError(f"a split has {indices.numel()} images, fewer than data.batch_size with data.drop_last")
    info = trainer.data.info
    trainer.data.train = InMemoryLoader(
        old.images, old.labels, indices.cpu().long(), batch_size=old.batch_size, mean=info.mean, std=info.std,
        device=old.device, shuffle=True, augment=old.augment, crop_padding=old.crop_padding, flip=old.flip,
        drop_last=old.drop_last, seed=old.seed,
    )
    if trainer.dist.enabled:
        trainer.data.train.shard(trainer.dist.rank, trainer.dist.world_size)
    return trainer.fit()


# --------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def _model_log_probs(model: torch.nn.Module, loader, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (size, C) float64 and targets (size,) of ``model`` on every sample of ``loader``."""
    model.eval()
    out = torch.full((size, num_classes), float("nan"), dtype=torch.float64)
    targets = torch.full((size,), -1, dtype=torch.long)
    for images, y, idx in loader:
        logits = model(images).double()
        idx = idx.cpu()
        out[idx] = torch.log_softmax(logits, dim=1).cpu()
        targets[idx] = y.cpu()
    return out, targets


def _test_loader(exp):
    from softlabels.data import build_data
    from softlabels.engine.env import select_device

    device = select_device(exp.runtime.device)
    bundle = build_data(exp.data, device=device, seed=exp.seed)
    return bundle, device


def test_log_probs(
    run_dirs: Sequence[str | Path], *, checkpoint: str = "last", device: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-set log-probabilities of the models saved in ``run_dirs``.

    Args:
        run_dirs: run folders of the same dataset (the first one's ``config.yaml`` defines the test set).
        checkpoint: ``"last"`` (final weights) or ``"best"``.
        device: evaluation device (default: the run's ``runtime.device``).
    Returns:
        (log_probs float64 (models, test samples, classes), targets int64 (test samples,)).
    """
    from softlabels.engine import experiment_from_run
    from softlabels.engine.checkpoint import load_checkpoint, load_model_weights
    from softlabels.models import create_model

    if checkpoint not in ("last", "best"):
        raise AnalysisError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if not run_dirs:
        raise AnalysisError("no runs to evaluate")
    exp = experiment_from_run(run_dirs[0])
    if device is not None:
        exp = exp.model_copy(update={"runtime": exp.runtime.model_copy(update={"device": device})})
    bundle, dev = _test_loader(exp)
    size, classes = bundle.test.full_size, bundle.info.num_classes
    outs, targets = [], None
    for rd in run_dirs:
        ckpt = load_checkpoint(Path(rd) / f"{checkpoint}.pt")
        model = create_model(ckpt["model_name"], ckpt.get("num_classes") or classes,
                             ckpt.get("in_channels") or bundle.info.in_channels)
        load_model_weights(model, ckpt)
        lp, targets = _model_log_probs(model.to(dev), bundle.test, size, classes)
        outs.append(lp)
    return torch.stack(outs), targets


def _teacher_log_probs(exp) -> torch.Tensor:
    """Test-set log-probabilities (S, C) float64 of the experiment's teacher."""
    from softlabels.engine.trainer import load_teacher

    bundle, dev = _test_loader(exp)
    teacher, _ = load_teacher(exp, bundle.info.num_classes, bundle.info.in_channels, dev)
    lp, _ = _model_log_probs(teacher, bundle.test, bundle.test.full_size, bundle.info.num_classes)
    return lp


def _finite(value):
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            values = []
            for c in columns:
                v = _finite(row.get(c))
                values.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
            writer.writerow(values)
    os.replace(tmp, path)
    return path


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 4 significant digits; None as '–')."""

    def fmt(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- statistics
def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0  # ties get their average rank
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equal-length sequences; None with < 2 points or a constant sequence."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None]
    if len(pairs) < 2:
        return None
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    sxy = sum((a - mx) * (b - my) for a, b in pairs)
    sxx = sum((a - mx) ** 2 for a, _ in pairs)
    syy = sum((b - my) ** 2 for _, b in pairs)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None]
    if len(pairs) < 2:
        return None
    return pearson(_ranks([a for a, _ in pairs]), _ranks([b for _, b in pairs]))


def _sign(v: float | None) -> int | None:
    return None if v is None else (1 if v > 0 else -1 if v < 0 else 0)


def check_values(values: Sequence, what: str, *, positive: bool = False) -> list:
    """``values`` unchanged if each is a finite number (> 0 with ``positive``) listed once; else AnalysisError
    naming the option ``what``."""
    if not values:
        raise AnalysisError(f"{what}: give at least one value")
    seen = set()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise AnalysisError(f"{what}: {v!r} is not a number")
        if positive and v <= 0:
            raise AnalysisError(f"{what}: values must be > 0, got {v!r}")
        if v in seen:
            raise AnalysisError(f"{what}: {v!r} is listed twice")
        seen.add(v)
    return list(values)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` unchanged if each is a whole number >= 0 listed once; else AnalysisError."""
    seeds = check_values(seeds, "--seeds")
    for s in seeds:
        if not isinstance(s, int) or s < 0:
            raise AnalysisError(f"--seeds: {s!r} is not a whole number >= 0")
    return seeds


def _run_metrics(run_dir: Path) -> list[dict]:
    from softlabels.engine.metrics import read_jsonl

    return read_jsonl(run_dir / "metrics.jsonl")


def _curve(rows: list[dict], key: str) -> list[float | None]:
    return [r.get(key) for r in rows]


# --------------------------------------------------------------------------------------------- bias-variance
def _decomposition_summary(log_probs: torch.Tensor, targets: torch.Tensor, groups: list[int]) -> tuple[dict, dict]:
    """Means (dict) and per-sample columns (dict of lists) of the CE and MSE decompositions."""
    ce = cross_entropy_bias_variance(log_probs, targets)
    mse = mse_bias_variance(log_probs.exp(), targets, groups=groups)
    member_acc = (log_probs.argmax(-1) == targets.unsqueeze(0)).double().mean(-1) * 100  # (M,)
    m_mean, m_std = mean_std(member_acc.tolist())
    ensemble_pred = ce.average.argmax(-1)
    means = {**ce.mean(), "mse_bias2": float(mse.bias.mean()), "mse_variance": float(mse.variance.mean()),
             "mse_risk": float(mse.risk.mean()), "member_top1_mean": m_mean, "member_top1_std": m_std,
             "ensemble_top1": float((ensemble_pred == targets).double().mean() * 100), "num_models": ce.num_models}
    per_sample = {
        "sample": list(range(targets.numel())), "target": targets.tolist(),
        "bias": ce.bias.tolist(), "variance": ce.variance.tolist(), "risk": ce.risk.tolist(),
        "mse_bias2": mse.bias.tolist(), "mse_variance": mse.variance.tolist(), "mse_risk": mse.risk.tolist(),
        "ensemble_pred": ensemble_pred.tolist(),
        "member_correct": (log_probs.argmax(-1) == targets.unsqueeze(0)).double().mean(0).tolist(),
    }
    return means, per_sample


def _train_split_family(base: dict, out: Path, prefix: str, plans: list[SplitPlan], n: int, *, method: dict,
                        teacher: dict | None, model: str | None) -> tuple[list[Path], list[dict]]:
    runs, records = [], []
    for i, plan in enumerate(plans):
        name = plan.run_name(prefix, n)
        exp = _experiment(base, out, name, seed=plan.train_seed, method=method, teacher=teacher, model=model,
                          split_run=True)
        _log(f"{prefix}: model {i + 1}/{len(plans)} ({name}, {plan.indices.numel()} training images)")
        summary = run_on_split(exp, plan.indices)
        runs.append(exp.run_dir)
        records.append({"run": name, "partition": plan.partition, "split": plan.split, "seed": plan.seed,
                        "train_seed": plan.train_seed, "train_size": int(plan.indices.numel()),
                        "best_top1": summary.get("best_top1"), "last_top1": summary.get("last_top1")})
    return runs, records


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in ("last", "best"):
        raise AnalysisError(f"--checkpoint must be 'last' or 'best', got {checkpoint!r}")


def bias_variance_experiment(
    base: dict,
    out: str | Path,
    *,
    splits: int = 2,
    partitions: int = 1,
    seeds: Sequence[int] = (0,),
    models: Sequence[str] | None = None,
    widths: Sequence[int] | None = None,
    family: str = "resnet18",
    method: str = "ce",
    teacher: dict | None = None,
    temperature: float | None = None,
    checkpoint: str = "last",
) -> dict:
    """Yang et al.'s bias–variance estimate on the test set, for one model or a sweep of models/widths.

    For each model, ``splits`` (N) models per (partition, seed) are trained on the N disjoint stratified
    parts of the training pool (``partitions`` random partitions; the same parts for every model). The
    test-set log-probabilities of all N × partitions × seeds models give the cross-entropy decomposition
    (Heskes; pooled over every model, no correction) and the MSE estimate (per (partition, seed) group
    with the N/(N−1) factor, averaged over the groups).

    Args:
        base: raw base config (:func:`base_config`); out: output folder (runs and results).
        models: student model names (default: the base's ``student.name``); ``widths`` (with ``family``)
            adds ``{family}_w{k}`` models instead, e.g. ``resnet18_w4``.
        method: ``ce`` (default), ``kd`` or ``wsl`` (then ``teacher`` = :func:`resolve_teacher`'s dict).
        checkpoint: evaluate ``last`` (final) or ``best`` weights.
    Writes:
        ``bias_variance.json`` (settings, one entry per model with mean bias/variance/risk in nats, MSE
        bias²/variance/risk, accuracies and the runs), ``bias_variance.csv`` (one row per model),
        ``bias_variance_per_sample.csv`` and ``.json`` (per test sample and model), ``bias_variance.md``,
        and ``log_probs_<model>.pt`` ((models, samples, classes) float32 log-probabilities and targets).
    Returns the content of ``bias_variance.json``.
    """
    from softlabels.models import list_models

    out = Path(out)
    seeds = check_seeds(seeds)
    _check_checkpoint(checkpoint)
    if method not in ("ce", "kd", "wsl"):
        raise AnalysisError(f"--method must be ce, kd or wsl, got {method!r}")
    names: list[tuple[str, int | None]] = []
    if widths:
        known = set(list_models())
        for k in check_values(list(widths), "--widths", positive=True):
            if not isinstance(k, int):
                raise AnalysisError(f"--widths: {k!r} is not a whole number")
            name = f"{family}_w{k}"
            if name not in known:
                avail = sorted(int(n.rsplit("_w", 1)[1]) for n in known if n.startswith(f"{family}_w")
                               and n.rsplit("_w", 1)[1].isdigit())
                raise AnalysisError(f"--widths: no model {name!r}; registered widths of {family}: {avail or 'none'}")
            names.append((name, k))
    for m in models or ([] if widths else [str((base.get("student") or {}).get("name", "resnet8"))]):
        names.append((m, None))
    method_section = _method(base, method, temperature=temperature)
    plans = plan_splits(base, splits, partitions, seeds)
    groups = [p.group for p in plans]
    entries, per_sample_rows, per_sample_json = [], [], {}
    for model, width in names:
        prefix = f"{method}_{model}"
        run_dirs, records = _train_split_family(base, out, prefix, plans, splits, method=method_section,
                                                teacher=teacher if method != "ce" else None, model=model)
        log_probs, targets = test_log_probs(run_dirs, checkpoint=checkpoint)
        torch.save({"log_probs": log_probs.float(), "targets": targets, "runs": [r["run"] for r in records]},
                   out / f"log_probs_{model}.pt")
        means, per_sample = _decomposition_summary(log_probs, targets, groups)
        summary = json.loads((run_dirs[0] / "summary.json").read_text())
        entries.append({"name": model, "model": model, "width": width, "method": method,
                        "parameters": summary.get("student_parameters"), **means, "runs": records})
        per_sample_json[model] = per_sample
        for i in range(targets.numel()):
            per_sample_rows.append({"model": model, "width": width, **{k: v[i] for k, v in per_sample.items()}})
    result = {
        "analysis": "bias-variance",
        "dataset": (base.get("data") or {}).get("name"),
        "method": method_section,
        "teacher": teacher if method != "ce" else None,
        "splits": splits, "partitions": partitions, "seeds": seeds, "checkpoint": checkpoint,
        "train_pool_size": int(sum(p.indices.numel() for p in plans[:splits])),
        "split_sizes": [int(p.indices.numel()) for p in plans[:splits]],
        "units": "bias, variance, risk: cross-entropy in nats (Heskes, geometric-mean average model); "
                 "mse_*: squared error summed over classes (Yang et al.)",
        "models": entries,
    }
    cols = ["name", "width", "parameters", "num_models", "bias", "variance", "risk", "mse_bias2", "mse_variance",
            "mse_risk", "member_top1_mean", "member_top1_std", "ensemble_top1"]
    _write_json(out / "bias_variance.json", result)
    _write_csv(out / "bias_variance.csv", entries, cols)
    _write_csv(out / "bias_variance_per_sample.csv", per_sample_rows,
               ["model", "width", "sample", "target", "bias", "variance", "risk", "mse_bias2", "mse_variance",
                "mse_risk", "ensemble_pred", "member_correct"])
    _write_json(out / "bias_variance_per_sample.json", per_sample_json)
    result["table"] = markdown_table(entries, cols)
    (out / "bias_variance.md").write_text(result["table"] + "\n")
    return result


# --------------------------------------------------------------------------------------------- temperature sweep
def temperature_sweep(
    base: dict, out: str | Path, *, teacher: dict, temperatures: Sequence[float] = (1, 2, 4, 8),
    seeds: Sequence[int] = (0,),
) -> dict:
    """KD (the ``kd`` method; base KD weights or CE 0.1 / KL 0.9) at each temperature and seed.

    Per run: the regularization-sample fraction at the run's T (and at T = 1) per epoch, from
    ``metrics.jsonl``, and best/last top-1. Per T: means over seeds. Answers: does the fraction (mean over
    epochs) rise with T (Spearman ρ over T, sign of the trend, monotone?), and does accuracy fall as the
    fraction rises (Pearson and Spearman across T and across all runs, and within each T over seeds).
    Writes ``temperature_sweep.json``, ``temperature_sweep.csv`` (per T), ``temperature_sweep_runs.csv``,
    ``temperature_sweep_epochs.csv`` and ``temperature_sweep.md``. Returns the JSON content.
    """
    from softlabels.engine import run_or_resume

    out = Path(out)
    temps = [float(t) for t in check_values(list(temperatures), "--temperatures", positive=True)]
    seeds = check_seeds(seeds)
    runs, epoch_rows = [], []
    total = len(temps) * len(seeds)
    for t in temps:
        for s in seeds:
            name = f"kd_T{t:g}_seed{s}"
            exp = _experiment(base, out, name, seed=s, method=_method(base, "kd", temperature=t), teacher=teacher)
            _log(f"temperature sweep: run {len(runs) + 1}/{total} ({name})")
            summary = run_or_resume(exp)
            rows = _run_metrics(exp.run_dir)
            frac = _curve(rows, "reg_fraction")
            frac1 = _curve(rows, "reg_fraction_t1")
            runs.append({
                "run": name, "temperature": t, "seed": s,
                "best_top1": summary.get("best_top1"), "last_top1": summary.get("last_top1"),
                "reg_fraction_mean": mean_std(frac)[0], "reg_fraction_last": frac[-1] if frac else None,
                "reg_fraction_t1_mean": mean_std(frac1)[0], "reg_fraction_t1_last": frac1[-1] if frac1 else None,
                "reg_fraction_per_epoch": frac, "test_top1_per_epoch": _curve(rows, "test_top1"),
            })
            for r in rows:
                epoch_rows.append({"temperature": t, "seed": s, "epoch": r.get("epoch"),
                                   "reg_fraction": r.get("reg_fraction"), "reg_fraction_t1": r.get("reg_fraction_t1"),
                                   "wsl_weight_mean": r.get("wsl_weight_mean"), "test_top1": r.get("test_top1"),
                                   "train_loss": r.get("train_loss")})
    per_t = []
    for t in temps:
        group = [r for r in runs if r["temperature"] == t]
        row = {"temperature": t, "runs": len(group)}
        for key in ("best_top1", "last_top1", "reg_fraction_mean", "reg_fraction_last", "reg_fraction_t1_mean"):
            row[key], row[f"{key}_std"] = mean_std(r[key] for r in group)
        per_t.append(row)
    xs = [r["temperature"] for r in per_t]
    frac_t = [r["reg_fraction_mean"] for r in per_t]
    rho_count = spearman(xs, frac_t)
    steps = [b - a for a, b in zip(frac_t, frac_t[1:]) if a is not None and b is not None]
    within = {}
    for t in temps:
        group = [r for r in runs if r["temperature"] == t]
        within[f"{t:g}"] = spearman([r["reg_fraction_mean"] for r in group], [r["best_top1"] for r in group])
    answers = {
        "count_vs_temperature": {
            "spearman": rho_count, "trend_sign": _sign(rho_count),
            "monotone_increasing": bool(steps) and all(d > 0 for d in steps),
            "rises_with_temperature": None if rho_count is None else rho_count > 0,
            "measure": "reg_fraction_mean: fraction of regularization samples (p_s^T(y) > p_t^T(y), at the run's T) "
                       "averaged over epochs, then over seeds",
        },
        "accuracy_vs_count": {
            "across_temperatures": {
                "pearson_best": pearson(frac_t, [r["best_top1"] for r in per_t]),
                "spearman_best": spearman(frac_t, [r["best_top1"] for r in per_t]),
                "pearson_last": pearson(frac_t, [r["last_top1"] for r in per_t]),
                "spearman_last": spearman(frac_t, [r["last_top1"] for r in per_t]),
            },
            "across_runs": {
                "pearson_best": pearson([r["reg_fraction_mean"] for r in runs], [r["best_top1"] for r in runs]),
                "spearman_best": spearman([r["reg_fraction_mean"] for r in runs], [r["best_top1"] for r in runs]),
            },
            "within_temperature_spearman_best": within,
        },
    }
    acc = answers["accuracy_vs_count"]["across_temperatures"]["spearman_best"]
    answers["accuracy_vs_count"]["falls_as_count_rises"] = None if acc is None else acc < 0
    result = {"analysis": "temperature-sweep", "dataset": (base.get("data") or {}).get("name"), "teacher": teacher,
              "method": _method(base, "kd"), "temperatures": temps, "seeds": seeds,
              "per_temperature": per_t, "answers": answers, "runs": runs}
    cols = ["temperature", "runs", "reg_fraction_mean", "reg_fraction_last", "reg_fraction_t1_mean", "best_top1",
            "best_top1_std", "last_top1", "last_top1_std"]
    _write_json(out / "temperature_sweep.json", result)
    _write_csv(out / "temperature_sweep.csv", per_t, cols)
    _write_csv(out / "temperature_sweep_runs.csv", runs,
               ["run", "temperature", "seed", "best_top1", "last_top1", "reg_fraction_mean", "reg_fraction_last",
                "reg_fraction_t1_mean", "reg_fraction_t1_last"])
    _write_csv(out / "temperature_sweep_epochs.csv", epoch_rows)
    c = answers["count_vs_temperature"]
    a = answers["accuracy_vs_count"]["across_temperatures"]
    text = markdown_table(per_t, cols) + "\n\n" + "\n".join([
        f"- regularization fraction vs T: Spearman {_fmt(c['spearman'])} "
        f"(rises: {_yes_no(c['rises_with_temperature'])}, monotone: {_yes_no(c['monotone_increasing'])})",
        f"- best top-1 vs regularization fraction across T: Spearman {_fmt(a['spearman_best'])}, "
        f"Pearson {_fmt(a['pearson_best'])} (falls as the count rises: "
        f"{_yes_no(answers['accuracy_vs_count']['falls_as_count_rises'])})",
    ])
    (out / "temperature_sweep.md").write_text(text + "\n")
    result["table"] = text
    return result


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


def _yes_no(v: bool | None) -> str:
    return "undetermined" if v is None else ("yes" if v else "no")


# --------------------------------------------------------------------------------------------- filtering
FILTERING_ARMS = {"kd": "none", "filter": "filter", "wsl": "wsl"}


def filtering_experiment(
    base: dict, out: str | Path, *, teacher: dict, seeds: Sequence[int] = (0, 1, 2),
    temperature: float | None = None, alpha: float | None = None,
) -> dict:
    """The paper's filtering experiment: three arms of the ``wsl`` method with the same T, α and CE weight —
    ``kd`` (``weighting: none``, KD with WSL's scaling), ``filter`` (soft loss dropped on regularization
    samples) and ``wsl`` — for the same seeds.

    Writes ``filtering.json`` (runs, per-arm mean ± std of best/last top-1, paired differences to kd),
    ``filtering.csv`` (per arm and seed), ``filtering_summary.csv`` (per arm) and ``filtering.md``.
    """
    from softlabels.config import method_params
    from softlabels.engine import run_or_resume

    out = Path(out)
    seeds = check_seeds(seeds)
    for what, v in (("--temperature", temperature), ("--alpha", alpha)):
        if v is not None:
            check_values([v], what, positive=what == "--temperature")
    runs, params = [], {}
    for arm, weighting in FILTERING_ARMS.items():
        for s in seeds:
            name = f"{arm}_seed{s}"
            section = _method(base, "wsl", temperature=temperature, alpha=alpha, weighting=weighting)
            exp = _experiment(base, out, name, seed=s, method=section, teacher=teacher)
            params[arm] = {"name": "wsl", **method_params(exp).model_dump()}
            _log(f"filtering: run {len(runs) + 1}/{len(seeds) * 3} ({name})")
            summary = run_or_resume(exp)
            rows = _run_metrics(exp.run_dir)
            frac = _curve(rows, "reg_fraction")
            runs.append({"arm": arm, "seed": s, "run": name, "best_top1": summary.get("best_top1"),
                         "last_top1": summary.get("last_top1"), "reg_fraction_mean": mean_std(frac)[0],
                         "reg_fraction_last": frac[-1] if frac else None})
    arms = []
    for arm in FILTERING_ARMS:
        group = [r for r in runs if r["arm"] == arm]
        row = {"arm": arm, "n": len(group)}
        for key in ("best_top1", "last_top1", "reg_fraction_last"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(r[key] for r in group)
        for key in ("best_top1", "last_top1"):
            m, sd = row[f"{key}_mean"], row[f"{key}_std"]
            row[f"{key}_pm"] = "–" if m is None else f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"
        arms.append(row)

    def paired(arm: str, key: str) -> float | None:
        diffs = []
        for s in seeds:
            a = next(r[key] for r in runs if r["arm"] == arm and r["seed"] == s)
            b = next(r[key] for r in runs if r["arm"] == "kd" and r["seed"] == s)
            if a is not None and b is not None:
                diffs.append(a - b)
        return mean_std(diffs)[0]

    diffs = {f"{arm}_minus_kd": {"best_top1": paired(arm, "best_top1"), "last_top1": paired(arm, "last_top1")}
             for arm in ("filter", "wsl")}
    fb = diffs["filter_minus_kd"]["best_top1"]
    wb = diffs["wsl_minus_kd"]["best_top1"]
    result = {"analysis": "filtering", "dataset": (base.get("data") or {}).get("name"), "teacher": teacher,
              "methods": params, "seeds": seeds, "arms": arms, "paired_differences": diffs,
              "answers": {"filtering_hurts": None if fb is None else fb < 0, "wsl_beats_kd": None if wb is None else wb > 0},
              "runs": runs}
    _write_json(out / "filtering.json", result)
    _write_csv(out / "filtering.csv", runs, ["arm", "seed", "run", "best_top1", "last_top1", "reg_fraction_mean",
                                             "reg_fraction_last"])
    summary_cols = ["arm", "n", "best_top1_mean", "best_top1_std", "last_top1_mean", "last_top1_std",
                    "reg_fraction_last_mean"]
    _write_csv(out / "filtering_summary.csv", arms, summary_cols)
    text = markdown_table(arms, ["arm", "n", "best_top1_pm", "last_top1_pm", "reg_fraction_last_mean"]) + "\n\n" + (
        f"- filter − kd (best top-1, paired by seed): {_fmt(fb)} (filtering hurts: {_yes_no(result['answers']['filtering_hurts'])})\n"
        f"- wsl − kd (best top-1, paired by seed): {_fmt(wb)}")
    (out / "filtering.md").write_text(text + "\n")
    result["table"] = text
    return result


# --------------------------------------------------------------------------------------------- soft-label bias-variance
def soft_label_bias_variance(
    base: dict,
    out: str | Path,
    *,
    teacher: dict,
    splits: int = 2,
    partitions: int = 1,
    seeds: Sequence[int] = (0,),
    temperature: float | None = None,
    alpha: float | None = None,
    checkpoint: str = "last",
) -> dict:
    """Per-sample bias and variance of CE, KD and WSL students, related to regularization samples.

    The three methods are trained on the same split plan (:func:`plan_splits`, same training seeds), so
    per-sample differences are paired. With ȳ the normalized geometric mean of a method's models, per
    test sample: bias = −log ȳ(y), variance = mean_m KL(ȳ ‖ p_m), risk = their sum (nats).

    A test sample is a REGULARIZATION SAMPLE when the CE students' average model, softened at the
    distillation temperature T, puts more mass on the true class than the teacher: ȳ_CE^T(y) > p_t^T(y),
    where ȳ_CE^T = softmax(mean_m log p_m / T) (the geometric mean of the softened CE students). The
    fraction of CE models with p_m^T(y) > p_t^T(y) is reported too (``ce_vote``).

    For KD and WSL, per group (regularization samples, the others, all): count, fraction, mean change of
    bias, variance and risk against CE, and the fractions of samples whose bias rose, whose variance fell,
    and both. Writes ``soft_label_bv.json``, ``soft_label_bv.csv`` (the group table),
    ``soft_label_bv_methods.csv``, ``soft_label_bv_per_sample.csv``/``.json`` and ``soft_label_bv.md``.
    """
    out = Path(out)
    seeds = check_seeds(seeds)
    _check_checkpoint(checkpoint)
    if temperature is None:
        temperature = (base.get("method") or {}).get("temperature", 4.0)
    temperature = float(check_values([temperature], "--temperature", positive=True)[0])
    if alpha is not None:
        check_values([alpha], "--alpha")
    plans = plan_splits(base, splits, partitions, seeds)
    groups = [p.group for p in plans]
    model = str((base.get("student") or {}).get("name", "resnet8"))
    sections = {
        "ce": {"name": "ce"},
        "kd": _method(base, "kd", temperature=temperature),
        "wsl": _method(base, "wsl", temperature=temperature, alpha=alpha),
    }
    decomps, methods, records = {}, [], {}
    for name, section in sections.items():
        run_dirs, recs = _train_split_family(base, out, f"{name}_{model}", plans, splits, method=section,
                                             teacher=teacher, model=model)
        log_probs, targets = test_log_probs(run_dirs, checkpoint=checkpoint)
        decomps[name] = (cross_entropy_bias_variance(log_probs, targets), log_probs)
        means, _ = _decomposition_summary(log_probs, targets, groups)
        methods.append({"name": name, "method": section, **means})
        records[name] = recs
    exp = _experiment(base, out, "teacher_eval", seed=int(base.get("seed", 0)), method=sections["kd"], teacher=teacher)
    teacher_lp = _teacher_log_probs(exp)
    ce, ce_lp = decomps["ce"]
    y = targets.view(-1, 1)
    teacher_t = torch.log_softmax(teacher_lp / temperature, -1).gather(1, y).squeeze(1).exp()
    ce_avg_t = torch.log_softmax(ce.average / temperature, -1).gather(1, y).squeeze(1).exp()
    ce_members_t = torch.log_softmax(ce_lp / temperature, -1).gather(2, y.unsqueeze(0).expand(ce_lp.shape[0], -1, 1))
    ce_vote = (ce_members_t.squeeze(2).exp() > teacher_t.unsqueeze(0)).double().mean(0)
    reg = ce_avg_t > teacher_t
    n = targets.numel()
    changes = []
    for name in ("kd", "wsl"):
        d = decomps[name][0]
        db, dv, dr = d.bias - ce.bias, d.variance - ce.variance, d.risk - ce.risk
        for group, mask in (("regularization", reg), ("other", ~reg), ("all", torch.ones_like(reg))):
            count = int(mask.sum())
            row = {"method": name, "group": group, "count": count, "fraction": count / n if n else None}
            if count:
                row.update(mean_delta_bias=float(db[mask].mean()), mean_delta_variance=float(dv[mask].mean()),
                           mean_delta_risk=float(dr[mask].mean()),
                           frac_bias_up=float((db[mask] > 0).double().mean()),
                           frac_variance_down=float((dv[mask] < 0).double().mean()),
                           frac_bias_up_variance_down=float(((db[mask] > 0) & (dv[mask] < 0)).double().mean()))
            changes.append(row)
    per_sample = {"sample": list(range(n)), "target": targets.tolist(), "regularization": reg.long().tolist(),
                  "teacher_pT_y": teacher_t.tolist(), "ce_pT_y": ce_avg_t.tolist(), "ce_vote": ce_vote.tolist()}
    for name, (d, _) in decomps.items():
        per_sample.update({f"bias_{name}": d.bias.tolist(), f"variance_{name}": d.variance.tolist(),
                           f"risk_{name}": d.risk.tolist()})
    teacher_top1 = float((teacher_lp.argmax(-1) == targets).double().mean() * 100)
    result = {
        "analysis": "soft-label-bv", "dataset": (base.get("data") or {}).get("name"), "teacher": teacher,
        "teacher_top1": teacher_top1, "temperature": temperature, "splits": splits, "partitions": partitions,
        "seeds": seeds, "checkpoint": checkpoint,
        "units": "bias, variance, risk: cross-entropy in nats per test sample (Heskes decomposition)",
        "methods": methods,
        "regularization": {
            "definition": "test sample with softmax(mean_m log p_m / T)(y) > p_teacher^T(y), "
                          "p_m the CE students (their softened geometric-mean model)",
            "temperature": temperature, "count": int(reg.sum()), "num_samples": n,
            "fraction": float(reg.double().mean()) if n else None, "ce_vote_mean": float(ce_vote.mean()) if n else None,
        },
        "changes": changes,
        "runs": records,
    }
    cols = ["method", "group", "count", "fraction", "mean_delta_bias", "mean_delta_variance", "mean_delta_risk",
            "frac_bias_up", "frac_variance_down", "frac_bias_up_variance_down"]
    method_cols = ["name", "num_models", "bias", "variance", "risk", "member_top1_mean", "ensemble_top1"]
    _write_json(out / "soft_label_bv.json", result)
    _write_csv(out / "soft_label_bv.csv", changes, cols)
    _write_csv(out / "soft_label_bv_methods.csv", methods, method_cols)
    rows = [{k: v[i] for k, v in per_sample.items()} for i in range(n)]
    _write_csv(out / "soft_label_bv_per_sample.csv", rows, list(per_sample))
    _write_json(out / "soft_label_bv_per_sample.json", per_sample)
    text = (markdown_table(methods, method_cols) + "\n\n"
            + f"regularization samples (T = {temperature:g}): {int(reg.sum())} of {n}\n\n"
            + markdown_table(changes, cols))
    (out / "soft_label_bv.md").write_text(text + "\n")
    result["table"] = text
    return result

