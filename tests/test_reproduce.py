"""Reproduction plans: parsing, selection on val, statistics, and one tiny plan end to end."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from softlabels.cli import main
from softlabels.errors import ConfigError
from softlabels.reproduce import parse_plan
from softlabels.reproduce.plan import default_values, student_run, tag_of
from softlabels.reproduce.runner import check_plan, choose, final_runs, selection_runs, selection_state
from softlabels.stats import mean_std, paired_comparison, student_t_sf_two_sided


def tiny_plan(tmp_path: Path, **extra) -> dict:
    raw = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seeds": [0, 1],
        "base": {
            "data": {"name": "synthetic", "val_split": 0.25, "split_seed": 0, "batch_size": 32,
                     "synthetic": {"num_classes": 4, "image_size": 8, "channels": 1, "train_size": 64,
                                   "test_size": 24}},
            "optim": {"name": "sgd", "lr": 0.05},
            "schedule": {"name": "constant", "epochs": 1},
            "runtime": {"progress": False},
        },
        "teachers": {"t": {"student": {"name": "resnet8"}}},
        "pairs": {"p": {"teacher": "t", "student": "resnet8"}},
        "methods": {
            "student": {"overrides": {"method": {"name": "ce"}}},
            "kd": {"overrides": {"method": {"name": "kd", "kd_weight": 0.9}, "teacher": {"cache": True}},
                   "select": [{"method.temperature": [2, 4]}, {"method.kd_weight": [0.9, 0.5]}]},
            "wsl": {"overrides": {"method": {"name": "wsl"}}, "select": [{"method.temperature": [2, 4]}]},
            "kd_equal": {"label": "KD at WSL's scaling", "overrides": {"method": {"name": "wsl", "weighting": "none"}},
                         "inherit": {"wsl": ["method.temperature"]}},
        },
        "results": {"json": str(tmp_path / "out" / "r.json"), "markdown": str(tmp_path / "out" / "r.md"),
                    "figures": str(tmp_path / "out"), "paired": {"wsl": ["kd", "kd_equal"]}},
    }
    raw.update(extra)
    return raw


def fake_finished(run, val: float, test: float = 50.0) -> None:
    """A finished run folder with the given validation / test top-1 (no training)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "summary.json").write_text(json.dumps(
        {"epochs": 1, "total_epochs": 1, "best_val_top1": val, "best_top1": test, "last_top1": test,
         "best_epoch": 1, "wall_time_s": 1.0}))
    (run.run_dir / "metrics.jsonl").write_text(json.dumps(
        {"epoch": 1, "val_top1": val, "test_top1": test, "reg_fraction": 0.25}) + "\n")


# ----------------------------------------------------------------------------- statistics
def test_student_t_two_sided_known_answers():
    for t in (0.3, 1.0, 2.5):
        assert student_t_sf_two_sided(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
        assert student_t_sf_two_sided(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)
    # Two-sided 5 % critical values of tables.
    for t, df in ((12.706205, 1), (4.302653, 2), (3.182446, 3), (2.776445, 4), (2.228139, 10), (2.131450, 15)):
        assert student_t_sf_two_sided(t, df) == pytest.approx(0.05, abs=2e-6)
    assert student_t_sf_two_sided(0.0, 3) == pytest.approx(1.0)
    assert student_t_sf_two_sided(-2.776445, 4) == pytest.approx(0.05, abs=2e-6)
    with pytest.raises(ValueError):
        student_t_sf_two_sided(1.0, 0)


def test_mean_std_and_paired_comparison():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, None) and mean_std([]) == (None, None)
    res = paired_comparison([86.0, 87.0, 88.0], [85.0, 85.0, 88.0])
    assert res["diffs"] == [1.0, 2.0, 0.0] and res["mean_diff"] == 1.0 and res["std_diff"] == 1.0
    assert (res["wins"], res["losses"], res["n"]) == (2, 0, 3)
    assert res["t"] == pytest.approx(math.sqrt(3))
    assert res["p"] == pytest.approx(student_t_sf_two_sided(math.sqrt(3), 2))
    assert paired_comparison([1.0, 1.0], [0.0, 0.0])["t"] is None  # zero spread: no t


