"""Export a run's student to TorchScript, ONNX or safetensors, and check the export.

``softlabels export RUN --format torchscript|onnx|safetensors [--checkpoint best|last]`` rebuilds the
student from the checkpoint in eval form (a fresh ``create_model``: InfoDrop hooks and every training-only
piece are left out; the weights are the checkpoint's), writes ``RUN/export/student_<checkpoint>.<ext>`` plus a
``.json`` manifest (model, classes, input shape, normalisation mean/std, sha256, measured difference), then
reloads the written file and compares its outputs with the PyTorch model's on one batch:

* torchscript (``torch.jit.trace``, reloaded with ``torch.jit.load``) and safetensors (reloaded through
  ``create_model(name, pretrained=FILE)``): max |difference| must be <= 1e-5;
* onnx (``torch.onnx.export``, legacy exporter, dynamic batch axis; run with onnxruntime when installed,
  else only ``onnx.checker``): <= 1e-4 (kernels differ).

The batch comes from the run's test set (its first images, evaluation transform); when the data cannot be
built here, pass ``input_size=(C, H, W)`` to check on random inputs instead.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.errors import UserError

FORMATS = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4, "safetensors": 1e-5}
CHECK_BATCH = 8

__all__ = ["FORMATS", "ExportResult", "export_run"]


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured (``max_abs_diff`` None: not checked, see ``checked_with``)."""

    path: Path
    manifest: Path
    format: str
    max_abs_diff: float | None
    tolerance: float
    checked_with: str

    def line(self) -> str:
        if self.max_abs_diff is None:
            return f"{self.path}: written, outputs NOT compared ({self.checked_with})"
        return (f"{self.path}: max |export - pytorch| = {self.max_abs_diff:.3g} on {CHECK_BATCH} images "
                f"(tolerance {self.tolerance:g}, {self.checked_with}): OK")


def _student(ckpt: dict) -> nn.Module:
    from softlabels.engine.checkpoint import load_model_weights
    from softlabels.models import create_model

    model = create_model(ckpt["model_name"], ckpt["num_classes"], ckpt.get("in_channels", 3))
    load_model_weights(model, ckpt)
    return model.eval()


def _batch(config: dict, input_size: tuple[int, int, int] | None, in_channels: int) -> tuple[torch.Tensor, dict]:
    """(images float32 (B, C, H, W), {"mean", "std"}) from the run's test set, or random of ``input_size``."""
    if input_size is not None:
        c, h, w = (int(v) for v in input_size)
        return torch.randn(CHECK_BATCH, c, h, w, generator=torch.Generator().manual_seed(0)), {}
    from softlabels.data import build_data

    data_cfg = dict(config.get("data") or {})
    data_cfg.update(num_workers=0, eval_batch_size=CHECK_BATCH)
    try:
        data = build_data(data_cfg, device="cpu", seed=int(config.get("seed", 0)))
    except UserError as err:
        raise UserError(f"cannot build the run's data to check the export ({err}); pass --input-size C H W") from None
    images = next(iter(data.test))[0][:CHECK_BATCH].float()
    return images, {"mean": list(data.info.mean), "std": list(data.info.std)}


def export_run(run: str | Path, fmt: str, *, checkpoint: str = "best", out: str | Path | None = None,
               input_size: tuple[int, int, int] | None = None) -> ExportResult:
    """Export the student of run folder ``run`` (or a checkpoint file) and check the export (module docstring).

    Raises:
        UserError: unknown format, missing checkpoint or package, or an export whose outputs differ from the
            model's by more than the tolerance (the message gives the difference).
    """
    from softlabels.engine.checkpoint import load_checkpoint, sha256_of
    from softlabels.plugins import load_plugins

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = Path(run)
    ckpt_path = run / f"{checkpoint}.pt" if run.is_dir() else run
    if run.is_dir() and not ckpt_path.is_file():
        raise UserError(f"{run} has no {checkpoint}.pt; pass --checkpoint last or best, or a finished run")
    ckpt = load_checkpoint(ckpt_path)
    config = ckpt.get("config") or {}
    if "model_name" not in ckpt or "num_classes" not in ckpt:
        raise UserError(f"checkpoint {ckpt_path} records no model name/class count (not written by softlabels)")
    load_plugins(config.get("imports") or [], f"checkpoint {ckpt_path}: recorded imports")
    model = _student(ckpt)
    images, norm = _batch(config, input_size, int(ckpt.get("in_channels", 3)))
    with torch.no_grad():
        reference = model(images)

    folder = Path(out).parent if out is not None else (run if run.is_dir() else run.parent) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(out) if out is not None else folder / f"student_{ckpt_path.stem}{FORMATS[fmt]}"
    meta = {"model_name": str(ckpt["model_name"]), "num_classes": int(ckpt["num_classes"]),
            "in_channels": int(ckpt.get("in_channels", images.shape[1])), "format": fmt,
            "input_shape": [None, *images.shape[1:]], "source": str(ckpt_path), "epoch": ckpt.get("epoch"), **norm}
    diff, checked_with = {"torchscript": _torchscript, "onnx": _onnx, "safetensors": _safetensors}[fmt](
        model, images, reference, path, meta)
    tolerance = TOLERANCE[fmt]
    manifest = path.with_suffix(path.suffix + ".json")
    from softlabels.io import write_json

    write_json(manifest, {**meta, "file": path.name, "sha256": sha256_of(path), "max_abs_diff": diff,
                          "tolerance": tolerance, "checked_with": checked_with})
    if diff is not None and not diff <= tolerance:
        raise UserError(f"export check failed for {path}: max |export - pytorch| = {diff:.3g} > tolerance {tolerance:g}")
    return ExportResult(path, manifest, fmt, diff, tolerance, checked_with)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _torchscript(model, images, reference, path, meta) -> tuple[float, str]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, images)
    traced.save(str(path), _extra_files={"softlabels.json": json.dumps(meta)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return _max_diff(loaded(images), reference), "torch.jit.load"


def _onnx(model, images, reference, path, meta) -> tuple[float | None, str]:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'softlabels[export]'") from None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (images,), str(path), dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(str(path))
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnx.checker only; pip install onnxruntime to compare outputs"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": images.numpy()})[0]
    return _max_diff(torch.from_numpy(out), reference), "onnxruntime"


def _safetensors(model, images, reference, path, meta) -> tuple[float, str]:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UserError("safetensors export needs the safetensors package: pip install 'softlabels[export]'") from None
    from softlabels.models import create_model

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    loaded = create_model(meta["model_name"], meta["num_classes"], meta["in_channels"], pretrained=str(path)).eval()
    with torch.no_grad():
        return _max_diff(loaded(images), reference), "create_model(pretrained=FILE)"
