"""The Trainer: one experiment from a validated config to a finished run folder.

The loop itself trains, evaluates and picks the best epoch; everything else happens in callbacks
(``softlabels.callbacks``) run for each event in ascending ``order``: train.log (0), method
diagnostics and artifacts (10), regularization statistics (20) and per-sample dump (25), teacher-cache counts
(30), checkpoints (50), metric files (60), console (90: header, progress bar, epoch lines,
summary), then the config's ``callbacks:``, those passed to :func:`train` (default order 100)
and the ``loggers:`` (200). See docs/architecture.md and docs/tracking.md.

Data order and augmentation are a pure function of (seed, epoch) and the LR schedule a pure
function of progress, so resuming from last.pt reproduces an uninterrupted run exactly on CPU.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from softlabels.callbacks import Callback, build_callbacks, sort_callbacks
from softlabels.callbacks.checkpointer import Checkpointer
from softlabels.callbacks.console import Console
from softlabels.callbacks.log_file import LogFile
from softlabels.callbacks.method_hooks import MethodHooks
from softlabels.callbacks.metric_files import MetricFiles
from softlabels.callbacks.regularization import PerSampleDump, RegularizationStats
from softlabels.callbacks.teacher_cache_stats import TeacherCacheStats
from softlabels.config import Experiment, method_params
from softlabels.data import build_data
from softlabels.engine import checkpoint as ckpt_io
from softlabels.engine.build import build_student, check_finite_state, load_teacher
from softlabels.engine.distributed import all_reduce_sum, barrier, init_distributed
from softlabels.engine.env import seed_everything, select_device
from softlabels.engine.evaluation import evaluate, evaluate_weights, state_copy
from softlabels.engine.optim import OptimizerSpec, set_scheduled_lr
from softlabels.engine.run_dir import RunDir
from softlabels.engine.run_start import plan_start, restore_metrics
from softlabels.engine.summary import run_summary
from softlabels.engine.sync_batchnorm import convert_group_batchnorm
from softlabels.engine.teacher_cache import open_teacher_cache
from softlabels.errors import CheckpointError, ConfigError, NonFiniteLossError
from softlabels.io import to_json
from softlabels.methods import Distiller, get_method

__all__ = ["Trainer", "evaluate", "experiment_from_run", "load_teacher", "run_or_resume", "train"]


def _overrides(cb: Callback, event: str) -> bool:
    return getattr(type(cb), event, None) is not getattr(Callback, event)


class Trainer:
    """Builds data, models, method and optimizers from an :class:`Experiment` and runs it.

    Args:
        run_dir: the run folder (default ``exp.run_dir``); resume: continue it from last.pt.
        callbacks: extra :class:`~softlabels.Callback` objects (after the config's).
        data: a DataBundle to train on instead of building one from ``exp.data`` (sharded under torchrun).
    """

    def __init__(self, exp: Experiment, *, run_dir: str | Path | None = None, resume: bool = False,
                 callbacks: list[Callback] | None = None, data=None) -> None:
        self.exp = exp
        self.run_dir = RunDir(run_dir if run_dir is not None else exp.run_dir)
        self.resume = resume
        self.log = logging.getLogger("softlabels")
        if self.log.level == logging.NOTSET:
            self.log.setLevel(logging.INFO)
        rt = exp.runtime
        if rt.threads:
            torch.set_num_threads(rt.threads)
        self.dist, dist_device = init_distributed(rt.device)
        # one seed for model init everywhere (DDP also broadcasts rank 0's weights); data order uses exp.seed
        seed_everything(exp.seed, rt.deterministic)
        self.device = dist_device or select_device(rt.device)
        self.data = data if data is not None else build_data(exp.data, device=self.device, seed=exp.seed)
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
        student = build_student(exp, self.num_classes, info.in_channels).to(self.device)
        teacher, self.teacher_info = None, None
        method_cls = get_method(exp.method.name)
        if method_cls.requires_teacher:
            teacher, self.teacher_info = load_teacher(exp, self.num_classes, info.in_channels, self.device)
        self.params = method_params(exp)
        self.method: Distiller = method_cls(
            student, teacher, self.params, teacher_train_mode=bool(exp.teacher and exp.teacher.train_mode)
        ).to(self.device)
        self.method.dist = self.dist
        if exp.teacher is not None and exp.teacher.cache:
            self.method.teacher_cache = open_teacher_cache(exp, self.teacher_info, self.data, self.method,
                                                           self.method.init_epochs + exp.schedule.epochs)
        sample_images = next(iter(self.data.train))[0][:16]
        self.method.setup(sample_images, self.data)
        self.method.to(self.device)
        self._apply_runtime_options()
        self.total_epochs = self.method.init_epochs + exp.schedule.epochs
        self.base_lr = exp.optim.lr * (self.dist.world_size if rt.scale_lr else 1)
        self.optimizer_specs: dict[str, OptimizerSpec] = self.method.configure_optimizers(exp.optim, self.base_lr)
        if "main" not in self.optimizer_specs:
            raise ConfigError(f"method '{exp.method.name}': configure_optimizers() must return a 'main' optimizer")
        self.optimizers = {name: spec.optimizer for name, spec in self.optimizer_specs.items()}
        self._stepped = [s.optimizer for s in self.optimizer_specs.values() if s.stepped_by == "trainer"]
        # regularization statistics only at a logit temperature the method declares (none for FitNet, AT, ...)
        self.tracker = None
        temperature = getattr(self.params, "temperature", None)
        if method_cls.logit_based and teacher is not None and temperature is not None:
            from softlabels.analysis.regularization import RegularizationTracker

            self.tracker = RegularizationTracker(self.num_classes, float(temperature),
                                                 keep_samples=rt.per_sample_dump)
        self.callbacks = self._build_callbacks(callbacks)
        self.start_epoch = 0
        self.best = {"top1": -math.inf, "epoch": -1}
        self._best_weights: dict | None = None  # runtime.test_eval at_end: the best-validation student weights
        self.wall_before = 0.0
        self.wall_time_s = 0.0
        self._resume_record: dict | None = None
        self._start = plan_start(self)  # "fresh", "restart" or "resume"; refuses folders it must not touch
        barrier(self.dist)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The "main" optimizer (student and auxiliary parameters)."""
        return self.optimizers["main"]

    # ------------------------------------------------------------------ set-up
    def _build_callbacks(self, extra: list[Callback] | None) -> list[Callback]:
        builtin: list[Callback] = [LogFile(), MethodHooks()]
        if self.tracker is not None:
            builtin.append(RegularizationStats())
            if self.exp.runtime.per_sample_dump:
                builtin.append(PerSampleDump())
        builtin += [TeacherCacheStats(), Checkpointer(), MetricFiles(), Console()]
        configured = build_callbacks(getattr(self.exp, "callbacks", None) or [])
        configured += build_callbacks(getattr(self.exp, "loggers", None) or [], kind="logger")
        return sort_callbacks(builtin + configured + list(extra or []))

    def _emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def _apply_runtime_options(self) -> None:
        """channels_last, SyncBN, torch.compile, autocast/GradScaler and the DDP wrapper."""
        rt, method = self.exp.runtime, self.method
        if rt.channels_last:
            method.to(memory_format=torch.channels_last)
        if rt.sync_bn and self.dist.enabled:  # torch's SyncBatchNorm on CUDA, ours on CPU/gloo
            convert = nn.SyncBatchNorm.convert_sync_batchnorm if self.device.type == "cuda" else convert_group_batchnorm
            method.student = convert(method.student)
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

    def load_state(self, state: dict) -> None:
        """Restore a last.pt state (weights, optimizers, scaler, RNG, progress); called on resume."""
        ckpt_io.load_model_weights(self.method.student, state)
        path = state.get("_path", self.run_dir.last_path)
        try:
            self.method.auxiliary.load_state_dict(state.get("auxiliary", {}))
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit the method's auxiliary modules: "
                                  f"{str(exc).splitlines()[0][:300]}") from None
        saved = state["optimizers"]
        for name, opt in self.optimizers.items():
            if name not in saved:
                raise CheckpointError(f"checkpoint {path} has no state for optimizer '{name}' (written by another "
                                      "method or version); start the run over in a new folder")
            opt.load_state_dict(saved[name])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt_io.restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.best = dict(state["best"])
        self.wall_before = float(state.get("wall_time_s", 0.0))
        self._resume_record = state.get("record")

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train from ``start_epoch`` to ``total_epochs`` holding the run folder's lock; returns the summary."""
        lock = self.run_dir.lock() if self.dist.is_main else contextlib.nullcontext()
        with lock:
            try:
                return self._fit_locked()
            except BaseException as exc:
                for cb in self.callbacks:
                    with contextlib.suppress(Exception):
                        cb.on_exception(self, exc)
                raise

    def _prepare_folder(self) -> None:
        """Under the lock: write config.yaml, drop what a restart or resume must not keep."""
        rd = self.run_dir
        if self.dist.is_main:
            rd.clean_tmp()
            if self._start == "restart":
                for path in (rd.metrics_path, rd.csv_path, rd.summary_path):
                    path.unlink(missing_ok=True)
            elif self._start == "resume":
                rd.write_metrics(restore_metrics(rd.metrics(), self.start_epoch, self._resume_record))
            rd.write_config(self.exp)
        barrier(self.dist)

    def _fit_locked(self) -> dict:
        self._prepare_folder()
        epochs = self.total_epochs
        t_start = time.perf_counter()
        images_seen, train_time = 0, 0.0
        self._emit("on_fit_start")
        if self.start_epoch >= epochs:
            self.log.info(f"run {self.run_dir.path} already finished {self.start_epoch} epochs")
        for epoch in range(self.start_epoch, epochs):
            t0 = time.perf_counter()
            train_stats, seen = self.train_one_epoch(epoch)
            dt = time.perf_counter() - t0
            images_seen += seen
            train_time += dt
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats,
                      "images_per_s": seen / dt if dt > 0 else None, "epoch_time_s": dt}
            self._evaluate_into(record, last_epoch=epoch + 1 == epochs)
            self.wall_time_s = self.wall_before + time.perf_counter() - t_start
            self._emit("on_epoch_end", record)
        self.wall_time_s = self.wall_before + time.perf_counter() - t_start
        summary = run_summary(self, self.wall_time_s, images_seen / train_time if train_time > 0 else None)
        self._emit("on_fit_end", summary)
        if self.dist.is_main:
            self.run_dir.write_json("summary.json", summary)
        barrier(self.dist)
        return summary

    def _evaluate_into(self, record: dict, *, last_epoch: bool) -> None:
        """Add val_*/test_* metrics to the epoch record and update ``self.best`` (val top-1 when there is a
        validation split, else test top-1). ``runtime.test_eval``: when_best evaluates the test set only at a new
        best and at the last epoch; at_end only at the last epoch, adding the best-validation weights' test
        metrics to that row as best_test_* (evaluation changes no state, so the order is free)."""
        eval_kw = {"dist_info": self.dist, "autocast": self.autocast}
        selector, mode = "test_top1", self.exp.runtime.test_eval
        if self.data.val is not None:
            val = evaluate(self.method.student, self.data.val, self.num_classes, **eval_kw)
            record.update({f"val_{k}": v for k, v in val.items()})
            selector = "val_top1"
        improved = selector == "val_top1" and record[selector] > self.best["top1"]
        if selector == "test_top1" or last_epoch or mode == "every_epoch" or (mode == "when_best" and improved):
            test = evaluate(self.method.student, self.data.test, self.num_classes, **eval_kw)
            record.update({f"test_{k}": v for k, v in test.items()})
            improved = record[selector] > self.best["top1"]
        if improved:
            self.best = {"top1": record[selector], "epoch": record["epoch"], "selected_by": selector}
            if mode == "at_end" and not last_epoch:  # kept for the test pass after the last epoch
                self._best_weights = state_copy(self.method.student)
        elif mode == "at_end" and last_epoch:  # best weights from memory, or best.pt after a resume
            weights = self._best_weights or self.run_dir.load_checkpoint("best")["model"]
            test = evaluate_weights(self.method.student, weights, self.data.test, self.num_classes, **eval_kw)
            record.update({f"best_test_{k}": v for k, v in test.items()})

    def train_one_epoch(self, epoch: int) -> tuple[dict, int]:
        """One pass over the training loader (0-based ``epoch``); returns (train_* metrics, images seen).

        Emits on_epoch_start and on_train_batch_end; evaluation and on_epoch_end are :meth:`fit`'s.
        """
        exp, method = self.exp, self.method
        loader = self.data.train
        loader.set_epoch(epoch)
        method.set_epoch(epoch)
        method.train()
        if exp.student.infodrop is not None:  # off in the fine-tuning epochs at the end
            from softlabels.models.infodrop import set_infodrop_active

            set_infodrop_active(method.student, epoch < self.total_epochs - exp.student.infodrop.finetune_epochs)
        self._emit("on_epoch_start", epoch)
        batch_callbacks = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_end")]
        names: list[str] | None = None
        sums = None  # on-device running sums of [loss, *terms] weighted by batch size; one sync per epoch
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        steps = len(loader)
        recent: list[torch.Tensor] = []
        check_every = 1 if self.device.type == "cpu" else 25
        for step, (images, targets, indices) in enumerate(loader):
            # an initialisation phase (AB, FSP, FT) runs at the base LR before the main schedule
            set_scheduled_lr(self.optimizer_specs, exp.schedule, epoch, step, steps, method.init_epochs)
            if exp.runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                out = self.model(images, targets, indices)
            logits, terms = out.logits, out.terms
            loss = sum(t.float() for t in terms.values())
            step_values = torch.stack([loss.detach(), *(v.detach().float() for v in terms.values())])
            recent.append(step_values)
            # a host sync per step would stall the GPU: check finiteness every `check_every` steps
            if len(recent) >= check_every or step + 1 == steps:
                self._check_finite(recent, list(terms), epoch, step, steps)
                recent = []
            self._step(loss)
            n = targets.numel()
            values = step_values * n
            if sums is None:
                names, sums = ["loss", *(f"loss_{k}" for k in terms)], values
            else:
                sums += values
            correct += (logits.detach().argmax(1) == targets).sum()
            seen += n
            for cb in batch_callbacks:  # the console's progress bar among them
                cb.on_train_batch_end(self, out, (images, targets, indices))
        if sums is None:
            sums = torch.zeros(0, device=self.device)
        totals = all_reduce_sum(torch.cat([sums, correct.float().view(1), torch.tensor([float(seen)], device=self.device)]),
                                self.dist).tolist()
        seen = int(totals[-1])
        stats = {f"train_{k}": v / max(seen, 1) for k, v in zip(names or [], totals[:-2])}
        stats["train_top1"] = 100.0 * totals[-2] / max(seen, 1)
        return stats, seen

    def _step(self, loss: torch.Tensor) -> None:
        """Backward of the summed loss and a step of every trainer-stepped optimizer."""
        for opt in self._stepped:
            opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            for opt in self._stepped:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            for opt in self._stepped:
                opt.step()

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

    def check_finite_state(self, epoch: int, file: str) -> None:
        """NonFiniteLossError before a checkpoint write when a student/auxiliary parameter or buffer is NaN/inf."""
        bad = check_finite_state({"student": self.method.student, "auxiliary": self.method.auxiliary})
        if bad is not None:
            raise NonFiniteLossError(
                f"non-finite values in {bad} after epoch {epoch}: stopped before writing {file} (the checkpoints in "
                f"{self.run_dir.path} are the last good ones); lower optim.lr or check the data"
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

    def weights_state(self, record: dict) -> dict:
        """best.pt: student and auxiliary weights, the epoch's scalar metrics and the config."""
        return {
            **self._model_meta(),
            "epoch": record["epoch"],
            "model": self.method.student.state_dict(),
            "auxiliary": self.method.auxiliary.state_dict(),
            "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))},
            "config": self.exp.model_dump(mode="json"),
        }

    def full_state(self, record: dict) -> dict:
        """last.pt: :meth:`weights_state` plus every optimizer, scaler, RNG states, best-so-far, wall time and
        the epoch's metrics row; callbacks may add entries (on_checkpoint)."""
        state = {
            **self.weights_state(record),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"name": self.exp.schedule.name, "epoch": record["epoch"]},
            "rng": ckpt_io.capture_rng(),
            "best": self.best,
            "wall_time_s": self.wall_time_s,
            "record": json.loads(to_json(record, indent=None)),  # as metrics.jsonl gets it (weights_only-safe)
        }
        self._emit("on_checkpoint", state)
        return state


def train(exp: Experiment, *, resume_dir: str | Path | None = None, callbacks: list[Callback] | None = None) -> dict:
    """Run one experiment; with ``resume_dir``, continue the run saved there. ``callbacks``: extra Callback
    objects run after the built-in and configured ones (unless their ``order`` says otherwise)."""
    trainer = Trainer(exp, run_dir=resume_dir, resume=resume_dir is not None, callbacks=callbacks)
    return trainer.fit()


def experiment_from_run(run_dir: str | Path) -> Experiment:
    """The validated Experiment stored in a run folder's config.yaml."""
    return RunDir(run_dir).config()


def run_or_resume(exp: Experiment, *, callbacks: list[Callback] | None = None) -> dict:
    """Skip a finished run (return its summary), resume an unfinished one, or start a new one.

    A run is finished when its summary.json records all its epochs and its config asked for the
    same ``schedule.epochs`` (:meth:`RunDir.is_finished`). A run killed before its first checkpoint
    starts over.
    """
    rd = RunDir(exp.run_dir)
    if rd.is_finished(exp):
        return rd.summary()
    return Trainer(exp, run_dir=rd.path, resume=rd.has_checkpoint(), callbacks=callbacks).fit()
