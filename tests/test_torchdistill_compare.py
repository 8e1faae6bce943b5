"""benchmarks/torchdistill_compare.py end to end on tiny models (needs the optional extra `compare`)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torchdistill", reason="torchdistill is not installed (optional: pip install -e .[compare])")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "torchdistill_compare.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("torchdistill_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_writes_both_rates(tmp_path, capsys):
    out = tmp_path / "compare.json"
    result = _load_script().main(["--teacher", "resnet8", "--student", "resnet8", "--shape", "3", "12", "12",
                                  "--batch-size", "8", "--num-classes", "4", "--steps", "2", "--rounds", "1",
                                  "--json", str(out)])
    r = json.loads(out.read_text())
    assert r == json.loads(json.dumps(result))
    for name in ("softlabels", "torchdistill"):
        assert r["images_per_s"][name] > 0, name
        assert r["images_per_round"][name] == 16, name  # 2 steps of 8 images on both sides
    assert r["ratio_softlabels_over_torchdistill"] > 0
    assert r["loss_check"]["agree"]  # both sides optimise the same KD loss
    assert r["torchdistill"] and r["torch"] and r["threads"] >= 1
    assert "softlabels / torchdistill" in capsys.readouterr().out
