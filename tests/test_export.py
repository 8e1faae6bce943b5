"""softlabels export: TorchScript, ONNX and safetensors files of a run's student, each reloaded and compared."""
from __future__ import annotations

import json

import pytest
import torch

from softlabels.cli import main
from softlabels.config import validate_config
from softlabels.engine import train
from softlabels.errors import UserError


@pytest.fixture(scope="module")
def infodrop_run(tmp_path_factory):
    """A 1-epoch tiny run whose student trains with InfoDrop (export must leave it out)."""
    from conftest import tiny_experiment

    root = tmp_path_factory.mktemp("export")
    raw = tiny_experiment(root, name="student", epochs=1)
    raw["student"]["infodrop"] = {"after": ["stem"], "drop_rate": 0.5, "temperature": 0.5}
    train(validate_config(raw))
    return root / "student"


def _student(run, which="best"):
    from softlabels.engine.checkpoint import load_checkpoint
    from softlabels.models import create_model

    ckpt = load_checkpoint(run / f"{which}.pt")
    model = create_model(ckpt["model_name"], ckpt["num_classes"], ckpt["in_channels"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load deprecation notice
@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "safetensors"])
def test_export_round_trip(infodrop_run, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    assert main(["export", str(infodrop_run), "--format", fmt, "--checkpoint", "last"]) == 0
    line = capsys.readouterr().out.strip()
    assert "max |export - pytorch| =" in line and "tolerance" in line and line.endswith("OK")
    ext = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}[fmt]
    path = infodrop_run / "export" / f"student_last{ext}"
    manifest = json.loads(path.with_suffix(ext + ".json").read_text())
    assert manifest["model_name"] == "resnet8" and manifest["num_classes"] == 4
    assert manifest["input_shape"] == [None, 3, 12, 12] and len(manifest["sha256"]) == 64
    if manifest["checked_with"] != "onnx.checker only; pip install onnxruntime to compare outputs":
        assert manifest["max_abs_diff"] <= manifest["tolerance"]

    # independent check here, on other inputs: the export equals the eval-form student (InfoDrop is off)
    model, _ = _student(infodrop_run, "last")
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x)
    if fmt == "torchscript":
        out = torch.jit.load(str(path))(x)
    elif fmt == "safetensors":
        from softlabels.models import create_model

        out = create_model("resnet8", num_classes=4, pretrained=str(path)).eval()(x)  # one call
    else:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])  # dynamic batch axis
    with torch.no_grad():
        assert float((out - expected).abs().max()) <= 1e-4


def test_export_errors_are_one_line(infodrop_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.pt" in err
    from softlabels.export import export_run

    with pytest.raises(UserError, match="unknown export format"):
        export_run(infodrop_run, "tflite")


def test_export_on_random_inputs_when_the_data_is_elsewhere(infodrop_run, tmp_path):
    from softlabels.export import export_run

    result = export_run(infodrop_run, "torchscript", out=tmp_path / "m.pt", input_size=(3, 12, 12))
    assert result.path == tmp_path / "m.pt" and result.max_abs_diff is not None and result.max_abs_diff <= 1e-5
