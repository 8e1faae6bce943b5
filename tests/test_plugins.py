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


# ----------------------------------------------------------------------------- plugins
EXAMPLE = CHECKOUT / "examples" / "plugin"


def test_import_flags_are_taken_from_anywhere_on_the_line():
    from softlabels.plugins import pop_import_flags

    mods, rest = pop_import_flags(["--import", "a.b", "train", "x.yaml", "--import=c", "optim.lr=0.1"])
    assert mods == ["a.b", "c"] and rest == ["train", "x.yaml", "optim.lr=0.1"]
    with pytest.raises(UserError, match="--import needs a module name"):
        pop_import_flags(["list", "--import"])


def test_failing_imports_are_one_line_errors_naming_the_module(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTLABELS_IMPORTS", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    assert main(["list", "datasets", "--import", "no_such_plugin_mod"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no_such_plugin_mod'" in err and "--import" in err
    assert main(["--import", "broken_plugin_mod", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'broken_plugin_mod'" in err and "RuntimeError: boom" in err
    from conftest import tiny_experiment
    from softlabels.config import validate_config

    with pytest.raises(UserError, match=r"no_such_plugin_mod.*imports"):
        validate_config(tiny_experiment(tmp_path, imports=["no_such_plugin_mod"]), "x.yaml")
    with pytest.raises(UserError, match="not a module name"):
        validate_config(tiny_experiment(tmp_path, imports=["os; rm -rf /"]), "x.yaml")


def test_config_imports_register_names_before_validation(tmp_path, monkeypatch):
    from conftest import tiny_experiment
    from softlabels.config import validate_config

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cfg_import_plugin.py").write_text(
        "from torch import nn\nfrom softlabels.models import register_model\n"
        "@register_model('cfg_import_net')\n"
        "def net(num_classes, in_channels=3):\n"
        "    return nn.Sequential(nn.Flatten(1), nn.LazyLinear(num_classes))\n")
    raw = tiny_experiment(tmp_path, imports=["cfg_import_plugin"])
    raw["student"] = {"name": "cfg_import_net"}
    exp = validate_config(raw, "x.yaml")
    assert exp.imports == ["cfg_import_plugin"] and exp.student.name == "cfg_import_net"
    from softlabels.plugins import modules_providing

    assert modules_providing(exp) == ["cfg_import_plugin"]


def test_installed_entry_points_are_loaded(tmp_path, monkeypatch):
    """A distribution declaring the `softlabels.plugins` group is imported without any flag."""
    from softlabels import plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ep_plugin_mod.py").write_text("LOADED = True\n")
    info = tmp_path / "ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[softlabels.plugins]\nexample = ep_plugin_mod\n")
    try:
        loaded = plugins.load_entry_points(force=True)
        assert "example=ep_plugin_mod" in loaded
        import sys

        assert sys.modules["ep_plugin_mod"].LOADED
        (tmp_path / "ep_plugin_fn.py").write_text("CALLS = []\ndef register():\n    CALLS.append(1)\n")
        (info / "entry_points.txt").write_text("[softlabels.plugins]\nfn = ep_plugin_fn:register\n")
        assert "fn=ep_plugin_fn:register" in plugins.load_entry_points(force=True)
        assert sys.modules["ep_plugin_fn"].CALLS == [1]  # `module:function`: imported, then called once
        # Python API: a name lookup loads installed plugins by itself (no CLI, no validate_config)
        (tmp_path / "ep_model_mod.py").write_text(
            "from torch import nn\nfrom softlabels.models import register_model\n"
            "@register_model('ep_model')\ndef f(num_classes, in_channels=3):\n    return nn.Linear(in_channels, num_classes)\n")
        (info / "entry_points.txt").write_text("[softlabels.plugins]\nmodels = ep_model_mod\n")
        plugins._entry_points_loaded = None  # a fresh process
        from softlabels.models import create_model

        assert create_model("ep_model", num_classes=3, in_channels=2).out_features == 3
        (info / "entry_points.txt").write_text("[softlabels.plugins]\nbad = ep_missing_mod\n")
        with pytest.raises(UserError, match="'ep_missing_mod'.*entry point 'bad'"):
            plugins.load_entry_points(force=True)
    finally:
        monkeypatch.undo()
        plugins.load_entry_points(force=True)


# ----------------------------------------------------------------------------- any dataset
def _example_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import softlabels_example

    return softlabels_example


def test_torch_dataset_adapter_splits_indices_and_workers(monkeypatch):
    import torch

    from softlabels.data import build_data, subset_and_split

    _example_module(monkeypatch)
    cfg = {"name": "blobs", "batch_size": 32, "eval_batch_size": 64, "train_subset": 120, "val_split": 24,
           "num_workers": 0}
    data = build_data(cfg, seed=5)
    from softlabels_example.blobs import Blobs

    labels = torch.as_tensor(Blobs(384, seed=1).targets)
    train_idx, val_idx = subset_and_split(labels, 120, 24, 5)  # the built-in sets' stratified choice
    assert torch.equal(data.train.indices, train_idx) and torch.equal(data.val.indices, val_idx)
    assert data.val.dataset_labels.bincount().tolist() == [8, 8, 8]
    assert (data.info.num_classes, data.info.in_channels, data.info.image_size) == (3, 1, 12)
    assert data.info.full_train_size == 384 and data.info.class_names[0] == "horizontal"

    def epoch(loader, e):
        loader.set_epoch(e)
        return [(x.clone(), y.clone(), i.clone()) for x, y, i in loader]

    first = epoch(data.train, 1)
    seen = torch.cat([i for _, _, i in first])
    assert sorted(seen.tolist()) == train_idx.tolist()  # every training index once, original numbering
    for _, y, i in first:
        assert torch.equal(y, labels[i])
    plain = Blobs(384, seed=1)
    assert any(not torch.equal(x[0], plain[int(i[0])][0]) for x, _, i in first)  # augmented
    with_workers = epoch(build_data({**cfg, "num_workers": 2}, seed=5).train, 1)
    for (xa, ya, ia), (xb, yb, ib) in zip(first, with_workers):  # same batches whatever the worker count
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb) and torch.equal(ia, ib)
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(first, epoch(data.train, 2)))  # a new order per epoch


