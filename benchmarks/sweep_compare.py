"""A distillation sweep run with softlabels and with torchdistill: total wall time and ratio.

The sweep is what users run on one teacher: KD at T in {1, 2, 4, 8} plus WSL (T 4, alpha 2.25), 2 epochs
each, one seed. Two settings:

- ``cifar``: resnet32x4 -> resnet8x4 on a CIFAR-shaped synthetic set (3x32x32, 100 classes; a random teacher:
  weights do not change the work);
- ``fmnist``: resnet20 -> resnet8 on Fashion-MNIST subsets (the shipped resnet20 teacher): ``--train-size``
  seeded random training images and the first ``--test-size`` test images, written as IDX files into a
  temporary ``data.root`` that both frameworks read.

Both frameworks do the same work per run: build the models (teacher weights from the same checkpoint),
train ``epochs`` epochs with random crop (padding 4) and flip, SGD (LR 0.01, momentum 0.9, weight decay
5e-4, constant LR), evaluate top-1 on the test set after each epoch and save the student's weights.

- softlabels: ``softlabels.train`` of each run's config, all runs in one output folder with ``teacher.cache``
  on: the first run stores the teacher's logits of every (epoch, sample), the four others read them instead
  of running the teacher (same seed, so the same augmented images); its in-memory loader augments whole
  batches. Each run writes its full run folder (metrics, checkpoints, summary).
- torchdistill (PyPI ``torchdistill``, optional extra ``compare``): one ``DistillationBox`` per run, built by
  ``get_distillation_box`` from a config dict, ``KDLoss`` for KD and, for WSL (which torchdistill does not
  ship), a mid-level loss registered by this script; its DataLoader over an in-memory dataset with the usual
  per-sample torchvision transforms; the epoch loop of torchdistill's example script, then a test pass.

Before timing, each sweep point's loss of one batch is computed by both frameworks with identical weights
and must agree. Runs then alternate (softlabels run 1, torchdistill run 1, torchdistill run 2, softlabels
run 2, ...) so that machine noise hits both alike; ``--repeats`` repeats the whole sweep (fresh cache).
Wall time and the process's CPU time (user + system) are recorded per run; on a machine shared with other
jobs, run with ``--threads 1`` (OpenMP threads that wait for each other on oversubscribed cores inflate
wall time far more than the work) and compare the CPU-time ratio as well.

Usage (from the repository root, ``pip install -e .[compare]``)::

    python benchmarks/sweep_compare.py --threads 2 --json benchmarks/results/sweep_compare_cpu.json
    python benchmarks/sweep_compare.py --quick        # tiny sizes: a smoke check, not a measurement
"""
from __future__ import annotations

import argparse
import contextlib
import io
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
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchdistill_compare as tdc  # noqa: E402  (the one-step comparison: box, epoch loop, loss check)

from softlabels.bench import save_random_teacher  # noqa: E402
from softlabels.config import validate_config  # noqa: E402
from softlabels.io import read_jsonl, write_json  # noqa: E402
from softlabels.models import create_model  # noqa: E402

#: the sweep: (label, softlabels method, torchdistill criterion kwargs)
KD_WEIGHTS = {"ce_weight": 0.1, "kd_weight": 0.9}
WSL = {"name": "wsl", "temperature": 4.0, "alpha": 2.25, "ce_weight": 1.0}
SETTINGS = {
    "cifar": {"teacher": "resnet32x4", "student": "resnet8x4", "shape": (3, 32, 32), "classes": 100,
              "train_size": 512, "test_size": 500},
    "fmnist": {"teacher": "resnet20", "student": "resnet8", "shape": (1, 28, 28), "classes": 10,
               "train_size": 3000, "test_size": 1000},
}
SHIPPED_FMNIST_TEACHER = Path(__file__).resolve().parents[1] / "src/softlabels/assets/teachers/fashion_mnist_resnet20.pt"


def sweep_methods(temperatures=(1, 2, 4, 8)) -> list[dict]:
    return [{"name": "kd", "temperature": float(t), **KD_WEIGHTS} for t in temperatures] + [dict(WSL)]


