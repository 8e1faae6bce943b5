"""The writer module (softlabels.io) and RunDir, the one reader/writer of a run folder."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from softlabels import io
from softlabels.callbacks import Callback as softlabels_Callback
from softlabels.engine.run_dir import RunDir
from softlabels.errors import CheckpointError, ConfigError, UserError


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "a.json"
    io.write_json(path, {"x": math.nan, "y": [1.0, math.inf], "z": "ok"})
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == {"x": None, "y": [1.0, None], "z": "ok"}
    assert io.read_json(path) == {"x": None, "y": [1.0, None], "z": "ok"}
    assert not list(tmp_path.glob(".*.tmp"))  # no leftovers


def test_read_json_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(UserError, match="summary not found: .*nope.json"):
        io.read_json(tmp_path / "nope.json", what="summary")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(UserError, match="bad.json is damaged"):
        io.read_json(bad)


def test_jsonl_stops_at_a_cut_line_and_csv_keeps_flat_columns(tmp_path):
    path = tmp_path / "m.jsonl"
    io.append_jsonl(path, {"epoch": 1, "loss": math.nan, "hist": [1, 2]})
    io.append_jsonl(path, {"epoch": 2, "loss": 0.5, "hist": [3, 4]})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')  # a kill in the middle of a line
    rows = io.read_jsonl(path)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["loss"] is None
    io.write_csv(tmp_path / "m.csv", rows)
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss" and lines[2] == "2,0.5"
    io.write_jsonl(path, rows[:1])
    assert io.read_jsonl(path) == rows[:1]
    assert io.read_jsonl(tmp_path / "absent.jsonl") == []


def test_markdown_table():
    table = io.markdown_table(["a", "b"], [[1, 0.123456], {"a": "x|y", "b": None}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x\\|y | – |"]
    with pytest.raises(ValueError):
        io.markdown_table(["a"], [[1, 2]])


def _write_run(tmp_path, tiny, epochs=2, done=None):
    from softlabels.config import validate_config

    exp = validate_config(tiny(tmp_path, epochs=epochs))
    rd = RunDir(exp.run_dir)
    rd.create()
    rd.write_config(exp)
    if done is not None:
        rd.write_json("summary.json", {"epochs": done, "total_epochs": epochs})
    return exp, rd


def test_run_dir_reads_config_summary_and_finished(tmp_path, tiny):
    exp, rd = _write_run(tmp_path, tiny, done=1)
    assert rd.is_run() and rd.config() == exp and rd.raw_config()["name"] == "run"
    assert rd.metrics() == [] and not rd.is_finished()
    rd.write_json("summary.json", {"epochs": 2, "total_epochs": 2})
    assert rd.is_finished() and rd.is_finished(exp)
    longer = exp.model_copy(update={"schedule": exp.schedule.model_copy(update={"epochs": 3})})
    assert not rd.is_finished(longer)  # asked for more epochs: not finished any more
    rd.summary_path.write_text("{broken")
    with pytest.raises(UserError, match="summary.json is damaged"):
        rd.is_finished()


def test_run_dir_config_errors_name_the_file(tmp_path):
    rd = RunDir(tmp_path / "x")
    with pytest.raises(CheckpointError, match="not a run folder"):
        rd.config()
    rd.create()
    rd.config_path.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="config.yaml is not valid YAML"):
        rd.config()
    rd.config_path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="config.yaml"):
        rd.config()


def test_run_dir_contents_leave_out_lock_and_tmp(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.create()
    (rd.path / ".last.pt.123.tmp").write_bytes(b"x")
    (rd.path / "config.yaml").write_text("name: r\n")
    with rd.lock():
        assert rd.contents() == ["config.yaml"]
    assert rd.clean_tmp() == [".last.pt.123.tmp"] and not (rd.path / ".last.pt.123.tmp").exists()


def test_lock_refuses_a_second_process_by_name(tmp_path):
    rd = RunDir(tmp_path / "locked")
    code = ("import sys; from softlabels.engine.run_dir import RunDir\n"
            "try:\n    RunDir(sys.argv[1]).lock().__enter__()\n"
            "except Exception as e:\n    print(e); sys.exit(2)\n")
    with rd.lock():
        out = subprocess.run([sys.executable, "-c", code, str(rd.path)], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 2
        assert f"run folder {rd.path} is in use by another run (pid {os.getpid()})" in out.stdout
    out = subprocess.run([sys.executable, "-c", code, str(rd.path)], capture_output=True, text=True)
    assert out.returncode == 0  # released with the first holder


def test_create_refuses_a_file_in_the_way_and_a_read_only_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="output_dir a file"):
        RunDir(tmp_path / "afile" / "run").create()
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(UserError, match="permission denied|not writable"):
                RunDir(ro / "run").create()
        finally:
            ro.chmod(0o700)


# ----------------------------------------------------------------------------- issue 16: the Trainer and its folder
def _exp(tmp_path, tiny, name="run", epochs=1, **extra):
    from softlabels.config import validate_config

    return validate_config(tiny(tmp_path, name=name, epochs=epochs, **extra))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_second_writer_is_refused_by_name_and_the_first_run_is_untouched(tmp_path, tiny):
    """Case 1: two processes on one run folder. The CLI's second writer exits 2 naming the folder."""
    import yaml

    from softlabels.engine import train

    exp = _exp(tmp_path, tiny)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(exp.model_dump(mode="json")))
    rd = RunDir(exp.run_dir)
    with rd.lock():  # a run in progress holds the lock (here: this process)
        out = subprocess.run([sys.executable, "-m", "softlabels.cli", "train", str(cfg)], capture_output=True,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"run folder {rd.path} is in use by another run (pid {os.getpid()})" in lines[0]
        with pytest.raises(UserError, match="is in use by another run"):  # the same in-process
            train(exp)
    assert rd.contents() == []  # nothing was written by the refused runs
    train(exp)  # the lock is released: the run goes ahead
    assert rd.has_checkpoint()


def test_a_folder_holding_someone_elses_files_is_refused_and_left_as_it_was(tmp_path, tiny):
    """Case 2: only best.pt and config.yaml (no metrics): not this run's, refused, nothing overwritten."""
    from softlabels.engine import train

    exp = _exp(tmp_path, tiny)
    folder = exp.run_dir
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"someone's weights")
    (folder / "config.yaml").write_text("name: other\nstudent: {name: resnet20}\n")
    before = _snapshot(folder)
    with pytest.raises(ConfigError, match=r"is not empty \(best.pt, config.yaml\) and holds no run of this config"):
        train(exp)
    with pytest.raises(ConfigError, match="its config.yaml differs"):
        train(exp, resume_dir=folder)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.yaml").unlink()
    with pytest.raises(ConfigError, match="is not empty"):
        train(exp)
    after = _snapshot(folder)
    assert after == {"best.pt": before["best.pt"], "notes.txt": b"mine"}  # nothing added or overwritten


