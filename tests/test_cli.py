"""End-to-end tests of every CLI command on synthetic data (and a quick Fashion-MNIST demo)."""
import json
from pathlib import Path

import pytest
import yaml

from softlabels.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def write_cfg(tmp_path, cfg, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "wsl" in out and "resnet32x4" in out and "fashion_mnist" in out
    assert main(["list", "methods"]) == 0
    assert capsys.readouterr().out.startswith("methods: ")


def test_validate_ok_and_error(tmp_path, tiny, capsys):
    path = write_cfg(tmp_path, tiny(tmp_path))
    assert main(["validate", path]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["validate", path, "optim.lr=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lr" in err and path in err and "Traceback" not in err


def test_train_eval_and_resume_commands(tmp_path, tiny, tiny_teacher, capsys):
    cfg = tiny(tmp_path, name="wsl", method={"name": "wsl"},
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=1)
    path = write_cfg(tmp_path, cfg)
    assert main(["train", path, "method.temperature=2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["name"] == "wsl" and 0 <= out["best_top1"] <= 100
    assert yaml.safe_load((tmp_path / "wsl" / "config.yaml").read_text())["method"]["temperature"] == 2

    assert main(["eval", str(tmp_path / "wsl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "wsl" / "summary.json").read_text())
    assert result["top1"] == pytest.approx(summary["best_top1"])

    # training again into the same folder is refused; resuming a finished run is a no-op
    assert main(["train", path, "method.temperature=2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "wsl")]) == 0
    assert main(["train", "--resume", str(tmp_path / "wsl"), "runtime.progress=false"]) == 0
    assert main(["train", "--resume", str(tmp_path / "wsl"), "optim.lr=0.3"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_train_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and err.count("\n") == 1
    assert main(["train"]) == 2
    assert main(["eval", str(tmp_path / "nothing.pt")]) == 2
    assert "nothing.pt" in capsys.readouterr().err


def test_missing_dataset_is_one_line(tmp_path, tiny, capsys):
    cfg = tiny(tmp_path)
    cfg["data"] = {"name": "cifar100", "root": str(tmp_path / "nodata")}
    assert main(["train", write_cfg(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for row in ("teacher", "student alone", "KD", "WSL"):
        assert row in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(results["rows"]) == 4
    assert all(0 <= r["best_top1"] <= 100 for r in results["rows"].values())


def test_eval_with_corruptions(tmp_path, tiny, capsys):
    path = write_cfg(tmp_path, tiny(tmp_path, name="ce", epochs=1))
    assert main(["train", path]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ce"), "--json", "--corruptions", "gaussian_noise", "contrast"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["corruptions"]) == {"gaussian_noise", "contrast"}
    assert all(set(v) == {"1", "2", "3", "4", "5"} for v in result["corruptions"].values())
    assert main(["eval", str(tmp_path / "ce"), "--corruptions", "sunburn"]) == 2
    assert "sunburn" in capsys.readouterr().err
