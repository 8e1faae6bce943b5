"""The writer module (softlabels.io) and RunDir, the one reader/writer of a run folder."""
import json
import math
import os
import subprocess
import sys

import pytest

from softlabels import io
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
