"""Side-by-side throughput: softlabels' distillation step against torchdistill's, in one process.

Both sides train the same student from the same teacher on synthetic images of the same shape, with the same
batch size, the same loss and the same optimizer:

- loss: ``ce_weight * CE(student, y) + kd_weight * T^2 * KL(p_t^T || p_s^T)`` (batch mean), i.e. softlabels'
  method ``kd`` (``ce_weight``/``kd_weight``) and torchdistill's ``KDLoss`` (``alpha``/``beta``) inside its
  ``WeightedSumLoss``; defaults T 4, CE 0.1, KL 0.9 (the CRD benchmark's values);
- optimizer: SGD, LR 0.01, momentum 0.9, weight decay 5e-4, constant LR;
- data: ``batch * steps`` synthetic images, random crop (padding 4) and horizontal flip on both sides
  (``--no-augment`` turns both off). softlabels uses its own in-memory loader (batch-wise augmentation on the
  device), torchdistill the DataLoader it builds from its config over an in-memory Dataset with the usual
  per-sample torchvision transforms.

``softlabels`` is timed through ``softlabels.bench`` (the Trainer's own training epoch, as ``softlabels bench``
times its "framework" variant). ``torchdistill`` is timed through its public API only: ``get_distillation_box``
with a config dict, then the epoch loop of torchdistill's own example script (``pre_epoch_process``, for each
batch ``forward_process`` and ``post_forward_process``, ``post_epoch_process``).

Each variant runs whole epochs of ``--steps`` batches; rounds alternate softlabels, torchdistill, softlabels,
... after one warm-up epoch each, and the median per-step time of each is kept, so that machine noise hits
both alike. Before timing, both frameworks compute the loss of one batch with identical weights: the two
values must agree, which shows that both sides really optimise the same objective.

Usage (from the repository root, with ``pip install -e .[compare]``)::

    python benchmarks/torchdistill_compare.py --json benchmarks/results/torchdistill_compare_cpu.json
    python benchmarks/torchdistill_compare.py --quick          # 2 steps x 3 rounds, about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
from torch.utils.data import Dataset, RandomSampler

from softlabels.bench import _sync, framework_epoch, framework_trainer, save_random_teacher
from softlabels.cli import add_pair_arguments
from softlabels.models import create_model

CROP_PADDING = 4  # the padding softlabels.bench gives its synthetic data
# recorded in the JSON: thread counts and allocator settings change CPU figures
ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


class SyntheticImages(Dataset):
    """In-memory random images (float, already normalised) and labels; optional per-sample crop and flip."""

    def __init__(self, size: int, shape, classes: int, augment: bool, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, *shape, generator=gen)
        self.targets = torch.randint(0, classes, (size,), generator=gen)
        self.transform = None
        if augment:
            from torchvision.transforms import v2

            self.transform = v2.Compose([v2.RandomCrop(tuple(shape[1:]), padding=CROP_PADDING),
                                         v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])


def torchdistill_config(batch: int, temperature: float, ce_weight: float, kd_weight: float, workers: int) -> dict:
    """torchdistill's ``train`` section for KD, as its YAML configs would give it (classes instead of !import_get)."""
    return {
        "num_epochs": 1,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
            "kwargs": {"batch_size": batch, "num_workers": workers, "drop_last": True},
        },
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "frozen_modules": [],
                    "requires_grad": True},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {"kd": {
                "criterion": {"key": "KDLoss", "kwargs": {
                    "student_module_path": ".", "student_module_io": "output",
                    "teacher_module_path": ".", "teacher_module_io": "output",
                    "temperature": temperature, "alpha": ce_weight, "beta": kd_weight, "reduction": "batchmean",
                }},
                "weight": 1.0,
            }}},
        },
    }


def build_torchdistill_box(teacher_model, student_model, dataset: Dataset, train_config: dict, device: torch.device):
    """A single-stage DistillationBox, built by torchdistill's own factory."""
    from torchdistill.core.distillation import get_distillation_box

    teacher_model = teacher_model.to(device).eval()  # the box only puts the student in train mode
    student_model = student_model.to(device)
    return get_distillation_box(teacher_model, student_model, {"train": dataset}, train_config, device,
                                device_ids=None, distributed=False, lr_factor=1)


def torchdistill_epoch(box, device: torch.device) -> int:
    """One training epoch as torchdistill's example script runs it; returns the images seen."""
    box.pre_epoch_process(epoch=0)
    seen = 0
    for images, targets, supp_dict in box.train_data_loader:
        images, targets = images.to(device), targets.to(device)
        loss = box.forward_process(images, targets, supp_dict)
        box.post_forward_process(loss=loss)
        if not math.isfinite(loss.item()):  # the example script reads the loss every step as well
            raise FloatingPointError(f"torchdistill loss is {loss.item()}")
        seen += images.shape[0]
    box.post_epoch_process()
    return seen


def _loss_check(trainer, box, shape, classes: int, device: torch.device) -> dict:
    """Loss of one batch in both frameworks, with torchdistill's models given softlabels' weights."""
    method = trainer.method
    box.student_model.load_state_dict(method.student.state_dict())
    box.teacher_model.load_state_dict(method.teacher.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, *shape, generator=gen).to(device)
    y = torch.randint(0, classes, (8,), generator=gen).to(device)
    method.train()
    box.pre_epoch_process(epoch=0)
    # student BN layers run in train mode on both sides (batch statistics): the same batch gives the same logits
    _, terms = trainer.model(x, y, torch.arange(8, device=device))
    ours = float(sum(t.detach().float() for t in terms.values()))
    theirs = float(box.forward_process(x, y, {}).detach())
    box.optimizer.zero_grad(set_to_none=True)
    return {"softlabels": ours, "torchdistill": theirs, "abs_diff": abs(ours - theirs),
            "agree": math.isclose(ours, theirs, rel_tol=1e-4, abs_tol=1e-5)}