def _label(method: dict) -> str:
    return f"{method['name']} T{method['temperature']:g}"


# ----------------------------------------------------------------------------- torchdistill side
class WSLLoss(nn.Module):
    """Weighted soft labels for torchdistill: ce_weight * CE + alpha * T^2 * mean_i w_i softCE_i, with
    w_i = 1 - exp(-CE_s,i / CE_t,i) (T 1, detached) and softCE_i = -sum_c p_t^T(c) log p_s^T(c)."""

    def __init__(self, temperature: float, alpha: float, ce_weight: float, **kwargs) -> None:
        super().__init__()
        self.temperature, self.alpha, self.ce_weight = temperature, alpha, ce_weight

    def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs):
        s = student_io_dict["."]["output"].float()
        t = teacher_io_dict["."]["output"].float()
        with torch.no_grad():
            ratio = F.cross_entropy(s, targets, reduction="none") / (F.cross_entropy(t, targets, reduction="none")
                                                                     + 1e-7)
            w = 1.0 - torch.exp(-ratio.clamp(min=0))
        T = self.temperature
        soft = -(F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(dim=1)
        return self.ce_weight * F.cross_entropy(s, targets) + self.alpha * T * T * (w * soft).mean()


def _register_wsl() -> None:
    from torchdistill.losses.registry import MIDDLE_LEVEL_LOSS_DICT, register_mid_level_loss

    if "WSLLoss" not in MIDDLE_LEVEL_LOSS_DICT:
        register_mid_level_loss(WSLLoss)


def torchdistill_train_config(method: dict, batch: int, epochs: int) -> dict:
    cfg = tdc.torchdistill_config(batch, method["temperature"], KD_WEIGHTS["ce_weight"], KD_WEIGHTS["kd_weight"], 0)
    cfg["num_epochs"] = epochs
    if method["name"] == "wsl":
        cfg["criterion"]["kwargs"]["sub_terms"]["kd"]["criterion"] = {"key": "WSLLoss", "kwargs": {
            "temperature": method["temperature"], "alpha": method["alpha"], "ce_weight": method["ce_weight"]}}
    return cfg


class TensorImages(Dataset):
    """Normalised float images (N, C, H, W) and labels with per-sample random crop and flip (torchvision v2)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        from torchvision.transforms import v2

        self.images, self.targets = images, targets
        self.transform = v2.Compose([v2.RandomCrop(tuple(images.shape[2:]), padding=tdc.CROP_PADDING),
                                     v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.targets[index])


@torch.no_grad()
def test_top1(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += y.numel()
    return 100.0 * correct / total


def torchdistill_run(method: dict, setting: dict, teacher_state: dict, train_set: Dataset, test_loader: DataLoader,
                     batch: int, epochs: int, seed: int, out: Path, device: torch.device) -> dict:
    """One sweep point with torchdistill: box, ``epochs`` epochs, a test pass and a weights file after each."""
    torch.manual_seed(seed)
    c, classes = setting["shape"][0], setting["classes"]
    teacher = create_model(setting["teacher"], classes, c)
    teacher.load_state_dict(teacher_state)
    student = create_model(setting["student"], classes, c)
    box = tdc.build_torchdistill_box(teacher, student, train_set, torchdistill_train_config(method, batch, epochs),
                                     device)
    best = -1.0
    for _ in range(epochs):
        tdc.torchdistill_epoch(box, device)
        top1 = test_top1(box.student_model, test_loader, device)
        if top1 > best:
            best = top1
            torch.save(box.student_model.state_dict(), out / f"{method['name']}_{method['temperature']:g}.pt")
    return {"best_top1": best}


# ----------------------------------------------------------------------------- softlabels side
def softlabels_config(method: dict, setting: str, sizes: dict, root: Path, teacher_ckpt: Path, batch: int,
                      epochs: int, seed: int, cache: bool, data_root: Path | None = None) -> dict:
    s = SETTINGS[setting]
    if setting == "cifar":
        data = {"name": "synthetic", "synthetic": {"num_classes": s["classes"], "image_size": s["shape"][1],
                                                   "channels": s["shape"][0], "train_size": sizes["train_size"],
                                                   "test_size": sizes["test_size"]}}
    else:
        data = {"name": "fashion_mnist", "root": str(data_root)}
    return {
        "name": f"{method['name']}_T{method['temperature']:g}", "seed": seed, "output_dir": str(root),
        "data": {**data, "batch_size": batch, "augment": True, "crop_padding": tdc.CROP_PADDING, "flip": True,
                 "drop_last": True},
        "student": {"name": s["student"]},
        "teacher": {"name": s["teacher"], "checkpoint": str(teacher_ckpt), "cache": cache},
        "method": method,
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant", "epochs": epochs, "milestones": []},
        "runtime": {"progress": False, "device": "auto"},
    }


def softlabels_run(cfg: dict) -> dict:
    import softlabels

    with contextlib.redirect_stderr(io.StringIO()):
        summary = softlabels.train(validate_config(cfg))
    rows = read_jsonl(Path(cfg["output_dir"]) / cfg["name"] / "metrics.jsonl")
    return {"best_top1": summary.get("best_top1"),
            "teacher_cache_hits": sum(r.get("teacher_cache_hits", 0) for r in rows),
            "teacher_cache_misses": sum(r.get("teacher_cache_misses", 0) for r in rows)}


# ----------------------------------------------------------------------------- data for torchdistill
def torchdistill_data(setting: str, sizes: dict, seed: int, data_root: Path) -> tuple[Dataset, TensorDataset]:
    """The data of the torchdistill side; for ``fmnist`` also writes the subsets as IDX files in ``data_root``
    (softlabels' ``data.root``), so both frameworks train and test on the same images."""
    s = SETTINGS[setting]
    gen = torch.Generator().manual_seed(seed)
    if setting == "cifar":
        n, m = sizes["train_size"], sizes["test_size"]
        train = TensorImages(torch.randn(n, *s["shape"], generator=gen),
                             torch.randint(0, s["classes"], (n,), generator=gen))
        return train, TensorDataset(torch.randn(m, *s["shape"], generator=gen),
                                    torch.randint(0, s["classes"], (m,), generator=gen))
    from softlabels.data.fashion_mnist import FILES, MEAN, STD, load_fashion_mnist
    from softlabels.data.idx import write_idx

    train_x, train_y, test_x, test_y = load_fashion_mnist()
    pick = torch.randperm(train_x.shape[0], generator=gen)[: sizes["train_size"]]
    train_x, train_y = train_x[pick], train_y[pick]
    test_x, test_y = test_x[: sizes["test_size"]], test_y[: sizes["test_size"]]
    data_root.mkdir(parents=True, exist_ok=True)
    for key, tensor in (("train_images", train_x[:, 0]), ("train_labels", train_y), ("test_images", test_x[:, 0]),
                        ("test_labels", test_y)):
        write_idx(data_root / FILES[key], tensor.to(torch.uint8))

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - MEAN[0]) / STD[0]

    return TensorImages(norm(train_x), train_y), TensorDataset(norm(test_x), test_y)


# ----------------------------------------------------------------------------- the comparison
def loss_checks(methods: list[dict], setting: str, sizes: dict, root: Path, teacher_ckpt: Path, train_set,
                batch: int, device: torch.device, data_root: Path) -> list[dict]:
    """Each sweep point's loss of one batch in both frameworks with identical weights (no cache)."""
    from softlabels.engine.trainer import Trainer

    s = SETTINGS[setting]
    out = []
    for i, method in enumerate(methods):
        cfg = softlabels_config(method, setting, sizes, root / f"check{i}", teacher_ckpt, batch, 1, 0, cache=False,
                                data_root=data_root)
        with contextlib.redirect_stderr(io.StringIO()):
            trainer = Trainer(validate_config(cfg))
        box = tdc.build_torchdistill_box(create_model(s["teacher"], s["classes"], s["shape"][0]),
                                         create_model(s["student"], s["classes"], s["shape"][0]), train_set,
                                         torchdistill_train_config(method, batch, 1), device)
        check = tdc._loss_check(trainer, box, s["shape"], s["classes"], device)
        out.append({"method": _label(method), **check})
        if not check["agree"]:
            raise AssertionError(f"{_label(method)}: the two frameworks compute different losses: {check}")
    return out


def run_sweep(setting: str, epochs: int = 2, batch: int = 64, repeats: int = 1, train_size: int | None = None,
              test_size: int | None = None, temperatures=(1, 2, 4, 8), seed: int = 0, device: str = "auto",
              progress=None) -> dict:
    """Both sweeps, runs alternating; returns a JSON-ready dict (times in seconds).

    ``progress(partial)`` is called after every pair of runs with the result so far (``complete`` False), so
    that a measurement cut off by a time limit keeps what it measured.
    """
    import torchdistill  # noqa: F401  (fail early)

    _register_wsl()
    s = SETTINGS[setting]
    sizes = {"train_size": train_size or s["train_size"], "test_size": test_size or s["test_size"]}
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    methods = sweep_methods(temperatures)
    runs: list[dict] = []
    totals: dict[str, list[float]] = {"softlabels": [], "torchdistill": []}
    cpu: dict[str, list[float]] = {"softlabels": [], "torchdistill": []}  # process CPU time (user + system)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if setting == "cifar":
            torch.manual_seed(seed)
            teacher_ckpt = save_random_teacher(root, s["teacher"], s["classes"], s["shape"][0])
        else:
            teacher_ckpt = SHIPPED_FMNIST_TEACHER
        from softlabels.engine.checkpoint import load_checkpoint

        teacher_state = load_checkpoint(teacher_ckpt)["model"]
        data_root = root / "fashion_mnist_subset"
        train_set, test_set = torchdistill_data(setting, sizes, seed, data_root)
        test_loader = DataLoader(test_set, batch_size=512)
        checks = loss_checks(methods, setting, sizes, root, teacher_ckpt, train_set, batch, dev, data_root)
        for rep in range(repeats):
            sl_root, td_root = root / f"sl{rep}", root / f"td{rep}"
            td_root.mkdir(parents=True)
            t_sl = t_td = c_sl = c_td = 0.0
            for i, method in enumerate(methods):
                cfg = softlabels_config(method, setting, sizes, sl_root, teacher_ckpt, batch, epochs, seed, cache=True,
                                        data_root=data_root)
                order = ["softlabels", "torchdistill"] if (i + rep) % 2 == 0 else ["torchdistill", "softlabels"]
                row = {"repeat": rep, "method": _label(method)}
                for name in order:
                    c0, t0 = _cpu_seconds(), time.perf_counter()
                    if name == "softlabels":
                        row["softlabels"] = softlabels_run(cfg)
                    else:
                        row["torchdistill"] = torchdistill_run(method, s, teacher_state, train_set, test_loader,
                                                               batch, epochs, seed, td_root, dev)
                    row[name]["seconds"] = time.perf_counter() - t0
                    row[name]["cpu_seconds"] = _cpu_seconds() - c0
                t_sl += row["softlabels"]["seconds"]
                t_td += row["torchdistill"]["seconds"]
                c_sl += row["softlabels"]["cpu_seconds"]
                c_td += row["torchdistill"]["cpu_seconds"]
                runs.append(row)
                if progress is not None:
                    progress(_partial(setting, runs, checks, sizes, epochs, batch, dev))
                print(f"  [{rep + 1}/{repeats}] {row['method']:<8} softlabels {row['softlabels']['seconds']:6.1f} s  "
                      f"torchdistill {row['torchdistill']['seconds']:6.1f} s", flush=True)
            totals["softlabels"].append(t_sl)
            totals["torchdistill"].append(t_td)
            cpu["softlabels"].append(c_sl)
            cpu["torchdistill"].append(c_td)
    ratios = [td / sl for sl, td in zip(totals["softlabels"], totals["torchdistill"])]
    cpu_ratios = [td / sl for sl, td in zip(cpu["softlabels"], cpu["torchdistill"])]
    load = _load_average()
    return {
        "setting": setting, "complete": True, "teacher": s["teacher"], "student": s["student"], "input_shape": list(s["shape"]),
        "num_classes": s["classes"], "train_images": sizes["train_size"], "test_images": sizes["test_size"],
        "batch_size": batch, "epochs": epochs, "repeats": repeats, "seed": seed,
        "sweep": [_label(m) for m in methods], "device": str(dev),
        "total_wall_s": totals,
        "ratio_torchdistill_over_softlabels": statistics.median(ratios), "ratio_per_repeat": ratios,
        "total_cpu_s": cpu, "cpu_ratio_torchdistill_over_softlabels": statistics.median(cpu_ratios),
        "runs": runs, "loss_checks": checks,
        "torch": torch.__version__, "torchdistill": metadata.version("torchdistill"),
        "softlabels": metadata.version("softlabels"), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": _processor(),
        "python": platform.python_version(), "load_average_1_5_15_at_end": load,
        "env": {k: os.environ[k] for k in tdc.ENV_KEYS if k in os.environ},
    }


def _partial(setting: str, runs: list[dict], checks: list[dict], sizes: dict, epochs: int, batch: int, dev) -> dict:
    """The runs so far (a sweep cut off before its end: no totals, ``complete`` False)."""
    s = SETTINGS[setting]
    return {"setting": setting, "complete": False, "teacher": s["teacher"], "student": s["student"],
            "input_shape": list(s["shape"]), "train_images": sizes["train_size"], "test_images": sizes["test_size"],
            "epochs": epochs, "batch_size": batch, "device": str(dev), "runs": runs, "loss_checks": checks,
            "threads": torch.get_num_threads(), "processor": _processor(), "platform": platform.platform(),
            "torch": torch.__version__, "torchdistill": metadata.version("torchdistill"),
            "load_average_1_5_15": _load_average()}


def _load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def _cpu_seconds() -> float:
    """User + system CPU time of this process: less sensitive than wall time to other jobs on the machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _processor() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def format_report(r: dict) -> str:
    sl, td = r["total_wall_s"]["softlabels"], r["total_wall_s"]["torchdistill"]
    return (f"{r['setting']}: {r['teacher']} -> {r['student']}, {len(r['sweep'])} runs x {r['epochs']} epochs "
            f"({r['train_images']} train / {r['test_images']} test images), {r['device']}, {r['threads']} threads\n"
            f"  total wall: softlabels {statistics.median(sl):.1f} s, torchdistill {statistics.median(td):.1f} s; "
            f"torchdistill / softlabels {r['ratio_torchdistill_over_softlabels']:.2f}x "
            f"(per repeat {', '.join(f'{x:.2f}' for x in r['ratio_per_repeat'])}); process CPU time ratio "
            f"{r['cpu_ratio_torchdistill_over_softlabels']:.2f}x\n"
            f"  same-batch losses agree: {all(c['agree'] for c in r['loss_checks'])} "
            f"(max |diff| {max(c['abs_diff'] for c in r['loss_checks']):.2e})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="whole sweeps per framework (fresh teacher cache each)")
    p.add_argument("--train-size", type=int, default=None, help="training images (default per setting)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default per setting)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1, 2, 4, 8], help="KD temperatures")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 epoch: a smoke check only")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = {}
    for setting in args.settings:
        kw = dict(epochs=args.epochs, batch=args.batch_size, repeats=args.repeats, train_size=args.train_size,
                  test_size=args.test_size, temperatures=tuple(args.temperatures), device=args.device)
        if args.quick:
            kw.update(epochs=1, train_size=2 * args.batch_size, test_size=args.batch_size)
        print(f"== {setting}", flush=True)

        def save_partial(partial: dict, setting: str = setting) -> None:
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                write_json(args.json, {**out, setting: partial})

        out[setting] = run_sweep(setting, **kw, progress=save_partial)
        out[setting]["quick"] = bool(args.quick)
        print(format_report(out[setting]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
