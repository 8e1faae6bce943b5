"""`softlabels bench` end to end on tiny models (figures are checked in benchmarks/, never timed here)."""
import json

from softlabels.bench import ratio_spread, spread, spread_warnings
from softlabels.cli import main

TINY = ["--teacher", "resnet8", "--student", "resnet8", "--shape", "3", "12", "12", "--batch-size", "8",
        "--num-classes", "4", "--steps", "2"]


def test_bench_writes_all_measurements_with_their_spread(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", *TINY, "--rounds", "3", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    for key in ("images_per_s", "overhead_ratio", "cached_ratio", "data_ratio", "peak_memory_mb"):
        assert r[key] > 0, key
    variants = {"framework", "bare", "cached", "student_only", "data"}
    assert set(r["images_per_s_by_variant"]) == variants
    assert r["cache_hits_while_timing"] > 0  # the cached variant really read the cache
    for name in variants:  # one timed epoch per round and variant, summarised as min <= median <= max
        s = r["epoch_time_spread_s"][name]
        assert len(r["all_epoch_times_s"][name]) == 3
        assert 0 < s["min"] <= s["median"] <= s["max"]
    for name in ("overhead_ratio", "cached_ratio", "data_ratio"):
        per_round = r["ratio_spread"][name]["per_round"]
        assert per_round["min"] <= per_round["median"] <= per_round["max"]
        assert r["ratio_spread"][name]["ratio"] == r[name]
    text = capsys.readouterr().out
    assert "overhead_ratio" in text and "min/median/max" in text
    assert all(w in text for w in r["spread_warnings"])


def test_spread_and_ratio_per_round():
    s = spread([2.0, 1.0, 4.0])
    assert (s["min"], s["median"], s["max"]) == (1.0, 2.0, 4.0)
    assert s["rel_spread"] == 1.5
    r = ratio_spread([2.0, 2.2, 2.0], [1.0, 1.0, 2.0])  # rounds: 2.0, 2.2, 1.0
    assert r["ratio"] == 2.0 / 1.0
    assert r["per_round"]["min"] == 1.0 and r["per_round"]["max"] == 2.2
    assert ratio_spread([1.0], [2.0], scale=4.0)["ratio"] == 2.0


def test_spread_warnings_flag_noisy_ratios_only():
    steady = {"ratio": 1.0, "per_round": spread([1.0, 1.02, 0.99])}
    noisy = {"ratio": 1.3, "per_round": spread([1.0, 1.3, 1.8])}
    warnings = spread_warnings({"a": steady, "b": noisy}, rounds=3, max_spread=0.10)
    assert len(warnings) == 1 and warnings[0].startswith("b 1.300")
    assert spread_warnings({"a": steady}, rounds=3, max_spread=0.10) == []
    assert "too few" in spread_warnings({"a": steady}, rounds=2, max_spread=0.10)[0]


def test_bench_runtime_paths_against_eager(tmp_path, capsys):
    out = tmp_path / "paths.json"
    assert main(["bench", *TINY, "--rounds", "1", "--runtime-paths", "bf16", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["paths"]) == {"eager_fp32", "bf16"}  # eager float32 is always the reference
    assert r["paths"]["bf16"]["runtime"]["amp"] == "bf16"
    assert r["paths"]["eager_fp32"]["speedup_excluding_compile"] == 1.0
    for p in r["paths"].values():
        assert p["first_epoch_s"] > 0 and p["images_per_s"] > 0 and p["speedup_including_compile"] > 0
    assert "too few" in r["spread_warnings"][0]  # one round cannot show a spread
    assert "speedup excl./incl. compile" in capsys.readouterr().out


def test_bench_unknown_runtime_path_is_one_line(capsys):
    assert main(["bench", *TINY, "--runtime-paths", "turbo"]) == 2
    err = capsys.readouterr().err
    assert "--runtime-paths: unknown path(s) turbo" in err and err.count("\n") == 1