# ----------------------------------------------------------------------------- plan
def test_plan_errors_name_the_key(tmp_path):
    bad_pair = tiny_plan(tmp_path)
    bad_pair["pairs"]["p"]["teacher"] = "nope"
    with pytest.raises(ConfigError, match=r"plan.yaml: .*pairs.p.teacher: unknown teacher 'nope'"):
        parse_plan(bad_pair, "plan.yaml")
    two_keys = tiny_plan(tmp_path)
    two_keys["methods"]["wsl"]["select"] = [{"method.temperature": [2], "method.alpha": [1]}]
    with pytest.raises(ConfigError, match="methods.wsl.*one dotted key"):
        parse_plan(two_keys, "plan.yaml")
    bad_inherit = tiny_plan(tmp_path)
    bad_inherit["methods"]["kd_equal"]["inherit"] = {"student": ["method.temperature"]}
    with pytest.raises(ConfigError, match="not a method with a select grid"):
        parse_plan(bad_inherit, "plan.yaml")
    bad_paired = tiny_plan(tmp_path)
    bad_paired["results"]["paired"] = {"wsl": ["kd", "nope"]}
    with pytest.raises(ConfigError, match="results.paired: unknown method 'nope'"):
        parse_plan(bad_paired, "plan.yaml")
    with pytest.raises(ConfigError, match="seeds"):
        parse_plan(tiny_plan(tmp_path, seeds=[1, 1]), "plan.yaml")
    with pytest.raises(ConfigError, match="a mapping"):
        parse_plan([1, 2], "plan.yaml")
    typo = tiny_plan(tmp_path)
    typo["methods"]["kd"]["overrides"]["method"]["temprature"] = 3
    with pytest.raises(ConfigError, match="temprature"):
        check_plan(parse_plan(typo, "plan.yaml"))  # every run's config is validated before training
    no_val = tiny_plan(tmp_path)
    no_val["base"]["data"]["val_split"] = 0
    with pytest.raises(ConfigError, match="val_split"):
        check_plan(parse_plan(no_val, "plan.yaml"))


def test_cli_plan_file_errors(tmp_path, capsys):
    assert main(["reproduce", str(tmp_path / "missing.yaml")]) == 2
    assert "plan file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    assert main(["reproduce", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_runs_folders_tags_and_teacher_wiring(tmp_path):
    plan = parse_plan(tiny_plan(tmp_path))
    assert tag_of({}) == "default" and tag_of({"method.temperature": 4.0, "method.alpha": 2.25}) == "T4-alpha2.25"
    assert default_values(plan, "kd") == {"method.temperature": 2, "method.kd_weight": 0.9}  # own setting kept
    run = student_run(plan, "final", "p", "kd", 1, {"method.temperature": 4})
    assert run.run_dir == tmp_path / "runs" / "p" / "kd" / "T4" / "seed1"
    assert run.config["method"] == {"name": "kd", "kd_weight": 0.9, "temperature": 4}
    assert run.config["teacher"]["checkpoint"] == str(tmp_path / "runs" / "teachers" / "t" / "best.pt")
    assert run.config["teacher"]["cache_path"] == str(tmp_path / "runs" / "teacher_cache" / "t_seed1")
    assert "teacher" not in student_run(plan, "final", "p", "student", 0, {}).config
    assert "cache_path" not in student_run(plan, "final", "p", "wsl", 0, {}).config["teacher"]
    raw = tiny_plan(tmp_path)  # a row on a longer schedule gets its own cache (other slots per seed)
    raw["methods"]["kd_long"] = {"overrides": {"method": {"name": "kd"}, "teacher": {"cache": True},
                                               "schedule": {"epochs": 3}}}
    long_run = student_run(parse_plan(raw), "final", "p", "kd_long", 1, {})
    assert long_run.config["teacher"]["cache_path"] == str(tmp_path / "runs" / "teacher_cache" / "t_seed1_e3")


def test_selection_chooses_on_val_reuses_folders_and_inherits(tmp_path):
    plan = parse_plan(tiny_plan(tmp_path))
    chosen: dict = {}
    step1 = selection_runs(plan, 1, chosen)
    assert sorted((r.method, r.values["method.temperature"]) for r in step1) == [("kd", 2), ("kd", 4), ("wsl", 2),
                                                                                  ("wsl", 4)]
    vals = {("kd", 2): 70.0, ("kd", 4): 75.0, ("wsl", 2): 80.0, ("wsl", 4): 80.0}  # wsl tie: first listed wins
    for r in step1:
        fake_finished(r, vals[(r.method, r.values["method.temperature"])], test=99.0)
    choose(plan, 1, chosen)
    assert chosen[("p", "kd")]["method.temperature"] == 4 and chosen[("p", "wsl")]["method.temperature"] == 2
    step2 = selection_runs(plan, 2, chosen)
    # kd_weight 0.9 at T 4 is the step-1 winner's folder: only 0.5 is new.
    assert [r.run_dir.exists() for r in step2] == [True, False]
    fake_finished(step2[1], 76.0)
    choose(plan, 2, chosen)
    assert chosen[("p", "kd")] == {"method.temperature": 4, "method.kd_weight": 0.5}
    final = {(r.method, r.seed): r for r in final_runs(plan, chosen)}
    assert final[("kd", 0)].run_dir == step2[1].run_dir  # the selection run is seed 0's final run
    assert final[("kd_equal", 1)].values == {"method.temperature": 2}  # inherited from wsl's choice
    again, table, complete = selection_state(plan)
    assert again == chosen and complete and len(table) == 6


