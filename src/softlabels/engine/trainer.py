"""The Trainer: one experiment from a validated config to a finished run folder.

Run folder: config.yaml (resolved), metrics.jsonl, metrics.csv, last.pt (every epoch, full
state), best.pt (weights at the best epoch), summary.json. Data order and augmentation are a
pure function of (seed, epoch) and the LR schedule a pure function of progress, so resuming
from last.pt reproduces an uninterrupted run exactly on CPU.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from softlabels.analysis.regularization import RegularizationTracker
from softlabels.config import Experiment, method_params, to_yaml, validate_config
from softlabels.data import build_data
from softlabels.engine import checkpoint as ckpt_io
from softlabels.engine.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from softlabels.engine.env import environment, seed_everything, select_device
from softlabels.engine.metrics import topk_correct
from softlabels.engine.run_dir import RunDir
from softlabels.io import append_jsonl, read_jsonl, write_csv, write_jsonl
from softlabels.engine.schedule import lr_at
from softlabels.engine.teacher_cache import open_teacher_cache
from softlabels.errors import CheckpointError, ConfigError, NonFiniteLossError
from softlabels.methods import Distiller, get_method
from softlabels.models import create_model
from softlabels.models.base import count_parameters


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI), the per-epoch line remains
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, *, dist_info: DistInfo | None = None,
             autocast=contextlib.nullcontext) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean CE of ``model`` on ``loader``; restores the model's mode.

    Under torchrun each process evaluates its shard and the counts are summed over processes.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # top-1, top-5, CE sum, count
    for images, targets, _ in loader:
        if targets.numel() == 0:
            continue
        with autocast():
            logits = model(images)
        logits = logits.float()
        hits = topk_correct(logits, targets, (1, 5))
        ce = nn.functional.cross_entropy(logits, targets, reduction="sum")
        totals += torch.stack([torch.tensor(float(hits[1])), torch.tensor(float(hits[5])), ce.double().cpu(),
                               torch.tensor(float(targets.numel()))]).to(device)
    all_reduce_sum(totals, dist_info or DistInfo())
    model.train(was_training)
    c1, c5, loss_sum, n = totals.tolist()
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss_sum / n}


def load_teacher(exp: Experiment, num_classes: int, in_channels: int, device: torch.device) -> tuple[nn.Module, dict]:
    """Build the configured teacher, load its checkpoint, check it fits the data; frozen, on device."""
    tcfg = exp.teacher
    ckpt = ckpt_io.load_checkpoint(tcfg.checkpoint)
    saved_classes = ckpt.get("num_classes")
    if saved_classes is not None and saved_classes != num_classes:
        raise CheckpointError(
            f"teacher checkpoint {tcfg.checkpoint} predicts {saved_classes} classes but the student/data have "
            f"{num_classes}; use a teacher trained on the same dataset"
        )
    teacher = create_model(tcfg.name, tcfg.num_classes or num_classes, in_channels)
    ckpt_io.load_model_weights(teacher, ckpt, expected_name=tcfg.name)
    teacher.to(device).eval().requires_grad_(False)
    info = {
        "name": tcfg.name,
        "checkpoint": str(tcfg.checkpoint),
        "sha256": ckpt_io.sha256_of(ckpt["_path"]),
        "recorded_top1": (ckpt.get("metrics") or {}).get("test_top1"),
        "train_mode": tcfg.train_mode,
    }
    return teacher, info


class Trainer:
    """Builds data, models, method and optimizer from an :class:`Experiment` and runs it."""

    def __init__(self, exp: Experiment, *, run_dir: str | Path | None = None, resume: bool = False) -> None:
        self.exp = exp
        self.run_dir = Path(run_dir) if run_dir is not None else exp.run_dir
        self.resume = resume
        rt = exp.runtime
        if rt.threads:
            torch.set_num_threads(rt.threads)
        self.dist, dist_device = init_distributed(rt.device)
        # one seed for model init everywhere (DDP also broadcasts rank 0's weights); data order uses exp.seed
        seed_everything(exp.seed, rt.deterministic)
        self.device = dist_device or select_device(rt.device)
        self.data = build_data(exp.data, device=self.device, seed=exp.seed)
        if self.dist.enabled:
            for loader in (self.data.train, self.data.val, self.data.test):
                if loader is not None:
                    loader.shard(self.dist.rank, self.dist.world_size)
        info = self.data.info
        self.num_classes = exp.student.num_classes or info.num_classes
        if self.num_classes != info.num_classes:
            raise ConfigError(
                f"student.num_classes is {self.num_classes} but dataset '{info.name}' has {info.num_classes} classes"
            )
        student = create_model(exp.student.name, self.num_classes, info.in_channels)
        if exp.student.init:
            ckpt_io.load_model_weights(student, ckpt_io.load_checkpoint(exp.student.init), expected_name=exp.student.name)
        if exp.student.infodrop is not None:
            from softlabels.models.infodrop import insert_infodrop

            insert_infodrop(student, **exp.student.infodrop.model_dump(exclude={"finetune_epochs"}))
        student.to(self.device)
        teacher, self.teacher_info = None, None
        method_cls = get_method(exp.method.name)
        if method_cls.requires_teacher:
            teacher, self.teacher_info = load_teacher(exp, self.num_classes, info.in_channels, self.device)
        self.params = method_params(exp)
        self.method: Distiller = method_cls(
            student, teacher, self.params, teacher_train_mode=bool(exp.teacher and exp.teacher.train_mode)
        ).to(self.device)
        if exp.teacher is not None and exp.teacher.cache:
            self.method.teacher_cache = open_teacher_cache(exp, self.teacher_info, self.data, self.method,
                                                           self.method.init_epochs + exp.schedule.epochs)
        sample_images = next(iter(self.data.train))[0][:16]
        self.method.setup(sample_images, self.data)
        self.method.to(self.device)
        self._apply_runtime_options()
        self.total_epochs = self.method.init_epochs + exp.schedule.epochs
        self.base_lr = exp.optim.lr * (self.dist.world_size if rt.scale_lr else 1)
        self.optimizer = self._make_optimizer()
        self.tracker = None
        if method_cls.logit_based and teacher is not None:
            self.tracker = RegularizationTracker(self.num_classes, getattr(self.params, "temperature", 1.0),
                                                 keep_samples=exp.runtime.per_sample_dump)
        self.start_epoch = 0
        self.best = {"top1": -math.inf, "epoch": -1}
        self.wall_before = 0.0
        self._prepare_run_dir()

    # ------------------------------------------------------------------ set-up
    def _apply_runtime_options(self) -> None:
        """channels_last, SyncBN, torch.compile, autocast/GradScaler and the DDP wrapper."""
        rt, method = self.exp.runtime, self.method
        if rt.channels_last:
            method.to(memory_format=torch.channels_last)
        if rt.sync_bn and self.dist.enabled and self.device.type == "cuda":
            method.student = nn.SyncBatchNorm.convert_sync_batchnorm(method.student)
        if rt.compile:
            method.student.compile(backend=rt.compile_backend)
            if method.teacher is not None:
                method.teacher.compile(backend=rt.compile_backend)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rt.amp)
        if dtype is not None:
            self.autocast = lambda: torch.autocast(device_type=self.device.type, dtype=dtype)
        else:
            self.autocast = contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type) if rt.amp == "fp16" else None
        self.model: nn.Module = method
        if self.dist.enabled:
            unused = rt.find_unused_parameters
            if unused is None:
                unused = method.init_epochs > 0
            self.model = nn.parallel.DistributedDataParallel(
                method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.exp.optim
        params = self.method.trainable_parameters()
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=self.base_lr, momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay)
        return torch.optim.AdamW(params, lr=self.base_lr, weight_decay=o.weight_decay)

    def _prepare_run_dir(self) -> None:
        rd = self.run_dir
        last = rd / "last.pt"
        if self.resume:
            if not last.is_file():
                raise CheckpointError(f"cannot resume: no last.pt in {rd} (start the run without --resume)")
            self._load_resume_state(ckpt_io.load_checkpoint(last))
        elif last.is_file() or (rd / "metrics.jsonl").is_file():
            raise ConfigError(
                f"run folder {rd} already holds a run; continue it with --resume {rd}, or choose another "
                "name/output_dir (nothing was overwritten)"
            )
        barrier(self.dist)  # every process has checked the folder before the main one writes to it
        if self.dist.is_main:
            rd.mkdir(parents=True, exist_ok=True)
            (rd / "config.yaml").write_text(to_yaml(self.exp))

    def _load_resume_state(self, state: dict) -> None:
        saved = state.get("config")
        if saved is not None:
            ours = self.exp.model_dump(mode="json")
            diffs = _diff_keys(saved, ours)
            diffs = [d for d in diffs if d not in {"schedule.epochs", "runtime.progress", "runtime.threads", "output_dir"}]
            if diffs:
                raise ConfigError(
                    f"cannot resume {self.run_dir}: the config differs from the run's in {', '.join(diffs[:8])}; "
                    "resume with the run's own config.yaml"
                )
        ckpt_io.load_model_weights(self.method.student, state)
        self.method.auxiliary.load_state_dict(state.get("auxiliary", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt_io.restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.best = dict(state["best"])
        self.wall_before = float(state.get("wall_time_s", 0.0))
        rows = [r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r.get("epoch", 0) <= self.start_epoch]
        if self.dist.is_main:
            write_jsonl(self.run_dir / "metrics.jsonl", rows)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        exp = self.exp
        epochs = self.total_epochs
        t_start = time.perf_counter()
        images_seen, train_time = 0, 0.0
        record: dict = {}
        if self.start_epoch >= epochs:
            print(f"run {self.run_dir} already finished {self.start_epoch} epochs", file=sys.stderr)
        for epoch in range(self.start_epoch, epochs):
            t0 = time.perf_counter()
            train_stats, seen = self._train_epoch(epoch)
            dt = time.perf_counter() - t0
            images_seen += seen
            train_time += dt
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats}
            record["images_per_s"] = seen / dt if dt > 0 else None
            if hasattr(self.method, "diagnostics"):  # method-specific per-epoch statistics (e.g. ProKT)
                record.update(self.method.diagnostics())
            record["epoch_time_s"] = dt
            eval_kw = {"dist_info": self.dist, "autocast": self.autocast}
            test = evaluate(self.method.student, self.data.test, self.num_classes, **eval_kw)
            record.update({f"test_{k}": v for k, v in test.items()})
            selector = "test_top1"
            if self.data.val is not None:
                val = evaluate(self.method.student, self.data.val, self.num_classes, **eval_kw)
                record.update({f"val_{k}": v for k, v in val.items()})
                selector = "val_top1"
            if self.tracker is not None:
                record.update(self.tracker.summary(lambda t: all_reduce_sum(t, self.dist)))
                if exp.runtime.per_sample_dump:
                    self._dump_samples(epoch + 1)
            improved = record[selector] > self.best["top1"]
            if improved:
                self.best = {"top1": record[selector], "epoch": epoch + 1, "selected_by": selector}
            wall = self.wall_before + time.perf_counter() - t_start
            cache = self.method.teacher_cache
            if cache is not None:
                cache.flush()
                record.update(teacher_cache_hits=cache.hits, teacher_cache_misses=cache.misses)
                cache.hits = cache.misses = 0
            if self.dist.is_main:
                append_jsonl(self.run_dir / "metrics.jsonl", record)
                for name, obj in getattr(self.method, "artifacts", dict)().items():  # e.g. DFA's dfa_alpha.json
                    (self.run_dir / name).write_text(json.dumps(obj, indent=2) + "\n")
                write_csv(self.run_dir / "metrics.csv", read_jsonl(self.run_dir / "metrics.jsonl"))
                if improved:
                    ckpt_io.save_atomic(self._weights_state(epoch + 1, record), self.run_dir / "best.pt")
                if (epoch + 1) % exp.runtime.checkpoint_every == 0 or epoch + 1 == epochs:
                    ckpt_io.save_atomic(self._full_state(epoch + 1, record, wall), self.run_dir / "last.pt")
                self._print_epoch(record)
        wall = self.wall_before + time.perf_counter() - t_start
        summary = self._summary(wall, images_seen / train_time if train_time > 0 else None)
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        barrier(self.dist)
        return summary

    def _train_epoch(self, epoch: int) -> tuple[dict, int]:
        """One pass over the training loader; returns (train_* metrics, images seen)."""
        exp, method, opt = self.exp, self.method, self.optimizer
        loader = self.data.train
        loader.set_epoch(epoch)
        method.set_epoch(epoch)
        method.train()
        if exp.student.infodrop is not None:  # off in the fine-tuning epochs at the end
            from softlabels.models.infodrop import set_infodrop_active

            set_infodrop_active(method.student, epoch < self.total_epochs - exp.student.infodrop.finetune_epochs)
        init = method.init_epochs
        if self.tracker is not None:
            self.tracker.reset()
        names: list[str] | None = None
        sums = None  # on-device running sums of [loss, *terms] weighted by batch size; one sync per epoch
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        steps = len(loader)
        recent: list[torch.Tensor] = []
        check_every = 1 if self.device.type == "cpu" else 25
        show = exp.runtime.progress and self.dist.is_main
        bar = _progress(loader, steps, f"epoch {epoch + 1}/{self.total_epochs}", show)
        t0 = time.perf_counter()
        for step, (images, targets, indices) in enumerate(bar):
            # an initialisation phase (AB, FSP, FT) runs at the base LR before the main schedule
            lr = self.base_lr if epoch < init else lr_at(exp.schedule, self.base_lr, epoch - init, step, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            if exp.runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits, terms = self.model(images, targets, indices)
            loss = sum(t.float() for t in terms.values())
            step_values = torch.stack([loss.detach(), *(v.detach().float() for v in terms.values())])
            recent.append(step_values)
            # a host sync per step would stall the GPU: check finiteness every `check_every` steps
            if len(recent) >= check_every or step + 1 == steps:
                self._check_finite(recent, list(terms), epoch, step, steps)
                recent = []
            opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
            else:
                loss.backward()
                opt.step()
            n = targets.numel()
            values = step_values * n
            if sums is None:
                names, sums = ["loss", *(f"loss_{k}" for k in terms)], values
            else:
                sums += values
            correct += (logits.detach().argmax(1) == targets).sum()
            seen += n
            if self.tracker is not None and method.last_teacher_logits is not None:
                self.tracker.update(logits, method.last_teacher_logits, targets, indices)
            if bar is not loader and step % 20 == 0:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{100 * int(correct) / seen:.1f}", img_s=f"{rate:.0f}")
        if sums is None:
            sums = torch.zeros(0, device=self.device)
        totals = all_reduce_sum(torch.cat([sums, correct.float().view(1), torch.tensor([float(seen)], device=self.device)]),
                                self.dist).tolist()
        seen = int(totals[-1])
        stats = {f"train_{k}": v / max(seen, 1) for k, v in zip(names or [], totals[:-2])}
        stats["train_top1"] = 100.0 * totals[-2] / max(seen, 1)
        return stats, seen

    def _dump_samples(self, epoch: int) -> None:
        """per_sample/epoch_NNNN.pt (one file per process under torchrun: epoch_NNNN.rankR.pt)."""
        folder = self.run_dir / "per_sample"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{self.dist.rank}" if self.dist.enabled else ""
        ckpt_io.save_atomic({"epoch": epoch, **self.tracker.sample_table()}, folder / f"epoch_{epoch:04d}{suffix}.pt")

    @staticmethod
    def _check_finite(recent: list[torch.Tensor], names: list[str], epoch: int, last_step: int, steps: int) -> None:
        """Raise NonFiniteLossError naming the first step in ``recent`` whose loss is NaN/inf."""
        block = torch.stack(recent)
        if bool(torch.isfinite(block).all()):
            return
        row = int((~torch.isfinite(block)).any(dim=1).nonzero()[0])
        step = last_step - len(recent) + 1 + row
        detail = ", ".join(f"{k}={v:.4g}" for k, v in zip(["loss", *names], block[row].tolist()))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}/{steps}: {detail}; lower optim.lr or "
            "check the data and the teacher checkpoint"
        )

    # ------------------------------------------------------------------ state
    def _model_meta(self) -> dict:
        return {
            "format": ckpt_io.FORMAT,
            "model_name": self.exp.student.name,
            "num_classes": self.num_classes,
            "in_channels": self.data.info.in_channels,
            "dataset": self.data.info.name,
        }

    def _weights_state(self, epoch: int, record: dict) -> dict:
        return {
            **self._model_meta(),
            "epoch": epoch,
            "model": self.method.student.state_dict(),
            "auxiliary": self.method.auxiliary.state_dict(),
            "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))},
            "config": self.exp.model_dump(mode="json"),
        }

    def _full_state(self, epoch: int, record: dict, wall: float) -> dict:
        return {
            **self._weights_state(epoch, record),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"name": self.exp.schedule.name, "epoch": epoch},
            "rng": ckpt_io.capture_rng(),
            "best": self.best,
            "wall_time_s": wall,
        }

    def _print_epoch(self, r: dict) -> None:
        parts = [f"epoch {r['epoch']:>3}/{self.total_epochs}", f"loss {r['train_loss']:.4f}",
                 f"train {r['train_top1']:.2f}", f"test {r['test_top1']:.2f}"]
        if "val_top1" in r:
            parts.append(f"val {r['val_top1']:.2f}")
        if "reg_fraction" in r:
            parts.append(f"reg {100 * r['reg_fraction']:.1f}%")
        if r.get("images_per_s"):
            parts.append(f"{r['images_per_s']:.0f} img/s")
        print("  ".join(parts), file=sys.stderr, flush=True)

    def _summary(self, wall: float, images_per_s: float | None) -> dict:
        rows = read_jsonl(self.run_dir / "metrics.jsonl")
        last = rows[-1] if rows else {}
        best_row = next((r for r in rows if r["epoch"] == self.best["epoch"]), {})
        if images_per_s is None:
            rates = [r["images_per_s"] for r in rows if r.get("images_per_s")]
            images_per_s = sum(rates) / len(rates) if rates else None
        return {
            "name": self.exp.name,
            "method": self.exp.method.name,
            "student": self.exp.student.name,
            "student_parameters": count_parameters(self.method.student),
            "auxiliary_parameters": sum(p.numel() for p in self.method.auxiliary.parameters()),
            "teacher": self.teacher_info,
            "dataset": self.data.info.name,
            "epochs": last.get("epoch", 0),
            "total_epochs": self.total_epochs,
            "best_epoch": self.best["epoch"],
            "best_selected_by": self.best.get("selected_by", "test_top1"),
            "best_top1": best_row.get("test_top1"),
            "best_top5": best_row.get("test_top5"),
            "best_val_top1": best_row.get("val_top1"),
            "last_top1": last.get("test_top1"),
            "last_top5": last.get("test_top5"),
            "wall_time_s": wall,
            "images_per_s": images_per_s,
            "seed": self.exp.seed,
            "environment": environment(self.device),
        }


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def train(exp: Experiment, *, resume_dir: str | Path | None = None) -> dict:
    """Run one experiment; with ``resume_dir``, continue the run saved there."""
    trainer = Trainer(exp, run_dir=resume_dir, resume=resume_dir is not None)
    return trainer.fit()


def experiment_from_run(run_dir: str | Path) -> Experiment:
    """The validated Experiment stored in a run folder's config.yaml."""
    return RunDir(run_dir).config()


def run_or_resume(exp: Experiment) -> dict:
    """Skip a finished run (return its summary), resume an unfinished one, or start a new one.

    A run is finished when its summary.json records all its epochs and its config asked for the
    same ``schedule.epochs`` (:meth:`RunDir.is_finished`).
    """
    rd = RunDir(exp.run_dir)
    if rd.is_finished(exp):
        return rd.summary()
    resume = rd.last_path.is_file()
    if not resume and rd.metrics_path.is_file():
        rd.metrics_path.unlink()  # killed before its first checkpoint: nothing to keep
    return Trainer(exp, run_dir=rd.path, resume=resume).fit()