def test_torch_dataset_adapter_rejects_images_that_are_not_tensors():
    from torch.utils.data import Dataset

    from softlabels.data import TorchDatasets, torch_dataset_bundle
    from softlabels.errors import DataError

    class Raw(Dataset):
        targets = [0, 1]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return [[0.0]], i

    with pytest.raises(DataError, match=r"'raw' item 0.*ToTensor"):
        torch_dataset_bundle(TorchDatasets(train=Raw(), test=Raw()), {"batch_size": 2}, "cpu", 0, "raw")


def test_example_plugin_trains_then_evals_and_resumes_without_flags(tmp_path, monkeypatch, capsys):
    """The example package: first run with --import; a fresh process then evals and resumes it with no flag."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("SOFTLABELS_IMPORTS", "")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(tmp_path)
    config = str(EXAMPLE / "blobs.yaml")
    assert main(["--import", "softlabels_example", "train", config, "imports=[]", "schedule.epochs=1",
                 "data.train_subset=96", "data.val_split=24"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "example" / "blobs_example_cnn"
    import yaml

    recorded = yaml.safe_load((run / "config.yaml").read_text())["imports"]
    assert recorded[0] == "softlabels_example" and "softlabels_example.blobs" in recorded
    env = {k: v for k, v in os.environ.items() if k != "SOFTLABELS_IMPORTS"}
    env.update(PYTHONPATH=str(EXAMPLE), OMP_NUM_THREADS="1")
    script = (
        "import json, sys\n"
        "from softlabels.cli import main\n"
        "assert 'softlabels_example' not in sys.modules\n"
        f"assert main(['eval', {str(run)!r}, '--json']) == 0\n"
        f"assert main(['train', '--resume', {str(run)!r}, 'schedule.epochs=2']) == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["dataset"] == "blobs" and lines[0]["model"] == "example_cnn"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["dataset"] == "blobs"


def test_cli_imports_reach_worker_processes_through_the_environment(tmp_path, monkeypatch):
    """`--import` is exported in $SOFTLABELS_IMPORTS; a process (e.g. a reproduce worker) imports what it lists."""
    import os
    import sys

    from softlabels.plugins import ENV_VAR, load_plugins

    monkeypatch.setenv(ENV_VAR, "")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "env_plugin_a.py").write_text("")
    (tmp_path / "env_plugin_b.py").write_text("")
    load_plugins(["env_plugin_a"], "--import", export=True)
    assert os.environ[ENV_VAR] == "env_plugin_a"
    monkeypatch.setenv(ENV_VAR, "env_plugin_b")
    sys.modules.pop("env_plugin_b", None)
    load_plugins([])  # what a worker's validate_config does
    assert "env_plugin_b" in sys.modules


def test_torch_dataset_run_resumes_bit_exactly(tmp_path, monkeypatch):
    """A DataLoader-backed run continued with --resume ends with the weights of the uninterrupted run."""
    import torch

    from softlabels.config import load_config
    from softlabels.engine import train as engine_train
    from softlabels.engine.checkpoint import load_checkpoint

    _example_module(monkeypatch)
    common = ["schedule.name=constant", "data.val_split=0", "data.train_subset=96", f"output_dir={tmp_path}",
              "runtime.device=cpu"]
    engine_train(load_config(EXAMPLE / "blobs.yaml", [*common, "name=straight", "schedule.epochs=2"]))
    engine_train(load_config(EXAMPLE / "blobs.yaml", [*common, "name=cut", "schedule.epochs=1"]))
    resumed = load_config(EXAMPLE / "blobs.yaml", [*common, "name=cut", "schedule.epochs=2"])
    engine_train(resumed, resume_dir=tmp_path / "cut")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