def test_method_seeds_and_pairs_restrict_the_final_runs(tmp_path):
    raw = tiny_plan(tmp_path)
    raw["pairs"]["q"] = {"teacher": "t", "student": "resnet14"}
    raw["methods"]["fitnet"] = {"overrides": {"method": {"name": "fitnet"}}, "pairs": ["p"], "seeds": [1]}
    runs = final_runs(parse_plan(raw), {})
    assert [(r.pair, r.seed) for r in runs if r.method == "fitnet"] == [("p", 1)]
    assert sorted((r.pair, r.seed) for r in runs if r.method == "student") == [("p", 0), ("p", 1), ("q", 0), ("q", 1)]
    raw["methods"]["fitnet"]["pairs"] = ["nope"]
    with pytest.raises(ConfigError, match="methods.fitnet.pairs: unknown pair 'nope'"):
        parse_plan(raw)


def test_methods_option_runs_only_those_rows_and_needs_inherited_selection(tmp_path, monkeypatch):
    import softlabels.reproduce.runner as runner

    plan = parse_plan(tiny_plan(tmp_path))
    fake_finished(runner.teacher_run(plan, "t"), 50.0)
    (tmp_path / "runs" / "teachers" / "t" / "best.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="kd_equal inherits wsl's chosen values"):
        runner.reproduce(plan, methods=["kd_equal"])
    with pytest.raises(ConfigError, match="unknown method"):
        runner.reproduce(plan, methods=["nope"])
    for r in selection_runs(plan, 1, {}):
        if r.method == "wsl":
            fake_finished(r, 60.0 + r.values["method.temperature"])
    ran = []
    monkeypatch.setattr(runner, "_train_one", lambda config, label: ran.append(label) or {"ok": False, "error": "x"})
    runner.reproduce(plan, methods=["kd_equal"], log=lambda m: None)
    assert ran == ["p/kd_equal/T4/seed0", "p/kd_equal/T4/seed1"]  # wsl chose T 4; nothing else ran


def test_selection_on_one_pair_applies_to_every_pair(tmp_path):
    raw = tiny_plan(tmp_path, selection={"seed": 0, "on_pair": "p"})
    raw["pairs"]["q"] = {"teacher": "t", "student": "resnet14"}
    plan = parse_plan(raw)
    step1 = selection_runs(plan, 1, {})
    assert {r.pair for r in step1} == {"p"}
    for r in step1:
        fake_finished(r, 70.0 + (r.values["method.temperature"] == 4))
    chosen, _, _ = selection_state(plan)
    final = {(r.pair, r.method, r.seed): r for r in final_runs(plan, chosen)}
    assert final[("q", "wsl", 1)].values == {"method.temperature": 4}
    assert final[("q", "kd_equal", 0)].values == {"method.temperature": 4}
    raw["selection"]["on_pair"] = "nope"
    with pytest.raises(ConfigError, match="selection.on_pair: unknown pair 'nope'"):
        parse_plan(raw)


def test_incomplete_selection_keeps_the_starting_value(tmp_path):
    plan = parse_plan(tiny_plan(tmp_path))
    first = selection_runs(plan, 1, {})
    fake_finished(first[1], 90.0)  # only one of kd's two temperatures finished
    chosen, _, complete = selection_state(plan)
    assert not complete and chosen[("p", "kd")]["method.temperature"] == 2


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_reproduce_end_to_end_resume_collect_and_failures(tmp_path, monkeypatch, capsys):
    import softlabels.engine.trainer as trainer_module

    raw = tiny_plan(tmp_path)
    raw["methods"]["fitnet"] = {"overrides": {"method": {"name": "fitnet"}}}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(raw))
    real = trainer_module.run_or_resume

    def failing_fitnet(exp):
        if exp.method.name == "fitnet":
            raise RuntimeError("shapes do not fit")
        return real(exp)

    monkeypatch.setattr(trainer_module, "run_or_resume", failing_fitnet)
    assert main(["reproduce", str(plan_file)]) == 1  # a failed run is reported in the exit status
    err = capsys.readouterr().err
    assert "p/fitnet/default/seed0: FAILED RuntimeError: shapes do not fit" in err
    failures = json.loads((tmp_path / "runs" / "failures.json").read_text())
    assert sorted(failures) == ["p/fitnet/default/seed0", "p/fitnet/default/seed1"]

    results = json.loads((tmp_path / "out" / "r.json").read_text())
    kd = results["pairs"]["p"]["methods"]["kd"]
    assert kd["seeds"] == [0, 1] and len(kd["best"]) == len(kd["last"]) == 2
    assert all(0 <= v <= 100 for v in kd["best"] + kd["last"])
    assert results["pairs"]["p"]["methods"]["fitnet"]["missing_seeds"] == [0, 1]
    assert set(results["pairs"]["p"]["paired"]) == {"wsl-kd", "wsl-kd_equal"}
    assert results["teachers"]["t"]["sha256"] and results["selection"]["complete"]
    assert (tmp_path / "out" / "tiny_reg_vs_temperature.png").is_file()
    md = (tmp_path / "out" / "r.md").read_text()
    assert "| kd |" in md and "| wsl − kd | best |" in md and "(+2 missing)" in md
    assert "| KD at WSL's scaling |" in md and "wsl − KD at WSL's scaling" in md  # labels

    # From the logs alone: --collect rewrites the same results without training.
    (tmp_path / "out" / "r.json").unlink()
    monkeypatch.setattr(trainer_module, "run_or_resume", lambda exp: pytest.fail("--collect must not train"))
    assert main(["reproduce", str(plan_file), "--collect"]) == 0
    assert json.loads((tmp_path / "out" / "r.json").read_text())["pairs"] == results["pairs"]

    # A run removed is reported as todo and trained again by the same command; the rest is skipped.
    victim = Path(kd["run_dirs"][1])
    for f in victim.iterdir():
        f.unlink()
    capsys.readouterr()
    assert main(["reproduce", str(plan_file), "--status"]) == 0
    assert "todo     final     p/kd/" in capsys.readouterr().out
    monkeypatch.setattr(trainer_module, "run_or_resume", failing_fitnet)
    assert main(["reproduce", str(plan_file)]) == 1
    err = capsys.readouterr().err
    assert err.count(": running") == 3  # the removed kd run + the two failing fitnet runs
    assert json.loads((victim / "summary.json").read_text())["best_top1"] == pytest.approx(kd["best"][1])


