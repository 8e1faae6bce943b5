"""`softlabels reproduce --executor ray|submitit`: tiny plans on a local Ray cluster and submitit's local executor."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from softlabels.cli import main
from softlabels.errors import ConfigError
from softlabels.reproduce import parse_plan
from softlabels.reproduce.executors import make_executor, train_in_worker
from softlabels.reproduce.runner import final_runs, reproduce, run_all, teacher_run


def tiny_plan(tmp_path: Path, out: str = "runs") -> dict:
    """One teacher, student-alone and KD rows, two seeds: 5 runs of one epoch on 64 8x8 images."""
    return {
        "name": "tiny_exec",
        "output_dir": str(tmp_path / out),
        "seeds": [0, 1],
        "base": {
            "data": {"name": "synthetic", "batch_size": 32,
                     "synthetic": {"num_classes": 4, "image_size": 8, "channels": 1, "train_size": 64,
                                   "test_size": 24}},
            "optim": {"name": "sgd", "lr": 0.05},
            "schedule": {"name": "constant", "epochs": 1},
            "runtime": {"progress": False},
        },
        "teachers": {"t": {"student": {"name": "resnet8"}}},
        "pairs": {"p": {"teacher": "t", "student": "resnet8"}},
        "methods": {"student": {"overrides": {"method": {"name": "ce"}}},
                    "kd": {"overrides": {"method": {"name": "kd", "temperature": 4}}}},
        "results": {"json": str(tmp_path / f"{out}_out" / "r.json"), "markdown": str(tmp_path / f"{out}_out" / "r.md"),
                    "figures": str(tmp_path / f"{out}_out")},
    }


def _plan(raw: dict, tmp_path: Path):
    path = tmp_path / f"{raw['name']}_{Path(raw['output_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_plan(raw, str(path)), path


def _summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# ----------------------------------------------------------------------------- without an engine
def test_make_executor_choices_and_errors(tmp_path):
    assert make_executor("local", output_dir=tmp_path) is None
    with pytest.raises(ConfigError, match="--executor nope: unknown"):
        make_executor("nope", output_dir=tmp_path)
    pytest.importorskip("submitit")
    with pytest.raises(ConfigError, match="whole numbers"):
        make_executor("submitit", output_dir=tmp_path, cpus_per_run=1.5)
    ex = make_executor("submitit", output_dir=tmp_path, cpus_per_run=2, slurm={"partition": "gpu"})
    assert ex.folder == tmp_path / "submitit" and ex.cpus == 2 and ex.slurm == {"partition": "gpu"}


def test_cli_slurm_options_must_be_key_value(tmp_path, capsys):
    _, path = _plan(tiny_plan(tmp_path), tmp_path)
    assert main(["reproduce", str(path), "--executor", "submitit", "--slurm", "partition"]) == 2
    assert "--slurm partition: expected KEY=VALUE" in capsys.readouterr().err


def test_worker_refuses_a_missing_working_folder(tmp_path):
    res = train_in_worker({}, "x", str(tmp_path / "not-here"), 1)
    assert res["ok"] is False and "does not exist on this node" in res["error"]


# ----------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_local_cluster_runs_the_plan_like_the_local_pool(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from softlabels.reproduce.executors import RayExecutor

    monkeypatch.chdir(tmp_path)
    plan, _ = _plan(tiny_plan(tmp_path), tmp_path)
    lines: list[str] = []
    ex = RayExecutor(cpus_per_run=1, local_cpus=2)  # a local cluster of 2 CPUs: two runs at a time
    outcome = reproduce(plan, log=lines.append, executor=ex)
    assert not ray.is_initialized()  # the cluster the executor started is stopped again
    assert outcome["failures"] == {}
    text = "\n".join(lines)
    assert "ray: local cluster with 2 CPUs" in text
    assert "1 runs submitted as Ray tasks" in text and "4 runs submitted as Ray tasks" in text
    runs = [teacher_run(plan, "t"), *final_runs(plan, {})]
    assert len(runs) == 5 and all(r.finished() for r in runs)  # every run folder written by its task

    # the same plan in this process gives the same numbers (CPU training is a pure function of the seed)
    local_plan, _ = _plan(tiny_plan(tmp_path, out="local"), tmp_path)
    reproduce(local_plan, log=lambda m: None)
    for ours, theirs in zip(final_runs(plan, {}), final_runs(local_plan, {})):
        assert _summary(ours.run_dir)["best_top1"] == _summary(theirs.run_dir)["best_top1"]

    # finished runs are skipped (nothing submitted); a broken run is recorded and the others go on
    broken = replace(runs[-1], config={**runs[-1].config, "name": "broken", "method": {"name": "no-such-method"}})
    again = RayExecutor(cpus_per_run=1, local_cpus=2)
    failures: dict = {}
    results = run_all([*runs, broken], log=lines.append, failures=failures, executor=again)
    assert list(results) == [broken.label] and not results[broken.label]["ok"]
    assert failures[broken.label]["run_dir"].endswith("broken")
    assert "1 runs submitted as Ray tasks" in lines[-2]


@pytest.mark.slow
def test_ray_executor_joins_an_existing_cluster(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from softlabels.reproduce.executors import RayExecutor

    monkeypatch.chdir(tmp_path)
    raw = tiny_plan(tmp_path)
    raw["seeds"], raw["methods"] = [0], {"student": raw["methods"]["student"]}
    plan, _ = _plan(raw, tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 * 2**20,
                                                            "include_dashboard": False})
    try:
        lines: list[str] = []
        outcome = reproduce(plan, log=lines.append, executor=RayExecutor(address=cluster.address, cpus_per_run=2))
        assert outcome["failures"] == {}
        assert f"ray: cluster at {cluster.address} with 2 CPUs" in "\n".join(lines)
        assert all(r.finished() for r in [teacher_run(plan, "t"), *final_runs(plan, {})])
        assert not ray.is_initialized()  # disconnected again; the cluster itself is left running
        with pytest.raises(ConfigError, match="no node can hold a run asking 3 CPUs"):
            list(RayExecutor(address=cluster.address, cpus_per_run=3).run([], lines.append))
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        cluster.shutdown()


# ----------------------------------------------------------------------------- submitit (local executor)
@pytest.mark.slow
def test_submitit_local_executor_through_the_cli(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    raw = tiny_plan(tmp_path)
    raw["seeds"] = [0]
    raw["methods"] = {"kd": raw["methods"]["kd"]}
    plan, path = _plan(raw, tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(["reproduce", str(path), "--executor", "submitit", "--submitit-cluster", "local",
                 "--timeout-min", "10"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 runs submitted to local (submitit" in err and "[1/1] p/kd/" in err
    runs = [teacher_run(plan, "t"), *final_runs(plan, {})]
    assert all(r.finished() for r in runs)
    logs = list((tmp_path / "runs" / "submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one submitit job per run, its log kept beside the plan's runs
    assert json.loads((tmp_path / "runs_out" / "r.json").read_text())["pairs"]["p"]["methods"]["kd"]["seeds"] == [0]
    # run again: everything is finished, nothing is submitted
    assert main(["reproduce", str(path), "--executor", "submitit", "--submitit-cluster", "local"]) == 0
    assert "submitted" not in capsys.readouterr().err
