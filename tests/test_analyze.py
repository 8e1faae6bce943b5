"""``softlabels analyze``: every subcommand end to end on tiny synthetic data, plus its building blocks."""
from __future__ import annotations

import copy
import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from softlabels.analysis.checks import AnalysisError
from softlabels.analysis.splits import disjoint_stratified_splits
from softlabels.cli import main
from softlabels.stats import describe_correlation, pearson, spearman

TEST_SIZE = 64


@pytest.fixture
def base_yaml(tmp_path, tiny):
    """A tiny base config: 4 classes, 12x12 images, 128 training images, 1 epoch of resnet8."""
    data = copy.deepcopy(tiny(tmp_path)["data"])
    data["synthetic"].update(train_size=128, test_size=TEST_SIZE)
    cfg = {
        "seed": 0,
        "data": data,
        "student": {"name": "resnet8"},
        "optim": {"lr": 0.05},
        "schedule": {"name": "multistep", "epochs": 1, "milestones": [1]},
        "runtime": {"progress": False, "device": "cpu"},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _analyze(*args) -> int:
    return main(["analyze", *[str(a) for a in args]])


def _in_unit(x) -> bool:
    return x is not None and 0.0 <= x <= 1.0


# --------------------------------------------------------------------------------------------- building blocks
def test_disjoint_stratified_splits():
    labels = torch.arange(103) % 4
    parts = disjoint_stratified_splits(labels, 3, seed=0)
    allpos = torch.cat(parts)
    assert allpos.numel() == 103 and torch.unique(allpos).numel() == 103  # disjoint and covering
    assert max(p.numel() for p in parts) - min(p.numel() for p in parts) <= 1
    for c in range(4):
        counts = [int((labels[p] == c).sum()) for p in parts]
        assert max(counts) - min(counts) <= 1  # stratified
    again = disjoint_stratified_splits(labels, 3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    other = disjoint_stratified_splits(labels, 3, seed=0, partition=1)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other))