def test_shipped_plan_is_valid():
    from softlabels.reproduce import load_plan

    plan = load_plan("configs/reproduce/fashion_mnist.yaml")
    assert check_plan(copy.deepcopy(plan)) > 0
    assert len(plan.seeds) >= 3 and len(plan.pairs) >= 2
    assert {"student", "kd", "wsl", "kd_filtered"} <= set(plan.methods)


# ----------------------------------------------------------------------------- version-2 report
def v2_plan(tmp_path: Path) -> dict:
    raw = tiny_plan(tmp_path, seeds=[0, 1, 2, 3])
    raw["pairs"]["q"] = {"teacher": "t", "student": "resnet14", "overrides": {"optim": {"lr": 0.01}}}
    raw["methods"]["student"]["pairs"] = ["p", "q"]
    raw["methods"]["kd"]["pairs"] = raw["methods"]["wsl"]["pairs"] = raw["methods"]["kd_equal"]["pairs"] = ["p"]
    raw["selection"] = {"on_pair": "p"}
    raw["results"].update(version=2, paired={"wsl": ["kd", "kd_equal"], "kd": ["student"]}, curves=["student"],
                          share=["kd", "wsl"], share_paired={"wsl": ["kd_equal"]},
                          claims={"pair": "p", "student": "student", "kd": "kd", "kd_same_scale": "kd_equal",
                                  "wsl": "wsl", "strength": {"p": ["student", "kd", "wsl"]}})
    return raw


