"""benchmarks/sweep_compare.py on tiny sizes (needs the optional extra `compare`); no timing is asserted."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchdistill", reason="torchdistill is not installed (optional: pip install -e .[compare])")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_compare.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("sweep_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wsl_loss_for_torchdistill_matches_softlabels():
    from softlabels.losses import wsl_soft_loss

    sc = _load_script()
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 7, generator=gen), 3 * torch.randn(16, 7, generator=gen)
    y = torch.randint(0, 7, (16,), generator=gen)
    theirs = sc.WSLLoss(temperature=2.0, alpha=2.25, ce_weight=1.0)({".": {"output": s}}, {".": {"output": t}}, y)
    ours = torch.nn.functional.cross_entropy(s, y) + 2.25 * wsl_soft_loss(s, t, y, 2.0)
    assert float(theirs) == pytest.approx(float(ours), rel=1e-6)


def test_sweep_runs_both_frameworks_with_the_cache(tmp_path, monkeypatch, capsys):
    sc = _load_script()
    monkeypatch.setitem(sc.SETTINGS, "cifar", {**sc.SETTINGS["cifar"], "teacher": "resnet8", "student": "resnet8",
                                               "shape": (3, 12, 12), "classes": 4})
    out = tmp_path / "sweep.json"
    result = sc.main(["--settings", "cifar", "--epochs", "2", "--batch-size", "8", "--train-size", "16",
                      "--test-size", "8", "--temperatures", "1", "4", "--json", str(out)])
    r = json.loads(out.read_text())["cifar"]
    assert r == json.loads(json.dumps(result["cifar"])) and r["complete"]
    assert r["sweep"] == ["kd T1", "kd T4", "wsl T4"]
    assert len(r["runs"]) == 3 and all(c["agree"] for c in r["loss_checks"])
    first, *rest = r["runs"]
    assert first["softlabels"]["teacher_cache_misses"] > 0  # the first run fills the cache ...
    assert all(run["softlabels"]["teacher_cache_hits"] == 4 for run in rest)  # ... the others read it (2 x 2 batches)
    assert all(run["softlabels"]["teacher_cache_misses"] == 0 for run in rest)
    for run in r["runs"]:
        for name in ("softlabels", "torchdistill"):
            assert run[name]["seconds"] > 0 and 0 <= run[name]["best_top1"] <= 100
    sl, td = r["total_wall_s"]["softlabels"][0], r["total_wall_s"]["torchdistill"][0]
    assert r["ratio_torchdistill_over_softlabels"] == pytest.approx(td / sl)
    assert "torchdistill / softlabels" in capsys.readouterr().out


def test_a_sweep_cut_short_keeps_its_runs(tmp_path, monkeypatch):
    sc = _load_script()
    monkeypatch.setitem(sc.SETTINGS, "cifar", {**sc.SETTINGS["cifar"], "teacher": "resnet8", "student": "resnet8",
                                               "shape": (3, 12, 12), "classes": 4})
    real, calls = sc.torchdistill_run, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a time limit's kill, after the first pair of runs
        return real(*args, **kwargs)

    monkeypatch.setattr(sc, "torchdistill_run", stop_at_the_second)
    out = tmp_path / "sweep.json"
    with pytest.raises(KeyboardInterrupt):
        sc.main(["--settings", "cifar", "--epochs", "1", "--batch-size", "8", "--train-size", "16", "--test-size", "8",
                 "--temperatures", "1", "4", "--json", str(out)])
    r = json.loads(out.read_text())["cifar"]
    assert r["complete"] is False and [run["method"] for run in r["runs"]] == ["kd T1"]
    assert r["runs"][0]["softlabels"]["seconds"] > 0 and r["runs"][0]["torchdistill"]["seconds"] > 0
