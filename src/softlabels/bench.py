"""``softlabels bench``: throughput of the framework's distillation step against a bare PyTorch step.

Variants, each timed for whole "epochs" of ``steps`` batches, in interleaved rounds (every variant once per
round, so that machine noise hits all of them alike); min/median/max epoch time per variant are kept:

- ``framework``: the Trainer's own training epoch (its in-memory loader with augmentation, the
  method, the regularization tracker, loss bookkeeping);
- ``bare``: a plain PyTorch loop doing the same work on pre-made batches (student forward and
  backward, teacher forward under no_grad, the same loss, SGD step);
- ``cached``: the framework with ``teacher.cache`` (slots filled beforehand);
- ``student_only``: the framework training the student alone (method ``ce``);
- ``data``: the framework's data pipeline alone.

Ratios (of median epoch times, and per round for the spread): ``overhead_ratio`` = framework / bare
(target ≤ 1.05), ``cached_ratio`` = cached / student-only (≤ 1.10), ``data_ratio`` = data images/s /
framework images/s (≥ 10).

``--runtime-paths`` times the framework variant under other runtime options instead: eager float32,
``runtime.compile`` (inductor), ``runtime.amp: bf16`` and both; each path's first epoch (compilation,
first-call costs) is timed separately so that ratios come with compile time excluded and included.
"""
from __future__ import annotations

import contextlib
import io
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from softlabels.config import validate_config
from softlabels.engine.checkpoint import save_atomic
from softlabels.engine.trainer import Trainer
from softlabels.errors import UserError
from softlabels.io import write_json
from softlabels.losses import wsl_soft_loss
from softlabels.models import create_model

# a ratio whose per-round values spread wider than this (max - min, relative to the median) is not trusted
DEFAULT_MAX_SPREAD = 0.10
# --runtime-paths: name -> runtime options on top of the bench's device/channels_last
RUNTIME_PATHS = {
    "eager_fp32": {"compile": False, "amp": "off"},
    "compile": {"compile": True, "compile_backend": "inductor", "amp": "off"},
    "bf16": {"compile": False, "amp": "bf16"},
    "compile_bf16": {"compile": True, "compile_backend": "inductor", "amp": "bf16"},
}


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
    """One timed training epoch of ``trainer`` (the framework's own loop, epoch 0 again); returns the images seen."""
    return trainer.train_one_epoch(0)[1]


# ----------------------------------------------------------------------------- timing and spread
def interleaved_times(variants: dict[str, Callable[[], int]], rounds: int, device: torch.device,
                      warmup: bool = True) -> tuple[dict[str, list[float]], dict[str, int], dict[str, float]]:
    """Run every variant once per round, in turn; returns (epoch times, images per epoch, warm-up times).

    The warm-up epoch of each variant (allocator, first-call costs, compilation) is timed apart.
    """
    first: dict[str, float] = {}
    images: dict[str, int] = {}
    if warmup:
        for name, fn in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            images[name] = fn()
            _sync(device)
            first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            images[name] = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times, images, first


def spread(values: list[float]) -> dict:
    """min/median/max of ``values`` and their relative spread (max - min) / median."""
    med = statistics.median(values)
    return {"min": min(values), "median": med, "max": max(values),
            "rel_spread": (max(values) - min(values)) / med if med > 0 else float("inf")}


def ratio_spread(num: list[float], den: list[float], scale: float = 1.0) -> dict:
    """``scale`` x a ratio of median times, plus the spread of its per-round values (``num[i] / den[i]``)."""
    per_round = [scale * a / b for a, b in zip(num, den)]
    return {"ratio": scale * statistics.median(num) / statistics.median(den), "per_round": spread(per_round)}


def spread_warnings(ratios: dict[str, dict], rounds: int, max_spread: float) -> list[str]:
    """One line per ratio that cannot be trusted (too few rounds, or per-round values spread too wide)."""
    if rounds < 3:
        return [f"{rounds} round(s): too few to judge the spread; use --rounds 3 or more before trusting any ratio"]
    out = []
    for name, r in ratios.items():
        s = r["per_round"]
        if s["rel_spread"] > max_spread:
            out.append(f"{name} {r['ratio']:.3f}: per-round values {s['min']:.3f}..{s['max']:.3f} spread "
                       f"{100 * s['rel_spread']:.0f}% (> {100 * max_spread:.0f}%): the machine is too noisy to "
                       "trust it; raise --steps/--rounds or measure on an idle machine")
    return out


def _environment(dev: torch.device) -> dict:
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    load = None
    with contextlib.suppress(OSError):
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return {
        "peak_memory_mb": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process max RSS",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
        "load_average_1_5_15": load,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or None,
    }


