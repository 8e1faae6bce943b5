"""Experiment-tracker loggers: TensorBoard, W&B (offline), MLflow; each read back with its own library."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from softlabels.callbacks import build_callbacks
from softlabels.callbacks.tracking import epoch_histograms, epoch_scalars, scalar_tag
from softlabels.errors import ConfigError, UserError

RECORD = {
    "epoch": 1, "lr": 0.05, "train_loss": 1.5, "train_loss_ce": 0.5, "train_loss_kd": 1.0, "train_top1": 40.0,
    "test_top1": 50.0, "test_top5": 90.0, "test_loss": 1.2, "val_top1": 48.0, "reg_fraction": 0.25,
    "reg_fraction_per_class": [0.1, 0.2], "wsl_weight_hist": [0, 3, 5, 0, 2, 0, 0, 0, 0, 0],
    "images_per_s": None, "epoch_time_s": 1.0,
}


def test_scalar_names_are_grouped_by_kind():
    scalars = epoch_scalars(RECORD)
    assert scalars["loss/train"] == 1.5 and scalars["loss/train_kd"] == 1.0 and scalars["loss/test"] == 1.2
    assert scalars["top1/test"] == 50.0 and scalars["top5/test"] == 90.0 and scalars["top1/val"] == 48.0
    assert scalars["regularization/share"] == 0.25 and scalars["lr"] == 0.05
    assert "epoch" not in scalars and "images_per_s" not in scalars  # None is skipped, lists too
    assert not any("per_class" in k for k in scalars)
    assert scalar_tag("lr_arch") == "lr/arch" and scalar_tag("reg_fraction_t1") == "regularization/share_t1"
    counts, edges = epoch_histograms(RECORD)["wsl/weight"]
    assert counts[1] == 3 and len(edges) == 11 and edges[0] == 0.0 and edges[-1] == pytest.approx(1.0)
    assert epoch_histograms({"wsl_weight_hist": [0] * 10}) == {}


def test_unknown_logger_and_bad_option_are_config_errors():
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'"):
        build_callbacks(["tensorbord"], "logger")
    with pytest.raises(ConfigError, match=r"loggers\[0\] \(wandb\): projekt"):
        build_callbacks([{"name": "wandb", "projekt": "x"}], "logger")


@pytest.mark.parametrize("name, package", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_library_names_the_extra(monkeypatch, name, package):
    monkeypatch.setitem(sys.modules, package, None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(UserError) as err:
        build_callbacks([name], "logger")
    assert str(err.value) == f"logger '{name}' needs the {package} package: pip install 'softlabels[{name}]'"


# ----------------------------------------------------------------------------- readers
def tensorboard_scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    """{tag: [(step, value)]} and {tag: [histogram events]} through TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return scalars, {t: acc.Histograms(t) for t in acc.Tags()["histograms"]}


