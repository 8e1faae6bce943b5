"""Checkpoints: atomic writes, safe loads (``weights_only=True``), clear errors naming the file.

A checkpoint is a dict: ``format``, ``model`` (state dict), ``model_name``, ``num_classes``,
``in_channels``, ``epoch`` (completed epochs) and, in ``last.pt``, everything needed to resume
exactly: ``optimizer``, ``auxiliary``, ``rng``, ``best``, ``config``.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from softlabels.errors import CheckpointError

FORMAT = "softlabels-checkpoint/1"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on CPU with ``weights_only=True``; CheckpointError if missing or unreadable.

    ``path`` may be a package resource (``softlabels:teachers/NAME.pt``, see :mod:`softlabels.resources`).
    """
    from softlabels.resources import resolve_path

    path = resolve_path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"no best.pt or last.pt in run folder {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, disallowed global ...
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(exc).__name__}); re-create or re-download it"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    if "model" not in obj:
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = {"model": obj}  # a bare state dict
        else:
            raise CheckpointError(f"checkpoint {path} has no 'model' entry")
    state = obj["model"]
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        obj["model"] = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel / DDP
    obj["_path"] = str(path)
    return obj


def load_model_weights(model: nn.Module, ckpt: dict, *, expected_name: str | None = None) -> None:
    """Copy ``ckpt['model']`` into ``model``; CheckpointError naming the file on any mismatch."""
    path = ckpt.get("_path", "<checkpoint>")
    saved_name = ckpt.get("model_name")
    if expected_name is not None and saved_name is not None and saved_name != expected_name:
        raise CheckpointError(
            f"checkpoint {path} holds a {saved_name!r} but the config names {expected_name!r}; fix the model name "
            "or the checkpoint path"
        )
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"checkpoint {path} does not fit the model: {' '.join(first)[:400]}") from None


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def capture_rng() -> dict:
    """RNG states of torch (CPU and CUDA), Python and NumPy, in weights_only-safe types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(x) for x in np_state[2:]]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
