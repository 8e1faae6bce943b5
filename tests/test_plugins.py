"""Bring your own: shipped configs and assets from any folder, plugins (--import, imports:, entry points)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.errors import ConfigError, UserError
from softlabels.resources import find_config, list_configs, resolve_path

CHECKOUT = Path(__file__).resolve().parents[1]

# Fashion-MNIST-shaped synthetic data (1 x 28 x 28, 10 classes): the shipped teacher fits it.
TINY_FMNIST = [
    "data.name=synthetic", "data.synthetic.channels=1", "data.synthetic.image_size=28",
    "data.synthetic.num_classes=10", "data.synthetic.train_size=64", "data.synthetic.test_size=32",
    "data.train_subset=null", "data.batch_size=32", "data.num_workers=0",
    "schedule.epochs=1", "schedule.warmup_epochs=0", "runtime.progress=false", "runtime.device=cpu",
]


# ----------------------------------------------------------------------------- configs and assets
def test_package_resource_resolves_inside_the_package():
    path = resolve_path("softlabels:teachers/fashion_mnist_resnet20.pt")
    assert path.is_file() and path.parent.parent.name == "assets"
    assert resolve_path("plain/file.pt") == Path("plain/file.pt")
    with pytest.raises(UserError, match="inside the package assets"):
        resolve_path("softlabels:../cli.py")


def test_shipped_config_names_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "fashion_mnist/wsl" in list_configs()
    for name in ("fashion_mnist/wsl", "fashion_mnist/wsl.yaml", "configs/fashion_mnist/wsl.yaml"):
        assert find_config(name).name == "wsl.yaml" and find_config(name).is_file()
    (tmp_path / "fashion_mnist").mkdir()
    (tmp_path / "fashion_mnist" / "wsl.yaml").write_text("student: {name: resnet8}\n")
    assert find_config("fashion_mnist/wsl.yaml") == Path("fashion_mnist/wsl.yaml")  # a local file wins
    with pytest.raises(ConfigError, match="fashion_mnist/nope"):
        find_config("fashion_mnist/nope")


def test_repository_configs_link_points_into_the_package():
    link = CHECKOUT / "configs"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert (link / "fashion_mnist" / "wsl.yaml").resolve() == find_config("fashion_mnist/wsl").resolve()


def test_shipped_config_validates_and_trains_outside_the_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "fashion_mnist/wsl"]) == 0
    assert main(["list", "configs"]) == 0
    assert "fashion_mnist/wsl" in capsys.readouterr().out
    assert main(["train", "fashion_mnist/wsl", *TINY_FMNIST, "output_dir=out"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["name"] == "wsl_resnet20_resnet8"
    run = tmp_path / "out" / "wsl_resnet20_resnet8"
    assert (run / "last.pt").is_file()
    text = (run / "config.yaml").read_text()
    assert "softlabels:teachers/fashion_mnist_resnet20.pt" in text  # the portable form is what is recorded
    from softlabels.engine.checkpoint import sha256_of

    teacher = json.loads((run / "summary.json").read_text())["teacher"]
    assert teacher["checkpoint"] == "softlabels:teachers/fashion_mnist_resnet20.pt"
    assert teacher["sha256"] == sha256_of(resolve_path(teacher["checkpoint"]))