def test_killed_during_the_first_checkpoint_write_restarts_with_or_without_resume(tmp_path, tiny):
    """Case 5: a kill in the first last.pt write left config.yaml, metrics and a temp file, no last.pt."""
    from softlabels.engine import train

    exp = _exp(tmp_path, tiny, epochs=1)
    reference = train(exp)
    folder = exp.run_dir
    for name in ("last.pt", "summary.json", "best.pt"):
        (folder / name).unlink()
    (folder / ".last.pt.4242.tmp").write_bytes(b"half a checkpoint")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "cut')  # and an older version's metrics written before the checkpoint
    again = train(exp, resume_dir=folder)  # --resume restarts a run that has no checkpoint yet
    assert again["epochs"] == 1 and again["last_top1"] == reference["last_top1"]
    assert not list(folder.glob(".*.tmp"))
    assert [r["epoch"] for r in RunDir(folder).metrics()] == [1]
    (folder / "last.pt").unlink()
    (folder / "summary.json").unlink()
    assert train(exp)["last_top1"] == reference["last_top1"]  # and so does a fresh start


def test_a_kill_between_checkpoint_and_metrics_row_is_repaired_on_resume(tmp_path, tiny):
    """last.pt carries its epoch's metrics row: a kill before the row was appended loses nothing."""
    from softlabels.engine import train

    exp = _exp(tmp_path, tiny, name="full", epochs=2)
    train(exp)
    full = RunDir(exp.run_dir).metrics()
    short = _exp(tmp_path, tiny, name="cut", epochs=2)
    rd = RunDir(short.run_dir)

    class StopAfterFirstCheckpoint(softlabels_Callback):
        order = 55  # after the checkpointer (50), before the metric files (60)

        def on_epoch_end(self, trainer, record):
            raise KeyboardInterrupt  # stands in for a kill at this point

    with pytest.raises(KeyboardInterrupt):
        train(short, callbacks=[StopAfterFirstCheckpoint()])
    assert rd.metrics() == [] and rd.load_checkpoint()["epoch"] == 1
    train(short, resume_dir=rd.path)
    assert [r["test_top1"] for r in rd.metrics()] == [r["test_top1"] for r in full]


def test_non_finite_buffers_stop_the_run_before_a_poisoned_checkpoint(tmp_path, tiny):
    """Case 6: a BatchNorm running_var turned inf (finite loss): stop, keep the last good last.pt."""
    import math

    from softlabels.engine import train
    from softlabels.errors import NonFiniteLossError

    class PoisonSecondEpoch(softlabels_Callback):
        order = 40

        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                bn = next(m for m in trainer.method.student.modules() if hasattr(m, "running_var"))
                bn.running_var.fill_(math.inf)

    exp = _exp(tmp_path, tiny, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite values in student\..*running_var after epoch 2: "
                                                 r"stopped before writing (best|last).pt"):
        train(exp, callbacks=[PoisonSecondEpoch()])
    last = RunDir(exp.run_dir).load_checkpoint()
    assert last["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in last["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in RunDir(exp.run_dir).metrics()] == [1]


def test_a_weights_only_last_pt_is_a_one_line_checkpoint_error(tmp_path, tiny):
    """Case 14: last.pt replaced by a bare state dict (or best.pt)."""
    from softlabels.engine import train
    from softlabels.engine.checkpoint import save_atomic

    exp = _exp(tmp_path, tiny)
    train(exp)
    rd = RunDir(exp.run_dir)
    save_atomic(rd.load_checkpoint("best")["model"], rd.last_path)
    with pytest.raises(CheckpointError, match=r"last.pt holds weights only \(no optimizers, rng, .*\): it cannot be "
                                              r"resumed") as err:
        train(exp, resume_dir=rd.path)
    assert "\n" not in str(err.value)


def test_output_dir_that_is_a_file_or_read_only_is_a_one_line_error(tmp_path, tiny):
    """Case 16: no OSError traceback, one line naming the path."""
    from softlabels.engine import train

    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile") as err:
        train(_exp(tmp_path, tiny, output_dir=str(tmp_path / "afile")))
    assert "\n" not in str(err.value)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(UserError, match="ro") as err:
                train(_exp(tmp_path, tiny, output_dir=str(ro)))
            assert "\n" not in str(err.value)
        finally:
            ro.chmod(0o700)
