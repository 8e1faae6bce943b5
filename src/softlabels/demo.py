"""``softlabels demo``: Fashion-MNIST teacher -> student alone / KD / WSL, and a table of top-1.

The teacher is the checkpoint shipped in ``softlabels/assets/teachers`` (trained by this
project with the config and log stored beside it; its sha256 is checked), also for ``--quick``, or,
with ``--retrain-teacher`` or when the file is missing or altered, trained here (``--quick`` then says
plainly that its numbers mean nothing). Finished runs in
the output folder are reused and unfinished ones resumed, so the demo can be re-run cheaply.
"""
from __future__ import annotations

import copy
import shutil
import sys
import time
from pathlib import Path

from softlabels.config import validate_config
from softlabels.engine.checkpoint import load_checkpoint, save_atomic, sha256_of
from softlabels.engine.run_dir import RunDir
from softlabels.engine.trainer import run_or_resume
from softlabels.errors import UserError
from softlabels.io import atomic_write_text, write_json

ASSETS = Path(__file__).parent / "assets" / "teachers"
TEACHER_NAME = "fashion_mnist_resnet20"

# The low-data regime where distillation matters: 10% of Fashion-MNIST (600 images a class).
BASE = {
    "seed": 0,
    "data": {"name": "fashion_mnist", "train_subset": 0.1, "batch_size": 128, "crop_padding": 2, "flip": True},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    "schedule": {"name": "cosine", "epochs": 12, "warmup_epochs": 1},
    "runtime": {"progress": True},
}
TEACHER = {"student": {"name": "resnet20"}, "method": {"name": "ce"}, "schedule": {"epochs": 30}}
STUDENT_MODEL = "resnet8"
STUDENTS = {
    "student alone": {"method": {"name": "ce"}},
    "KD": {"method": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}},
    "WSL": {"method": {"name": "wsl", "temperature": 4.0, "alpha": 2.25}},
}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def teacher_config(out_dir: Path, quick: bool = False) -> dict:
    cfg = _merge(BASE, TEACHER)
    cfg.update(name="teacher", output_dir=str(out_dir))
    if quick:
        cfg = _merge(cfg, {"schedule": {"epochs": 2}, "data": {"train_subset": 0.02}})
    return cfg


