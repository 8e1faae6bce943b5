"""Evaluate a saved checkpoint (or a run folder's best.pt) on its dataset."""
from __future__ import annotations

from pathlib import Path

from softlabels.config import DataConfig
from softlabels.data import build_data
from softlabels.engine import checkpoint as ckpt_io
from softlabels.engine.env import select_device
from softlabels.engine.evaluation import evaluate
from softlabels.engine.run_dir import RunDir
from softlabels.errors import CheckpointError, UserError
from softlabels.models import create_model


def evaluate_checkpoint(path: str | Path, *, split: str = "test", data_root: str | None = None,
                        device: str = "auto", corruptions: list[str] | None = None) -> dict:
    """Top-1/top-5 (%) and mean CE of the checkpoint's model on its dataset's ``split``; with
    ``corruptions`` also top-1 under each corruption at severities 1-5 ({name: {severity: top1}})."""
    if corruptions:
        from softlabels.corruptions import CORRUPTIONS

        unknown = [c for c in corruptions if c not in CORRUPTIONS]
        if unknown:
            raise UserError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(CORRUPTIONS)}")
    if Path(path).is_dir():  # a run folder: its best.pt, else its last.pt
        rd = RunDir(path)
        if not (rd.best_path.is_file() or rd.last_path.is_file()):
            raise CheckpointError(f"no best.pt or last.pt in run folder {rd.path}")
        ckpt = rd.load_checkpoint("best" if rd.best_path.is_file() else "last")
    else:
        ckpt = ckpt_io.load_checkpoint(path)
    config = ckpt.get("config")
    if not config or "model_name" not in ckpt:
        raise CheckpointError(
            f"checkpoint {ckpt['_path']} carries no config/model name (not written by softlabels); "
            "evaluate it from Python with create_model + load_state_dict"
        )
    from softlabels.plugins import load_plugins

    load_plugins(config.get("imports") or [], f"checkpoint {ckpt['_path']}: recorded imports")
    data_cfg = DataConfig.model_validate(config["data"])
    if data_root is not None:
        data_cfg.root = data_root
    dev = select_device(device)
    data = build_data(data_cfg, device=dev, seed=int(config.get("seed", 0)))
    loader = data.val if split == "val" else data.test
    if loader is None:
        raise CheckpointError(f"the run of {ckpt['_path']} has no validation split (data.val_split is 0)")
    model = create_model(ckpt["model_name"], ckpt["num_classes"], ckpt.get("in_channels", data.info.in_channels))
    ckpt_io.load_model_weights(model, ckpt)
    model.to(dev)
    metrics = evaluate(model, loader, ckpt["num_classes"])
    if corruptions is not None:  # [] means the default set
        from softlabels.corruptions import DEFAULT_CORRUPTIONS, evaluate_corruptions

        metrics["corruptions"] = evaluate_corruptions(model, loader, data.info.mean, data.info.std,
                                                      corruptions or DEFAULT_CORRUPTIONS)
    return {"checkpoint": ckpt["_path"], "model": ckpt["model_name"], "epoch": ckpt.get("epoch"),
            "dataset": data.info.name, "split": split, **metrics}