def test_rank_correlations():
    assert spearman([1, 2, 4, 8], [0.1, 0.2, 0.3, 0.9]) == pytest.approx(1.0)
    assert spearman([1, 2, 4, 8], [5, 4, 3, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(math.sqrt(3) / 2)  # average ranks for ties
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [1, 1, 1]) is None and spearman([1], [2]) is None
    assert pearson([1, 2, None, 4], [1, 3, 5, 2]) == pytest.approx(pearson([1, 2, 4], [1, 3, 2]))  # pairs kept


def test_two_points_make_no_correlation_claim():
    assert spearman([1, 2], [5, 3]) is None and pearson([1, 2], [5, 3]) is None  # two points always give ±1
    assert describe_correlation(None, 2).startswith("not enough points (2;")
    assert describe_correlation(0.8, 4) == "+0.800 (4 points)"


# --------------------------------------------------------------------------------------------- bias-variance
def test_bias_variance_end_to_end_and_resume(tmp_path, base_yaml, capsys):
    out = tmp_path / "bv"
    assert _analyze("bias-variance", "--config", base_yaml, "--out", out, "--splits", 2, "--seeds", 0, 1) == 0
    result = json.loads((out / "bias_variance.json").read_text())
    (entry,) = result["models"]
    assert entry["name"] == "resnet8" and entry["num_models"] == 4 and len(entry["runs"]) == 4
    assert entry["bias"] + entry["variance"] == pytest.approx(entry["risk"], abs=1e-9)
    assert entry["variance"] >= 0 and entry["mse_variance"] >= 0
    assert entry["mse_bias2"] + entry["mse_variance"] == pytest.approx(entry["mse_risk"], abs=1e-9)
    assert 0 <= entry["ensemble_top1"] <= 100
    assert result["split_sizes"] == [64, 64] and result["train_pool_size"] == 128
    rows = _read_csv(out / "bias_variance_per_sample.csv")
    assert len(rows) == TEST_SIZE
    for r in rows[:10]:
        assert float(r["bias"]) + float(r["variance"]) == pytest.approx(float(r["risk"]), abs=1e-4)
    assert len(_read_csv(out / "bias_variance.csv")) == 1
    assert torch.load(out / "log_probs_resnet8.pt")["log_probs"].shape == (4, TEST_SIZE, 4)
    # the two splits of one seed are disjoint and cover the pool; the other seed reuses them
    split = {(r["split"], r["seed"]): set(json.loads((out / r["run"] / "split.json").read_text())["indices"])
             for r in entry["runs"]}
    assert not split[(0, 0)] & split[(1, 0)] and len(split[(0, 0)] | split[(1, 0)]) == 128
    assert split[(0, 0)] == split[(0, 1)]
    assert "| resnet8 |" in capsys.readouterr().out
    from softlabels.report import load_analysis  # `softlabels report` finds the numbers

    (found,) = load_analysis(out / "bias_variance.json").result.models
    assert found.name == "resnet8" and found.bias == pytest.approx(entry["bias"])
    assert found.bias_sem is not None and found.bias_sem > 0  # error bars of the report
    assert load_analysis(out / "bias_variance_per_sample.json") is None
    # re-running reuses the finished runs; more epochs continue them (resume from last.pt)
    stamp = (out / entry["runs"][0]["run"] / "last.pt").stat().st_mtime_ns
    assert _analyze("bias-variance", "--config", base_yaml, "--out", out, "--splits", 2, "--seeds", 0, 1) == 0
    assert (out / entry["runs"][0]["run"] / "last.pt").stat().st_mtime_ns == stamp
    assert _analyze("bias-variance", "--config", base_yaml, "--out", out, "--splits", 2, "--seeds", 0, 1,
                    "--epochs", 2) == 0
    metrics = (out / entry["runs"][0]["run"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]
    # a different pool for the same run folders is refused, not mixed in
    assert _analyze("bias-variance", "--config", base_yaml, "--out", out, "--splits", 2, "--seeds", 0, 1,
                    "--epochs", 2, "--subset", 96) == 2
    assert "different split" in capsys.readouterr().err


def test_bias_variance_width_sweep_with_partitions(tmp_path, base_yaml):
    out = tmp_path / "widths"
    assert _analyze("bias-variance", "--config", base_yaml, "--out", out, "--widths", 1, 2, "--splits", 2,
                    "--partitions", 2) == 0
    result = json.loads((out / "bias_variance.json").read_text())
    assert [e["width"] for e in result["models"]] == [1, 2]
    assert [e["name"] for e in result["models"]] == ["resnet18_w1", "resnet18_w2"]
    assert result["models"][0]["parameters"] < result["models"][1]["parameters"]
    for e in result["models"]:
        assert e["num_models"] == 4
        assert e["bias"] + e["variance"] == pytest.approx(e["risk"], abs=1e-9)
    assert len(_read_csv(out / "bias_variance_per_sample.csv")) == 2 * TEST_SIZE
    runs = result["models"][0]["runs"]
    indices = {(r["partition"], r["split"]): set(json.loads((out / r["run"] / "split.json").read_text())["indices"])
               for r in runs}
    assert not indices[(1, 0)] & indices[(1, 1)] and indices[(0, 0)] != indices[(1, 0)]
    per_sample = json.loads((out / "bias_variance_per_sample.json").read_text())
    assert set(per_sample) == {"resnet18_w1", "resnet18_w2"} and len(per_sample["resnet18_w1"]["bias"]) == TEST_SIZE


# --------------------------------------------------------------------------------------------- temperature sweep
def test_temperature_sweep_end_to_end(tmp_path, base_yaml):
    out = tmp_path / "ts"
    assert _analyze("temperature-sweep", "--config", base_yaml, "--out", out, "--temperatures", 1, 4, "--epochs", 2,
                    "--train-teacher", "--teacher", "resnet8", "--teacher-epochs", 1) == 0
    assert (out / "teacher_resnet8" / "last.pt").is_file()
    result = json.loads((out / "temperature_sweep.json").read_text())
    assert [r["temperature"] for r in result["per_temperature"]] == [1.0, 4.0]
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        assert len(run["reg_fraction_per_epoch"]) == 2 and all(_in_unit(f) for f in run["reg_fraction_per_epoch"])
        assert _in_unit(run["reg_fraction_mean"]) and 0 <= run["best_top1"] <= 100
        cfg = yaml.safe_load((out / run["run"] / "config.yaml").read_text())
        assert cfg["method"]["name"] == "kd" and cfg["method"]["temperature"] == run["temperature"]
    answers = result["answers"]
    assert answers["count_vs_temperature"]["trend_sign"] in (-1, 0, 1, None)
    assert set(answers["accuracy_vs_count"]["across_temperatures"]) >= {"spearman_best", "pearson_best"}
    assert len(_read_csv(out / "temperature_sweep.csv")) == 2
    assert len(_read_csv(out / "temperature_sweep_runs.csv")) == 2
    epochs = _read_csv(out / "temperature_sweep_epochs.csv")
    assert len(epochs) == 4 and all(_in_unit(float(r["reg_fraction"])) for r in epochs)
    text = (out / "temperature_sweep.md").read_text()
    assert "Spearman not enough points (2;" in text  # two temperatures: no claim about a trend
    assert "falls as the count rises" not in text and "rises: yes" not in text
    assert answers["count_vs_temperature"]["spearman"] is None
    assert answers["accuracy_vs_count"]["falls_as_count_rises"] is None
    from softlabels.analysis.results import TemperatureSweepResult, load_result

    typed = load_result(out / "temperature_sweep.json")  # the report's reader: typed, no key guessing
    assert isinstance(typed, TemperatureSweepResult) and typed.to_json() == result


# --------------------------------------------------------------------------------------------- filtering
def test_filtering_end_to_end(tmp_path, base_yaml, tiny_teacher):
    out = tmp_path / "filter"
    assert _analyze("filtering", "--config", base_yaml, "--out", out, "--teacher-checkpoint", tiny_teacher,
                    "--seeds", 0, 1, "--temperature", 2) == 0
    result = json.loads((out / "filtering.json").read_text())
    assert [a["arm"] for a in result["arms"]] == ["kd", "filter", "wsl"]
    for arm in result["arms"]:
        assert arm["n"] == 2 and 0 <= arm["best_top1_mean"] <= 100 and arm["best_top1_std"] >= 0
    rows = _read_csv(out / "filtering.csv")
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1"}
    assert len(_read_csv(out / "filtering_summary.csv")) == 3
    for arm, weighting in (("kd", "none"), ("filter", "filter"), ("wsl", "wsl")):
        method = yaml.safe_load((out / f"{arm}_seed0" / "config.yaml").read_text())["method"]
        assert method["name"] == "wsl" and method["weighting"] == weighting and method["temperature"] == 2
    assert set(result["paired_differences"]) == {"filter_minus_kd", "wsl_minus_kd"}
    assert result["answers"]["filtering_hurts"] in (True, False)


# --------------------------------------------------------------------------------------------- soft-label bias-variance
def test_soft_label_bv_end_to_end(tmp_path, base_yaml, tiny_teacher):
    out = tmp_path / "slbv"
    assert _analyze("soft-label-bv", "--config", base_yaml, "--out", out, "--teacher-checkpoint", tiny_teacher,
                    "--splits", 2, "--temperature", 4) == 0
    result = json.loads((out / "soft_label_bv.json").read_text())
    assert [m["name"] for m in result["methods"]] == ["ce", "kd", "wsl"]
    for m in result["methods"]:
        assert m["num_models"] == 2 and m["variance"] >= 0
        assert m["bias"] + m["variance"] == pytest.approx(m["risk"], abs=1e-9)
    reg = result["regularization"]
    assert reg["num_samples"] == TEST_SIZE and _in_unit(reg["fraction"]) and _in_unit(reg["ce_vote_mean"])
    changes = _read_csv(out / "soft_label_bv.csv")
    assert len(changes) == 6
    for method in ("kd", "wsl"):
        groups = {r["group"]: r for r in changes if r["method"] == method}
        assert int(groups["regularization"]["count"]) + int(groups["other"]["count"]) == TEST_SIZE
        assert int(groups["regularization"]["count"]) == reg["count"]
        assert _in_unit(float(groups["all"]["frac_bias_up"])) and float(groups["all"]["fraction"]) == 1.0
    per_sample = _read_csv(out / "soft_label_bv_per_sample.csv")
    assert len(per_sample) == TEST_SIZE
    assert sum(int(r["regularization"]) for r in per_sample) == reg["count"]
    r = per_sample[0]
    assert float(r["bias_kd"]) + float(r["variance_kd"]) == pytest.approx(float(r["risk_kd"]), abs=1e-4)
    assert (int(r["regularization"]) == 1) == (float(r["ce_pT_y"]) > float(r["teacher_pT_y"]))
    assert len(_read_csv(out / "soft_label_bv_methods.csv")) == 3


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["filtering", "--teacher-checkpoint", "{tmp}/missing.pt"], "teacher checkpoint not found"),
        (["temperature-sweep", "--temperatures", "1", "two"], "--temperatures: 'two' is not a number"),
        (["temperature-sweep", "--temperatures", "2", "0"], "--temperatures: values must be > 0"),
        (["filtering", "--seeds", "0", "0"], "--seeds: 0 is listed twice"),
        (["filtering", "--seeds", "0", "1.5"], "--seeds: '1.5' is not a whole number"),
        (["bias-variance", "--splits", "1"], "--splits must be >= 2"),
        (["bias-variance", "--widths", "7"], "registered widths"),
        (["bias-variance", "--subset", "lots"], "--subset"),
        (["soft-label-bv"], "--teacher-checkpoint"),  # synthetic data: no shipped teacher
    ],
)
def test_user_errors_are_one_line(tmp_path, base_yaml, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert _analyze(*args, "--config", base_yaml, "--out", tmp_path / "err") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softlabels: error:") and message in err and "\n" not in err


def test_analyses_never_evaluate_weights_chosen_on_the_test_set(tmp_path, base_yaml, capsys):
    from softlabels.analysis.base import base_config
    from softlabels.analysis.width_sweep import bias_variance_experiment

    with pytest.raises(AnalysisError, match="chosen on the test set"):
        bias_variance_experiment(base_config(base_yaml), tmp_path / "bv", checkpoint="best")
    assert not (tmp_path / "bv").exists()  # refused before anything trains
    with pytest.raises(SystemExit):
        _analyze("bias-variance", "--config", base_yaml, "--checkpoint", "best")


def test_analysis_error_is_a_user_error():
    from softlabels.errors import UserError

    assert issubclass(AnalysisError, UserError)
    with pytest.raises(AnalysisError):
        disjoint_stratified_splits(torch.zeros(4, dtype=torch.long), 0, seed=0)


# --------------------------------------------------------------------------------------------- committed results
DOCS = Path(__file__).resolve().parents[1] / "docs" / "analysis"


@pytest.mark.parametrize("name", ["bias_variance_widths", "filtering", "soft_label_bv", "temperature_sweep"])
def test_committed_results_read_back_typed_and_unchanged(name):
    from softlabels.analysis.results import load_result

    raw = json.loads((DOCS / f"{name}.json").read_text())
    typed = load_result(DOCS / f"{name}.json").to_json()

    def strip_new(obj):  # standard errors are newer than these files: null there
        if isinstance(obj, dict):
            return {k: strip_new(v) for k, v in obj.items() if not (k.endswith("_sem") and v is None)}
        if isinstance(obj, list):
            return [strip_new(v) for v in obj]
        return obj

    assert json.dumps(strip_new(typed)) == json.dumps(raw)  # same keys in the same order, same values


def test_committed_summaries_are_reproduced_from_their_runs():
    """The per-temperature table, the per-arm table and the answers follow from the per-run records alone."""
    from softlabels.analysis import filtering, temperature_sweep
    from softlabels.analysis.results import load_result

    ts = load_result(DOCS / "temperature_sweep.json")
    again = temperature_sweep.summarize(ts.runs, dataset=ts.dataset, teacher=ts.teacher, method=ts.method,
                                        temperatures=ts.temperatures, seeds=ts.seeds)
    assert again.per_temperature == ts.per_temperature
    flat_a = json.dumps(again.answers.to_json(), sort_keys=True)
    flat_b = json.dumps(ts.answers.to_json(), sort_keys=True)
    # scipy's correlations may differ from the committed hand-written ones in the last bit (0.7999999999999999)
    number = r"-?\d+\.\d+(?:e-?\d+)?"
    assert [float(x) for x in re.findall(number, flat_a)] == pytest.approx(
        [float(x) for x in re.findall(number, flat_b)], rel=1e-12)
    assert re.sub(number, "x", flat_a) == re.sub(number, "x", flat_b)  # same answers, same structure
    fl = load_result(DOCS / "filtering.json")
    again = filtering.summarize(fl.runs, dataset=fl.dataset, teacher=fl.teacher, methods=fl.methods, seeds=fl.seeds)
    assert again.to_json() == fl.to_json()
    text = temperature_sweep.markdown(ts)
    assert "Spearman +0.800 (4 points)" in text and "not enough points" not in text