def shipped_teacher() -> Path | None:
    """The shipped Fashion-MNIST teacher checkpoint if present and its sha256 matches the manifest."""
    from softlabels.analysis.teachers import shipped_teacher as _shipped

    found = _shipped("fashion_mnist")
    return found.checkpoint if found is not None else None


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, retrain_teacher: bool = False) -> dict:
    """Run the demo; returns {row: {"top1": best, "last_top1": last}} and writes results.json/.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}

    from softlabels.analysis.teachers import shipped_teacher as find_shipped

    shipped = None if retrain_teacher else find_shipped("fashion_mnist")
    teacher_ckpt = shipped.checkpoint if shipped is not None else None
    note = None
    if quick:
        note = quick_note(teacher_ckpt is not None, "--retrain-teacher was given" if retrain_teacher else
                          "the shipped teacher is missing or does not match its sha256")
        print(note, file=sys.stderr)
    if teacher_ckpt is None:
        print("training the teacher (resnet20) ...", file=sys.stderr)
        summary = run_or_resume(validate_config(teacher_config(out, quick), "<demo teacher>"))
        teacher_ckpt = out / "teacher" / "best.pt"
        rows["teacher (resnet20)"] = summary
    else:
        rows["teacher (resnet20)"] = {"best_top1": shipped.top1, "last_top1": shipped.top1,
                                      "source": f"shipped checkpoint {teacher_ckpt.name}"}
        print(f"using the shipped teacher {teacher_ckpt} (sha256 checked)", file=sys.stderr)

    for label, extra in STUDENTS.items():
        run_name = label.split()[0].lower()
        cfg = _merge(BASE, extra)
        cfg.update(name=run_name, output_dir=str(out), student={"name": STUDENT_MODEL})
        if extra["method"]["name"] != "ce":
            # KD fills the teacher-logit cache, WSL replays the same augmented images and reads it
            cfg["teacher"] = {"name": "resnet20", "checkpoint": str(teacher_ckpt), "cache": True,
                              "cache_path": str(out / "teacher_cache")}
        if quick:
            cfg = _merge(cfg, {"schedule": {"epochs": 2}, "data": {"train_subset": 0.02}})
        print(f"training {label} ({STUDENT_MODEL}) ...", file=sys.stderr)
        rows[f"{label} ({STUDENT_MODEL})"] = run_or_resume(validate_config(cfg, f"<demo {run_name}>"))

    elapsed = time.perf_counter() - t0
    table = {k: {"best_top1": v["best_top1"], "last_top1": v["last_top1"]} for k, v in rows.items()}
    lines = ["| run | best top-1 (%) | last top-1 (%) |", "|---|---|---|"]
    lines += [f"| {k} | {v['best_top1']:.2f} | {v['last_top1']:.2f} |" for k, v in table.items()]
    text = "\n".join(lines)
    subset = "2% of the training set, 2 epochs (quick smoke run)" if quick else "10% of the training set"
    print(f"\nFashion-MNIST, {subset}")
    print(text)
    print(f"\n{SELECTION_NOTE}")
    if note:
        print(note)
    print(f"\nwall time: {elapsed:.0f} s; run folders under {out}")
    atomic_write_text(out / "results.md", text + "\n\n" + SELECTION_NOTE + "\n" + (f"\n{note}\n" if note else ""))
    write_json(out / "results.json", {"rows": table, "wall_time_s": elapsed, "quick": quick, "note": note,
                                      "best_selected_by": "test_top1"})
    return table


#: the demo's runs have no validation split (as in the papers' Fashion-MNIST/CIFAR tables)
SELECTION_NOTE = ("best top-1: the best epoch was chosen on the test set (no validation split), so it is "
                  "optimistic; last top-1 uses the final weights.")


def quick_note(shipped: bool, why_not: str = "") -> str:
    """What the numbers of ``demo --quick`` can and cannot say, in plain words."""
    if shipped:
        return ("quick smoke run: the students train for 2 epochs on 2% of Fashion-MNIST (1,200 images) with the "
                "shipped teacher; it checks that everything runs. The students are far from trained, so the rows "
                "do not rank the methods: run `softlabels demo` (about 5 minutes) for that.")
    return (f"quick smoke run WITHOUT the shipped teacher ({why_not}): the teacher is trained here for 2 epochs on "
            "2% of the data, so its soft labels are close to noise and distilling from it can only hurt. These "
            "numbers mean nothing about KD or WSL; they only check that everything runs.")


def publish_teacher(run_dir: str | Path) -> Path:
    """Copy a finished teacher run into the package assets with its config, log and sha256 (maintainers).

    The shipped weights are the LAST epoch's (no selection on the test set), without optimizer state.
    """
    run = RunDir(run_dir)
    rd = run.path
    ASSETS.mkdir(parents=True, exist_ok=True)
    dest = ASSETS / f"{TEACHER_NAME}.pt"
    last = load_checkpoint(run.last_path)
    keep = ("format", "model_name", "num_classes", "in_channels", "dataset", "epoch", "model", "metrics", "config")
    save_atomic({k: last[k] for k in keep if k in last}, dest)
    shutil.copyfile(run.config_path, ASSETS / f"{TEACHER_NAME}.config.yaml")
    shutil.copyfile(run.metrics_path, ASSETS / f"{TEACHER_NAME}.metrics.jsonl")
    summary = run.summary()
    if summary is None:
        raise UserError(f"{rd} has no summary.json: publish a finished teacher run")
    manifest = {"sha256": sha256_of(dest), "weights": "last epoch", "epoch": last["epoch"],
                "best_top1": summary["best_top1"], "last_top1": summary["last_top1"], "best_epoch": summary["best_epoch"], "wall_time_s": summary["wall_time_s"],
                "environment": summary["environment"]}
    write_json(ASSETS / f"{TEACHER_NAME}.json", manifest)
    return dest