def run_compare(teacher: str = "resnet32x4", student: str = "resnet8x4", shape=(3, 32, 32), batch: int = 64,
                classes: int = 100, steps: int = 8, rounds: int = 5, device: str = "auto", temperature: float = 4.0,
                ce_weight: float = 0.1, kd_weight: float = 0.9, augment: bool = True, workers: int = 0) -> dict:
    """Time both distillation steps, interleaved; returns a JSON-ready dict (rates in images/s)."""
    import torchdistill  # noqa: F401  (fail early, before any model is built)

    if ce_weight <= 0:
        # torchdistill's KDLoss returns the bare KL (no T^2, no beta) when alpha is 0: the losses would differ
        raise ValueError("ce_weight must be > 0 for the two KD losses to be the same")
    shape = tuple(shape)
    runtime = {"device": device, "amp": "off", "channels_last": False}
    method = {"name": "kd", "temperature": temperature, "ce_weight": ce_weight, "kd_weight": kd_weight}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        root = Path(tmp)
        torch.manual_seed(0)
        teacher_ckpt = save_random_teacher(root, teacher, classes, shape[0])
        trainer = framework_trainer(root, "framework", student, teacher_ckpt, teacher, shape, batch, steps, classes,
                                    method, runtime, augment=augment)
        dev = trainer.device
        td_teacher = create_model(teacher, classes, shape[0])
        td_teacher.load_state_dict(trainer.method.teacher.state_dict())
        box = build_torchdistill_box(td_teacher, create_model(student, classes, shape[0]),
                                     SyntheticImages(batch * steps, shape, classes, augment),
                                     torchdistill_config(batch, temperature, ce_weight, kd_weight, workers), dev)
        check = _loss_check(trainer, box, shape, classes, dev)
        if not check["agree"]:
            raise AssertionError(f"the two frameworks compute different losses on the same batch: {check}")

        variants = {"softlabels": lambda: framework_epoch(trainer), "torchdistill": lambda: torchdistill_epoch(box, dev)}
        for fn in variants.values():  # warm-up (allocator, first-call costs)
            fn()
        step_times: dict[str, list[float]] = {k: [] for k in variants}
        sys_time = dict.fromkeys(variants, 0.0)  # kernel time (page faults of large allocations, ...)
        images: dict[str, int] = {}
        for _ in range(rounds):
            for name, fn in variants.items():  # A, B, A, B, ...
                _sync(dev)
                s0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
                images[name] = fn()
                _sync(dev)
                step_times[name].append((time.perf_counter() - t0) / steps)
                sys_time[name] += resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0

    med = {k: statistics.median(v) for k, v in step_times.items()}
    rate = {k: batch / med[k] for k in med}
    return {
        "teacher": teacher, "student": student, "input_shape": list(shape), "batch_size": batch,
        "num_classes": classes, "steps_per_round": steps, "rounds": rounds, "augment": augment,
        "loss": {"name": "kd", "temperature": temperature, "ce_weight": ce_weight, "kd_weight": kd_weight},
        "optimizer": "SGD lr 0.01 momentum 0.9 weight_decay 5e-4, constant LR",
        "torchdistill_dataloader_workers": workers,
        "device": str(dev),
        "images_per_s": rate,
        "images_per_round": images,
        "ratio_softlabels_over_torchdistill": rate["softlabels"] / rate["torchdistill"],
        "median_step_time_s": med,
        "all_step_times_s": step_times,
        "process_sys_time_s": sys_time,
        "loss_check": check,
        "torch": torch.__version__, "torchdistill": metadata.version("torchdistill"),
        "softlabels": metadata.version("softlabels"),
        "threads": torch.get_num_threads(), "platform": platform.platform(), "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }


def format_report(r: dict) -> str:
    lines = [f"{r['teacher']} -> {r['student']}, input {tuple(r['input_shape'])}, batch {r['batch_size']}, "
             f"{r['device']}, {r['threads']} threads, torch {r['torch']}, torchdistill {r['torchdistill']}"]
    for name, v in r["images_per_s"].items():
        lines.append(f"  {name:<13} {v:10.1f} img/s   (median step {1000 * r['median_step_time_s'][name]:.1f} ms)")
    lines.append(f"  softlabels / torchdistill images/s: {r['ratio_softlabels_over_torchdistill']:.3f}   "
                 f"(same-batch loss {r['loss_check']['softlabels']:.5f} vs {r['loss_check']['torchdistill']:.5f})")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pair_arguments(p)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per framework (median kept)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--ce-weight", type=float, default=0.1, help="softlabels ce_weight = torchdistill alpha")
    p.add_argument("--kd-weight", type=float, default=0.9, help="softlabels kd_weight = torchdistill beta")
    p.add_argument("--no-augment", action="store_true", help="no crop/flip on either side")
    p.add_argument("--workers", type=int, default=0, help="num_workers of torchdistill's DataLoader")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="2 steps x 3 rounds: about a minute on 2 CPU cores")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    steps, rounds = (2, 3) if args.quick else (args.steps, args.rounds)
    result = run_compare(args.teacher, args.student, tuple(args.shape), args.batch_size, args.num_classes, steps,
                         rounds, args.device, args.temperature, args.ce_weight, args.kd_weight,
                         not args.no_augment, args.workers)
    result["quick"] = bool(args.quick)
    print(format_report(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