# ----------------------------------------------------------------------------- the two benchmarks
def run_bench(teacher: str = "resnet32x4", student: str = "resnet8x4", shape=(3, 32, 32), batch: int = 64,
              classes: int = 100, steps: int = 8, rounds: int = 3, device: str = "auto", amp: str = "off",
              channels_last: bool = False, temperature: float = 4.0, alpha: float = 2.25,
              max_spread: float = DEFAULT_MAX_SPREAD) -> dict:
    """Measure the variants above; returns a JSON-ready dict (times in seconds, rates in images/s)."""
    runtime = {"device": device, "amp": amp, "channels_last": channels_last}
    method = {"name": "wsl", "temperature": temperature, "alpha": alpha}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        root = Path(tmp)
        torch.manual_seed(0)
        teacher_ckpt = save_random_teacher(root, teacher, classes, shape[0])
        common = (student, teacher_ckpt, teacher, shape, batch, steps, classes)
        framework = framework_trainer(root, "framework", *common, method, runtime)
        student_only = framework_trainer(root, "student_only", student, None, teacher, shape, batch, steps, classes,
                                         {"name": "ce"}, runtime)
        framework_epoch(framework_trainer(root, "cached_fill", *common, method, runtime, cache=True))  # fill epoch 0
        cached = framework_trainer(root, "cached", *common, method, runtime, cache=True)
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
            "cached": lambda: framework_epoch(cached),
            "student_only": lambda: framework_epoch(student_only),
            "data": data_epoch,
        }
        times, images, _ = interleaved_times(variants, rounds, dev)
        hits = cached.method.teacher_cache.hits

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: images[k] / med[k] for k in med}
    ratios = {"overhead_ratio": ratio_spread(times["framework"], times["bare"]),
              "cached_ratio": ratio_spread(times["cached"], times["student_only"]),
              # a ratio of rates: (data images / data time) / (framework images / framework time)
              "data_ratio": ratio_spread(times["framework"], times["data"], images["data"] / images["framework"])}
    warnings = spread_warnings({k: v for k, v in ratios.items() if k != "data_ratio"}, rounds, max_spread)
    return {
        "teacher": teacher, "student": student, "input_shape": list(shape), "batch_size": batch,
        "num_classes": classes, "steps_per_epoch": steps, "rounds": rounds, "method": "wsl",
        "device": str(dev), "amp": amp, "channels_last": channels_last,
        "images_per_s": rate["framework"],
        "overhead_ratio": ratios["overhead_ratio"]["ratio"],
        "cached_ratio": ratios["cached_ratio"]["ratio"],
        "data_ratio": ratios["data_ratio"]["ratio"],
        "ratio_spread": ratios,
        "images_per_s_by_variant": rate,
        "median_epoch_time_s": med,
        "epoch_time_spread_s": {k: spread(v) for k, v in times.items()},
        "all_epoch_times_s": times,
        "max_spread": max_spread,
        "spread_warnings": warnings,
        "cache_hits_while_timing": hits,
        **_environment(dev),
    }


