"""``softlabels bench``: throughput of the framework's distillation step against a bare PyTorch step.

Variants, each timed for whole "epochs" of ``steps`` batches, round-robin so that machine noise hits
all of them alike; the median epoch time of each is kept:

- ``framework``: the Trainer's own training epoch (its in-memory loader with augmentation, the
  method, the regularization tracker, loss bookkeeping);
- ``bare``: a plain PyTorch loop doing the same work on pre-made batches (student forward and
  backward, teacher forward under no_grad, the same loss, SGD step);
- ``cached``: the framework with ``teacher.cache`` (slots filled beforehand);
- ``student_only``: the framework training the student alone (method ``ce``);
- ``data``: the framework's data pipeline alone.

Ratios: ``overhead_ratio`` = framework time / bare time (target ≤ 1.05), ``cached_ratio`` = cached
time / student-only time (≤ 1.10), ``data_ratio`` = data images/s / framework images/s (≥ 10).
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from softlabels.config import validate_config
from softlabels.engine.checkpoint import save_atomic
from softlabels.engine.trainer import Trainer
from softlabels.losses import wsl_soft_loss
from softlabels.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _experiment(root: Path, name: str, student: str, teacher_ckpt: Path | None, teacher: str, shape, batch: int,
                steps: int, classes: int, method: dict, runtime: dict, cache: bool = False, augment: bool = True) -> dict:
    cfg = {
        "name": name, "seed": 0, "output_dir": str(root),
        "data": {"name": "synthetic", "batch_size": batch, "augment": augment, "crop_padding": 4, "flip": True,
                 "synthetic": {"num_classes": classes, "image_size": shape[1], "channels": shape[0],
                               "train_size": batch * steps, "test_size": 2 * classes}},
        "student": {"name": student}, "method": method,
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant", "epochs": 1000, "milestones": []},
        "runtime": {"progress": False, **runtime},
    }
    if teacher_ckpt is not None:
        cfg["teacher"] = {"name": teacher, "checkpoint": str(teacher_ckpt), "cache": cache,
                          "cache_path": str(root / "cache")}
    return cfg


def save_random_teacher(root: Path, teacher: str, classes: int, channels: int) -> Path:
    """A freshly initialised ``teacher`` saved as a checkpoint under ``root`` (weights do not matter for speed)."""
    path = root / "teacher.pt"
    save_atomic({"model": create_model(teacher, classes, channels).state_dict(), "model_name": teacher,
                 "num_classes": classes}, path)
    return path


def framework_trainer(root: Path, name: str, student: str, teacher_ckpt: Path | None, teacher: str, shape,
                      batch: int, steps: int, classes: int, method: dict, runtime: dict, cache: bool = False,
                      augment: bool = True) -> Trainer:
    """The Trainer that the ``framework`` variant times: a synthetic in-memory dataset of ``batch * steps`` images
    (batch augmentation: crop padding 4 and flip unless ``augment`` is False), SGD, constant LR, ``method``."""
    return Trainer(validate_config(_experiment(root, name, student, teacher_ckpt, teacher, shape, batch, steps, classes,
                                               method, runtime, cache, augment)))


def framework_epoch(trainer: Trainer) -> int:
    """One timed training epoch of ``trainer`` (the framework's own loop); returns the images seen."""
    return trainer._train_epoch(0)[1]


def run_bench(teacher: str = "resnet32x4", student: str = "resnet8x4", shape=(3, 32, 32), batch: int = 64,
              classes: int = 100, steps: int = 8, rounds: int = 3, device: str = "auto", amp: str = "off",
              channels_last: bool = False, temperature: float = 4.0, alpha: float = 2.25) -> dict:
    """Measure the variants above; returns a JSON-ready dict (times in seconds, rates in images/s)."""
    runtime = {"device": device, "amp": amp, "channels_last": channels_last}
    method = {"name": "wsl", "temperature": temperature, "alpha": alpha}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        root = Path(tmp)
        torch.manual_seed(0)
        teacher_ckpt = save_random_teacher(root, teacher, classes, shape[0])
        common = (student, teacher_ckpt, teacher, shape, batch, steps, classes)
        framework = framework_trainer(root, "framework", *common, method, runtime)
        student_only = Trainer(validate_config(
            _experiment(root, "student_only", student, None, teacher, shape, batch, steps, classes, {"name": "ce"},
                        runtime)))
        cached_cfg = _experiment(root, "cached_fill", *common, method, runtime, cache=True)
        Trainer(validate_config(cached_cfg))._train_epoch(0)  # fill the cache slots of epoch 0
        cached = Trainer(validate_config({**cached_cfg, "name": "cached"}))
        dev = framework.device

        # the bare loop: same models, same loss, pre-made batches already on the device
        s_model = create_model(student, classes, shape[0]).to(dev)
        t_model = create_model(teacher, classes, shape[0]).to(dev).eval().requires_grad_(False)
        if channels_last:
            s_model, t_model = s_model.to(memory_format=torch.channels_last), t_model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(s_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        batches = [(torch.randn(batch, *shape, device=dev), torch.randint(0, classes, (batch,), device=dev))
                   for _ in range(steps)]
        autocast = framework.autocast

        def bare_epoch() -> int:
            s_model.train()
            for x, y in batches:
                with autocast():
                    with torch.no_grad():
                        t_logits = t_model(x)  # teacher first, as the framework does
                    logits = s_model(x)
                loss = F.cross_entropy(logits.float(), y) + alpha * wsl_soft_loss(logits, t_logits, y, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return batch * steps

        def data_epoch() -> int:
            n = 0
            for x, _, _ in framework.data.train:
                n += x.shape[0]
            return n

        variants = {
            "framework": lambda: framework_epoch(framework),
            "bare": bare_epoch,
            "cached": lambda: cached._train_epoch(0)[1],
            "student_only": lambda: student_only._train_epoch(0)[1],
            "data": data_epoch,
        }
        for fn in variants.values():  # warm-up (allocator, first-call costs)
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        images: dict[str, int] = {}
        for _ in range(rounds):
            for name, fn in variants.items():
                _sync(dev)
                t0 = time.perf_counter()
                images[name] = fn()
                _sync(dev)
                times[name].append(time.perf_counter() - t0)
        hits = cached.method.teacher_cache.hits

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: images[k] / med[k] for k in med}
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "teacher": teacher, "student": student, "input_shape": list(shape), "batch_size": batch,
        "num_classes": classes, "steps_per_epoch": steps, "rounds": rounds, "method": "wsl",
        "device": str(dev), "amp": amp, "channels_last": channels_last,
        "images_per_s": rate["framework"],
        "overhead_ratio": med["framework"] / med["bare"],
        "cached_ratio": med["cached"] / med["student_only"],
        "data_ratio": rate["data"] / rate["framework"],
        "images_per_s_by_variant": rate,
        "median_epoch_time_s": med,
        "all_epoch_times_s": times,
        "cache_hits_while_timing": hits,
        "peak_memory_mb": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process max RSS",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
    }


def format_report(r: dict) -> str:
    lines = [f"{r['teacher']} -> {r['student']}, input {tuple(r['input_shape'])}, batch {r['batch_size']}, "
             f"{r['device']}, amp {r['amp']}, {r['threads']} threads"]
    for k, v in r["images_per_s_by_variant"].items():
        lines.append(f"  {k:<13} {v:10.1f} img/s")
    lines.append(f"  overhead_ratio {r['overhead_ratio']:.3f} (target <= 1.05)   cached_ratio {r['cached_ratio']:.3f} "
                 f"(<= 1.10)   data_ratio {r['data_ratio']:.1f} (>= 10)   peak memory {r['peak_memory_mb']:.0f} MB")
    return "\n".join(lines)


def main_bench(args) -> dict:
    steps, rounds = (2, 2) if args.quick else (args.steps, args.rounds)
    result = run_bench(args.teacher, args.student, tuple(args.shape), args.batch_size, args.num_classes, steps,
                       rounds, args.device, args.amp, args.channels_last)
    print(format_report(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result