def fake_epochs(run, vals: list[float], best: float, last: float, shares: list[float] | None = None) -> None:
    """A finished run folder with one metrics row per epoch (val top-1, and reg_fraction when given)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": i + 1, "val_top1": v, "test_top1": last, **({"reg_fraction": shares[i]} if shares else {})}
            for i, v in enumerate(vals)]
    (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run.run_dir / "summary.json").write_text(json.dumps(
        {"epochs": len(vals), "total_epochs": len(vals), "best_val_top1": max(vals), "best_top1": best,
         "last_top1": last, "best_epoch": 1, "wall_time_s": 1.0}))


def test_v2_plan_keys_are_checked(tmp_path):
    raw = v2_plan(tmp_path)
    assert parse_plan(raw).results.version == 2
    for key, value, match in (("curves", ["nope"], "results.curves: unknown method 'nope'"),
                              ("share_paired", {"wsl": ["nope"]}, "results.share_paired: unknown method 'nope'"),
                              ("claims", {"pair": "zz", "wsl": "wsl"}, "results.claims.pair: unknown pair 'zz'"),
                              ("claims", {"pair": "p", "wsl": "wsl", "strength": {"p": ["student"]}},
                               r"strength.p: give \[student row, KD row, WSL row\]"),
                              ("claims", {"pair": "p", "wsl": "wsl", "shorter_schedule": {"teacher": "student"}},
                               r"shorter_schedule: unknown roles \['teacher'\]"),
                              ("claims", {"pair": "p", "wsl": "wsl", "shorter_schedule": {"wsl": "nope"}},
                               "results.claims: unknown method 'nope'")):
        bad = v2_plan(tmp_path)
        bad["results"][key] = value
        with pytest.raises(ConfigError, match=match):
            parse_plan(bad, "plan.yaml")
    # the pair's learning rate reaches its runs only
    plan = parse_plan(raw)
    assert student_run(plan, "final", "q", "student", 0, {}).config["optim"]["lr"] == 0.01
    assert student_run(plan, "final", "p", "student", 0, {}).config["optim"]["lr"] == 0.05


def _fake_v2_results(tmp_path, wsl_minus_kd: list[float], share_slope: float):
    """Every run of the v2 tiny plan finished with chosen numbers; returns (plan, results)."""
    from softlabels.reproduce.collect import collect

    plan = parse_plan(v2_plan(tmp_path))
    chosen: dict = {}
    for step in (1, 2):
        for r in selection_runs(plan, step, chosen):
            fake_epochs(r, [50.0] * 12, 60.0, 60.0, [0.3] * 12)
        choose(plan, step, chosen)
    for r in final_runs(plan, chosen):
        s = r.seed
        share = 0.20 + 0.01 * s
        kd = 80.0 + share_slope * share  # KD's accuracy is a line in its share: r = -1, +1 or undefined
        best = {"student": 75.0 + 0.1 * s, "kd": kd, "kd_equal": kd + 0.05 * (s - 1.5),
                "wsl": kd + wsl_minus_kd[s]}[r.method]
        vals = [40.0 + 3 * e for e in range(8)] + [62.0, 62.5, 62.4, 62.6, 62.5, 62.6]  # flattens
        fake_epochs(r, vals, best, best - 0.1, [share] * len(vals))
    return plan, collect(plan)


def test_v2_collect_curves_shares_and_ci(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, results = _fake_v2_results(tmp_path, [1.0, 1.2, 0.9, 1.1], share_slope=-20.0)
    curve = results["curves"]["p/student"]
    assert sorted(curve["seeds"]) == ["0", "1", "2", "3"] and len(curve["seeds"]["0"]["val_top1"]) == 14
    # last 5 (62.6, 62.5, 62.4, 62.6, 62.5 ... ) minus the 5 before, by hand
    vals = [40.0 + 3 * e for e in range(8)] + [62.0, 62.5, 62.4, 62.6, 62.5, 62.6]
    assert curve["last5_change"] == pytest.approx(sum(vals[-5:]) / 5 - sum(vals[-10:-5]) / 5)
    assert "q/student" in results["curves"]
    kd_share = results["shares"]["rows"]["p/kd"]
    assert kd_share["share_mean"] == pytest.approx([20.0, 21.0, 22.0, 23.0])
    assert kd_share["r_share_best"]["r"] == pytest.approx(-1.0)  # best = 80 - 20 * share: perfectly negative
    paired = results["pairs"]["p"]["paired"]["wsl-kd"]["best"]
    assert paired["mean_diff"] == pytest.approx(1.05) and paired["ci_low"] > 0 and paired["d_z"] > 0
    share_cmp = results["shares"]["paired"]["p/wsl-kd_equal"]
    assert share_cmp["mean_diff"] == pytest.approx(0.0, abs=1e-9)


def test_v2_markdown_words_follow_the_measured_signs(tmp_path, monkeypatch):
    from softlabels.reproduce.collect import write_results

    monkeypatch.chdir(tmp_path)
    plan, _ = _fake_v2_results(tmp_path / "a", [1.0, 1.2, 0.9, 1.1], share_slope=-20.0)
    write_results(plan)
    md = Path(plan.results.markdown).read_text()
    assert "## What this says about WSL" in md and "WSL beats KD here, as the paper reports." in md
    assert "mean diff [95 % CI]" in md and "| wsl − kd | best | +1.05 [" in md
    assert "a higher share went with lower accuracy, as the paper argues." in md
    assert "## Convergence: validation top-1 per epoch" in md
    assert (Path(plan.results.figures) / "tiny_val_curves.png").is_file()
    # the opposite signs give the opposite words; a noisy difference gives "cannot tell" wording
    plan, _ = _fake_v2_results(tmp_path / "b", [-1.0, -1.2, -0.9, -1.1], share_slope=20.0)
    write_results(plan)
    md = Path(plan.results.markdown).read_text()
    assert "WSL is worse than KD here, against the paper's claim." in md
    assert "a higher share went with higher accuracy, against the paper's argument." in md
    plan, _ = _fake_v2_results(tmp_path / "c", [1.0, -1.2, 0.9, -0.5], share_slope=0.0)
    write_results(plan)
    md = Path(plan.results.markdown).read_text()
    assert "the paper's claim is not confirmed here." in md
    assert "WSL beats KD" not in md and "WSL is worse than KD here" not in md


def test_v1_layout_is_unchanged(tmp_path, monkeypatch):
    """Version 1 (the default) keeps the original paired record and table: committed reports regenerate."""
    monkeypatch.chdir(tmp_path)
    raw = v2_plan(tmp_path)
    for key in ("version", "curves", "share", "share_paired", "claims"):
        raw["results"].pop(key)
    from softlabels.reproduce.collect import collect, markdown

    plan = parse_plan(raw)
    chosen: dict = {}
    for step in (1, 2):
        for r in selection_runs(plan, step, chosen):
            fake_finished(r, 50.0)
        choose(plan, step, chosen)
    for r in final_runs(plan, chosen):
        fake_finished(r, 50.0, test=80.0 + r.seed * (r.method == "wsl"))
    results = collect(plan)
    rec = results["pairs"]["p"]["paired"]["wsl-kd"]["best"]
    assert set(rec) == {"n", "diffs", "mean_diff", "std_diff", "wins", "losses", "t", "p"}
    assert rec["t"] == pytest.approx(rec["mean_diff"] / (rec["std_diff"] / 2))
    assert "curves" not in results and "shares" not in results
    md = markdown(plan, results, None, tmp_path)
    assert "| Comparison | metric | mean diff | std | wins/losses | t | p (two-sided) |" in md
    assert "What this says about WSL" not in md and "95 % CI" not in md


def test_shipped_v2_plan_is_valid_and_fits_its_design():
    from softlabels.reproduce import load_plan

    plan = load_plan("configs/reproduce/fashion_mnist_v2.yaml")
    assert check_plan(copy.deepcopy(plan)) > 0
    assert plan.base["schedule"]["epochs"] >= 30 and len(plan.seeds) == 5 and len(plan.pairs) == 3
    assert plan.pairs["resnet20-mobilenetv2"].overrides["optim"]["lr"] == 0.01
    from softlabels.methods import list_methods

    zoo = {plan.methods[m].overrides.get("method", {}).get("name") for m in plan.methods}
    assert set(list_methods()) <= zoo  # every registered method has a row
    for name, m in plan.methods.items():
        if (m.pairs or list(plan.pairs)) == ["resnet20-resnet8"]:
            assert len(plan.method_seeds(name)) >= 3, name
    for row in ("kd", "kd_w1", "wsl", "wsl_std", "kd_filtered"):
        assert plan.methods[row].select and plan.method_seeds(row) == [0, 1, 2, 3, 4]


def test_v1_results_regenerate_byte_for_byte(tmp_path):
    """The committed v1 report, JSON and figures come back identical from the committed logs."""
    from softlabels.reproduce import load_plan
    from softlabels.reproduce.collect import write_results

    root = Path(__file__).resolve().parent.parent
    if not (root / "results" / "fashion_mnist").is_dir():
        pytest.skip("v1 run folders not present")
    cwd = Path.cwd()
    import os

    os.chdir(root)
    try:
        plan = load_plan("configs/reproduce/fashion_mnist.yaml")
        committed = {"json": Path(plan.results.json_path), "md": Path(plan.results.markdown),
                     "png": Path(plan.results.figures) / "fashion_mnist_reg_vs_temperature.png",
                     "svg": Path(plan.results.figures) / "fashion_mnist_reg_vs_temperature.svg"}
        plan.results.json_path = str(tmp_path / "r.json")
        plan.results.markdown = str(tmp_path / "results" / "fashion_mnist_v1.md")  # same depth as docs/results/
        plan.results.figures = str(tmp_path / "results")
        write_results(plan)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "r.json").read_bytes() == (root / committed["json"]).read_bytes()
    assert (tmp_path / "results" / "fashion_mnist_v1.md").read_bytes() == (root / committed["md"]).read_bytes()
    for key in ("png", "svg"):
        assert (tmp_path / "results" / committed[key].name).read_bytes() == (root / committed[key]).read_bytes(), key


def test_unfinished_teacher_stops_the_plan_before_any_student(tmp_path, monkeypatch, capsys):
    """A teacher whose run failed midway leaves a best.pt: no student may distil from it."""
    import softlabels.engine.trainer as trainer_module

    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(tiny_plan(tmp_path)))
    trained = []

    def teacher_dies_after_its_first_checkpoint(exp):
        trained.append(exp.name)
        (exp.run_dir).mkdir(parents=True, exist_ok=True)
        (exp.run_dir / "best.pt").write_bytes(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(trainer_module, "run_or_resume", teacher_dies_after_its_first_checkpoint)
    assert main(["reproduce", str(plan_file)]) == 1
    assert trained == ["t"] and "unfinished teachers: t" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "p").exists()


def test_methods_option_needs_only_the_teachers_of_its_rows(tmp_path):
    from softlabels.reproduce.plan import load_plan
    from softlabels.reproduce.runner import needed_teachers

    raw = tiny_plan(tmp_path)
    raw["teachers"]["big"] = {"student": {"name": "resnet14"}}
    raw["pairs"]["q"] = {"teacher": "big", "student": "resnet8"}
    raw["selection"] = {"seed": 0, "on_pair": "p"}
    raw["methods"]["student"]["pairs"] = ["p"]
    raw["methods"]["kd_q"] = {"overrides": {"method": {"name": "kd"}}, "pairs": ["q"],
                              "select": [{"method.temperature": [2, 4]}]}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(raw))
    plan = load_plan(plan_file)
    assert sorted(needed_teachers(plan)) == ["big", "t"]
    assert needed_teachers(plan, {"student"}) == ["t"]
    assert sorted(needed_teachers(plan, {"kd_q"})) == ["big", "t"]  # selected on pair p, final runs on q


# ----------------------------------------------------------------------------- bias/variance on regularization samples
def test_bias_variance_groups_known_answer():
    """Row − reference differences per group, from constructed per-sample values."""
    from types import SimpleNamespace

    import torch

    from softlabels.reproduce.bias_variance import _group_stats

    ref = SimpleNamespace(bias=torch.tensor([1.0, 1.0, 2.0, 2.0]), variance=torch.tensor([0.5, 0.5, 0.1, 0.3]),
                          risk=torch.tensor([1.5, 1.5, 2.1, 2.3]))
    row = SimpleNamespace(bias=torch.tensor([1.5, 1.7, 2.0, 1.0]), variance=torch.tensor([0.2, 0.4, 0.1, 0.1]),
                          risk=torch.tensor([1.7, 2.1, 2.1, 1.1]))
    reg = torch.tensor([True, True, False, False])
    out = _group_stats(row, ref, {"regularization": reg, "other": ~reg, "all": torch.ones(4, dtype=torch.bool)})
    assert out["regularization"]["count"] == 2 and out["regularization"]["fraction"] == 0.5
    assert out["regularization"]["delta"]["bias"]["mean_diff"] == pytest.approx(0.6)
    assert out["regularization"]["delta"]["variance"]["mean_diff"] == pytest.approx(-0.2)
    assert out["other"]["delta"]["bias"]["mean_diff"] == pytest.approx(-0.5)
    assert out["all"]["row"]["bias"] == pytest.approx(1.55) and out["all"]["reference"]["bias"] == pytest.approx(1.5)
    lo, hi = out["regularization"]["delta"]["bias"]["ci_low"], out["regularization"]["delta"]["bias"]["ci_high"]
    assert lo < 0.6 < hi  # two samples: a wide t interval around the mean


def test_reproduce_bias_variance_end_to_end(tmp_path, capsys):
    """A tiny trained plan: --bias-variance writes the JSON (groups cover the test set, bias + variance = risk)
    and the report gains the section and the claim lines; --collect alone keeps them."""
    raw = tiny_plan(tmp_path)
    raw["methods"] = {k: raw["methods"][k] for k in ("student", "kd", "wsl", "kd_equal")}
    raw["methods"]["student_def"] = {"overrides": {"method": {"name": "ce"}}, "seeds": [0, 5]}
    raw["results"].update(version=2, paired={"wsl": ["kd_equal"]},
                          claims={"pair": "p", "student": "student", "kd": "kd", "kd_same_scale": "kd_equal",
                                  "wsl": "wsl"},
                          bias_variance={"pair": "p", "reference": "student", "definition": "student_def",
                                         "rows": ["kd", "wsl"], "compare": {"wsl": "kd_equal"}})
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(raw))
    assert main(["reproduce", str(plan_file), "--bias-variance"]) == 2  # nothing trained yet: one clear line
    assert "have no finished runs" in capsys.readouterr().err
    assert main(["reproduce", str(plan_file)]) == 0
    assert json.loads((tmp_path / "out" / "r.json").read_text())["bias_variance"] is None
    capsys.readouterr()
    assert main(["reproduce", str(plan_file), "--bias-variance"]) == 2  # the definition row shares seed 0
    assert "shares seeds [0]" in capsys.readouterr().err
    raw["methods"]["student_def"]["seeds"] = [5, 6]
    plan_file.write_text(yaml.safe_dump(raw))
    assert main(["reproduce", str(plan_file), "--methods", "student_def"]) == 0
    assert main(["reproduce", str(plan_file), "--bias-variance"]) == 0
    data = json.loads((tmp_path / "runs" / "bias_variance.json").read_text())
    assert data["seeds"] == [0, 1] and data["num_samples"] == 24 and data["definition_seeds"] == [5, 6]
    for name in ("kd", "wsl"):
        row = data["rows"][name]
        g = row["groups"]
        assert g["regularization"]["count"] + g["other"]["count"] == g["all"]["count"] == 24
        assert row["temperature"] in (2.0, 4.0) and row["num_models"] == 2
        assert row["mean"]["risk"] == pytest.approx(row["mean"]["bias"] + row["mean"]["variance"], rel=1e-6)
    md = (tmp_path / "out" / "r.md").read_text()
    assert "## Bias and variance on regularization samples" in md and "Regularization samples, " in md
    assert main(["reproduce", str(plan_file), "--collect"]) == 0
    assert json.loads((tmp_path / "out" / "r.json").read_text())["bias_variance"] == data
    # a section that now names other rows than the file on disk: the report says so and shows none of it
    raw["results"]["bias_variance"].update(rows=["kd"], compare={})
    plan_file.write_text(yaml.safe_dump(raw))
    assert main(["reproduce", str(plan_file), "--collect"]) == 0
    md = (tmp_path / "out" / "r.md").read_text()
    assert "**Not shown:**" in md and "--bias-variance` again" in md and "Regularization samples, " not in md


def test_shorter_schedule_lines_follow_the_measured_signs():
    """claims.shorter_schedule: the convergence line says 'not converged' only when the main (longer) student is
    clearly better, and the grid's comparisons are repeated on the shorter rows that ran."""
    from types import SimpleNamespace

    from softlabels.reproduce.findings import _shorter_schedule

    def entry(values):
        return {"seeds": [0, 1, 2], "best": values}

    plan = SimpleNamespace(methods={"w": None}, epochs_of=lambda row: 30)
    c = SimpleNamespace(student="s60", shorter_schedule={"student": "s", "kd": "k", "wsl": "w"})
    label = {"s": "S", "s60": "S60", "k": "K", "w": "W"}
    rows = {"s": entry([80.0, 80.2, 79.9]), "s60": entry([83.0, 83.4, 83.1]), "k": entry([84.0, 84.3, 84.1]),
            "w": entry([84.0, 84.3, 84.1])}
    text = "\n".join(_shorter_schedule(plan, c, rows, label))
    assert "**Convergence: S60 − S**: +3.13 points" in text and "has not converged for the student alone" in text
    assert "W − K (the paper's headline comparison, 30 epochs)**: +0.00 points" in text
    assert "K − S (KD's gain over the student, 30 epochs)" in text and "KD helps." in text
    assert "only the sample weights differ" not in text  # no kd_same_scale row on the shorter schedule
    rows["s60"] = entry([80.1, 80.0, 80.1])
    assert "the shorter schedule has converged" in "\n".join(_shorter_schedule(plan, c, rows, label))


def test_plan_epochs_of_reads_the_row_override_then_the_base():
    from softlabels.reproduce.plan import load_plan

    plan = load_plan("configs/reproduce/fashion_mnist_v2.yaml")
    assert plan.epochs_of("student") == 30 and plan.epochs_of("wsl_60") == 60