def run_runtime_paths(teacher: str = "resnet32x4", student: str = "resnet8x4", shape=(3, 32, 32), batch: int = 64,
                      classes: int = 100, steps: int = 8, rounds: int = 3, device: str = "auto",
                      channels_last: bool = False, paths: list[str] | None = None, temperature: float = 4.0,
                      alpha: float = 2.25, max_spread: float = DEFAULT_MAX_SPREAD) -> dict:
    """Framework epochs (WSL) under each runtime path of ``RUNTIME_PATHS`` against ``eager_fp32``.

    ``speedup_excluding_compile`` = eager median epoch / path median epoch (steady state);
    ``speedup_including_compile`` = eager (first + timed epochs) / path (first + timed epochs), the whole span
    measured here; ``first_epoch_extra_s`` = first epoch - median epoch (compilation and first-call costs).
    """
    paths = list(paths or RUNTIME_PATHS)
    if "eager_fp32" not in paths:
        paths.insert(0, "eager_fp32")
    unknown = [p for p in paths if p not in RUNTIME_PATHS]
    if unknown:
        raise UserError(f"--runtime-paths: unknown path(s) {', '.join(unknown)}; choose from {', '.join(RUNTIME_PATHS)}")
    method = {"name": "wsl", "temperature": temperature, "alpha": alpha}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        root = Path(tmp)
        torch.manual_seed(0)
        teacher_ckpt = save_random_teacher(root, teacher, classes, shape[0])
        trainers = {p: framework_trainer(root, p, student, teacher_ckpt, teacher, shape, batch, steps, classes, method,
                                         {"device": device, "channels_last": channels_last, **RUNTIME_PATHS[p]})
                    for p in paths}
        dev = trainers["eager_fp32"].device
        variants = {p: (lambda t=t: framework_epoch(t)) for p, t in trainers.items()}
        times, images, first = interleaved_times(variants, rounds, dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = "eager_fp32"
    ratios = {f"{p}_speedup": ratio_spread(times[base], times[p]) for p in paths if p != base}
    out_paths = {}
    for p in paths:
        out_paths[p] = {
            "runtime": RUNTIME_PATHS[p], "images_per_s": images[p] / med[p], "first_epoch_s": first[p],
            "first_epoch_extra_s": first[p] - med[p], "epoch_time_s": spread(times[p]),
            "speedup_excluding_compile": med[base] / med[p],
            "speedup_including_compile": (first[base] + sum(times[base])) / (first[p] + sum(times[p])),
        }
    return {
        "teacher": teacher, "student": student, "input_shape": list(shape), "batch_size": batch,
        "num_classes": classes, "steps_per_epoch": steps, "rounds": rounds, "method": "wsl",
        "device": str(dev), "channels_last": channels_last, "paths": out_paths, "ratio_spread": ratios,
        "all_epoch_times_s": times, "max_spread": max_spread,
        "spread_warnings": spread_warnings(ratios, rounds, max_spread), **_environment(dev),
    }


# ----------------------------------------------------------------------------- report
def _spread_cell(s: dict, scale: float = 1000.0) -> str:
    return f"{scale * s['min']:.0f}/{scale * s['median']:.0f}/{scale * s['max']:.0f}"


def format_report(r: dict) -> str:
    lines = [f"{r['teacher']} -> {r['student']}, input {tuple(r['input_shape'])}, batch {r['batch_size']}, "
             f"{r['device']}, amp {r['amp']}, {r['threads']} threads, {r['rounds']} interleaved rounds"]
    lines.append(f"  {'variant':<13} {'img/s':>10}   epoch ms min/median/max")
    for k, v in r["images_per_s_by_variant"].items():
        lines.append(f"  {k:<13} {v:10.1f}   {_spread_cell(r['epoch_time_spread_s'][k])}")
    for name, target in (("overhead_ratio", "<= 1.05"), ("cached_ratio", "<= 1.10")):
        s = r["ratio_spread"][name]["per_round"]
        lines.append(f"  {name} {r[name]:.3f} (target {target}; per round {s['min']:.3f}/{s['median']:.3f}/"
                     f"{s['max']:.3f})")
    lines.append(f"  data_ratio {r['data_ratio']:.1f} (>= 10)   peak memory {r['peak_memory_mb']:.0f} MB")
    lines += [f"  WARNING: {w}" for w in r["spread_warnings"]]
    return "\n".join(lines)


def format_paths_report(r: dict) -> str:
    lines = [f"{r['teacher']} -> {r['student']}, input {tuple(r['input_shape'])}, batch {r['batch_size']}, "
             f"{r['device']}, {r['threads']} threads, {r['rounds']} interleaved rounds (WSL, framework epoch)"]
    lines.append(f"  {'path':<13} {'img/s':>9}  epoch ms min/median/max  first epoch s  speedup excl./incl. compile")
    for p, v in r["paths"].items():
        lines.append(f"  {p:<13} {v['images_per_s']:9.1f}  {_spread_cell(v['epoch_time_s']):>24}  "
                     f"{v['first_epoch_s']:13.1f}  {v['speedup_excluding_compile']:.3f} / "
                     f"{v['speedup_including_compile']:.3f}")
    lines += [f"  WARNING: {w}" for w in r["spread_warnings"]]
    return "\n".join(lines)


def main_bench(args) -> dict:
    steps, rounds = (2, 2) if args.quick else (args.steps, args.rounds)
    max_spread = getattr(args, "max_spread", DEFAULT_MAX_SPREAD)
    if getattr(args, "runtime_paths", None) is not None:
        result = run_runtime_paths(args.teacher, args.student, tuple(args.shape), args.batch_size, args.num_classes,
                                   steps, rounds, args.device, args.channels_last, args.runtime_paths or None,
                                   max_spread=max_spread)
        print(format_paths_report(result))
    else:
        result = run_bench(args.teacher, args.student, tuple(args.shape), args.batch_size, args.num_classes, steps,
                           rounds, args.device, args.amp, args.channels_last, max_spread=max_spread)
        print(format_report(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return result