def wandb_records(path: Path):
    """Records of a W&B offline run file (run-ID.wandb: W&B's LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # block tail too short for a record header: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        parts += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb_history(run_folder: Path) -> list[dict]:
    [path] = sorted(run_folder.glob("wandb/offline-run-*/run-*.wandb"))
    rows = []
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
    return rows


def fake_trainer(folder: Path, start_epoch: int = 0):
    """The trainer attributes a logger uses."""
    from conftest import tiny_experiment
    from softlabels.config import validate_config
    from softlabels.engine.run_dir import RunDir

    folder.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(exp=validate_config(tiny_experiment(folder.parent, name=folder.name)),
                           run_dir=RunDir(folder), dist=SimpleNamespace(is_main=True, rank=0, enabled=False),
                           start_epoch=start_epoch, total_epochs=2)


def test_tensorboard_writes_scalars_and_histogram(tmp_path):
    from softlabels.callbacks.tensorboard import TensorBoardLogger, TensorBoardParams

    logger = TensorBoardLogger(TensorBoardParams(log_dir=str(tmp_path / "tb")))  # from Python, with an option
    trainer = fake_trainer(tmp_path / "run")
    weight = torch.nn.Parameter(torch.zeros(1))
    trainer.optimizers = {"main": torch.optim.SGD([weight], lr=0.05), "arch": torch.optim.Adam([weight], lr=3e-4)}
    logger.on_fit_start(trainer)
    logger.on_epoch_end(trainer, dict(RECORD))
    logger.on_epoch_end(trainer, {**RECORD, "epoch": 2, "test_top1": 60.0})
    logger.on_fit_end(trainer, {})
    assert not (tmp_path / "run" / "tensorboard").exists()
    scalars, hists = tensorboard_scalars(tmp_path / "tb")
    assert scalars["top1/test"] == [(1, 50.0), (2, 60.0)]
    assert scalars["loss/train_kd"][0] == (1, 1.0)
    assert scalars["lr/arch"][0] == (1, pytest.approx(3e-4)) and "lr/main" not in scalars  # main is "lr"
    [h1, _] = hists["wsl/weight"]
    assert list(h1.histogram_value.bucket) == [0, 3, 5, 0, 2, 0, 0, 0, 0, 0]
    assert h1.histogram_value.bucket_limit[0] == pytest.approx(0.1) and h1.histogram_value.num == 10


def test_tracker_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    import wandb

    def not_logged_in(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])\nmore")

    monkeypatch.setattr(wandb, "init", not_logged_in)
    [logger] = build_callbacks([{"name": "wandb", "mode": "online"}], "logger")
    with pytest.raises(UserError) as err:
        logger.on_fit_start(fake_trainer(tmp_path / "w"))
    assert "\n" not in str(err.value) and "api_key not configured" in str(err.value)
    assert "mode: offline" in str(err.value)
    [logger] = build_callbacks([{"name": "mlflow", "tracking_uri": "nosuch://host"}], "logger")
    with pytest.raises(UserError, match=r"^logger 'mlflow' could not start an MLflow run at nosuch://host: "):
        logger.on_fit_start(fake_trainer(tmp_path / "m"))


@pytest.mark.slow
def test_two_epoch_run_with_all_three_loggers_then_resume(tmp_path, tiny, tiny_teacher, monkeypatch):
    """A real WSL run writes what TensorBoard, W&B and MLflow read back; --resume continues the same runs."""
    from mlflow.tracking import MlflowClient

    from softlabels.cli import main

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    cfg = tiny(tmp_path, name="tracked", method={"name": "wsl", "temperature": 2},
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=2,
               loggers=["tensorboard", {"name": "wandb", "project": "softlabels-test", "mode": "offline"},
                        {"name": "mlflow", "experiment_name": "tiny"}])
    from softlabels.config import validate_config
    from softlabels.engine import train

    train(validate_config(cfg))
    run = tmp_path / "tracked"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    scalars, hists = tensorboard_scalars(run / "tensorboard")
    assert scalars["top1/test"] == [(r["epoch"], pytest.approx(r["test_top1"])) for r in rows]
    assert [v for _, v in scalars["loss/train_wsl"]] == pytest.approx([r["train_loss_wsl"] for r in rows])
    assert [v for _, v in scalars["regularization/share"]] == pytest.approx([r["reg_fraction"] for r in rows])
    assert "lr" in scalars and "top5/test" in scalars
    assert [list(h.histogram_value.bucket) for h in hists["wsl/weight"]] == [r["wsl_weight_hist"] for r in rows]

    history = wandb_history(run)
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["top1/test"] for h in history] == pytest.approx([r["test_top1"] for r in rows])
    assert history[0]["wsl/weight/_type"] == "histogram" and history[0]["wsl/weight/values"] == rows[0]["wsl_weight_hist"]

    ids = json.loads((run / "mlflow_run.json").read_text())
    client = MlflowClient(ids["tracking_uri"])
    assert ids["tracking_uri"] == f"sqlite:///{run.resolve()}/mlflow.db"
    mrun = client.get_run(ids["id"])
    assert mrun.info.status == "FINISHED" and mrun.data.params["method.temperature"] == "2"
    assert [(m.step, m.value) for m in client.get_metric_history(ids["id"], "top1/test")] == \
        [(r["epoch"], pytest.approx(r["test_top1"])) for r in rows]
    assert client.list_artifacts(ids["id"], "wsl_weight_hist")[0].path == "wsl_weight_hist/epoch_0001.json"

    # resume for a third epoch: the same TensorBoard folder, W&B run id and MLflow run continue
    assert main(["train", "--resume", str(run), "schedule.epochs=3"]) == 0
    scalars, _ = tensorboard_scalars(run / "tensorboard")
    assert [s for s, _ in scalars["top1/test"]] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(ids["id"], "top1/test")] == [1, 2, 3]
    assert client.get_run(ids["id"]).info.status == "FINISHED"
    wandb_id = json.loads((run / "wandb_run.json").read_text())["id"]
    folders = sorted(run.glob("wandb/offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(wandb_id) for f in folders)
