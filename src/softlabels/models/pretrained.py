"""Weights for ``create_model(..., pretrained=...)``: shipped teachers, checkpoint files, safetensors files.

* :func:`shipped_weights` lists the checkpoints under ``softlabels/assets/teachers`` (model name, class
  count, input channels, dataset) as read from the checkpoints themselves;
* :func:`read_state_dict` reads a state dict from a softlabels checkpoint, a RepDistiller/mdistiller
  checkpoint (``{"model": state_dict, ...}``), a bare state dict (all ``torch.load(weights_only=True)``) or a
  ``.safetensors`` file (a ``module.`` prefix left by ``DataParallel`` is dropped on loading).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.errors import CheckpointError, UserError

__all__ = ["ShippedWeights", "find_shipped", "load_pretrained", "read_state_dict", "shipped_weights"]


@dataclass(frozen=True)
class ShippedWeights:
    """One shipped checkpoint: ``resource`` is its ``softlabels:teachers/...`` name."""

    model: str
    num_classes: int
    in_channels: int
    dataset: str
    resource: str
    top1: float | None = None


@functools.lru_cache(maxsize=1)
def _scan() -> tuple[ShippedWeights, ...]:
    from softlabels.engine.checkpoint import load_checkpoint
    from softlabels.resources import PREFIX, assets_root

    found = []
    for path in sorted((assets_root() / "teachers").glob("*.pt")):
        ckpt = load_checkpoint(path)
        if "model_name" not in ckpt or "num_classes" not in ckpt:
            continue
        config = ckpt.get("config") or {}
        found.append(ShippedWeights(
            model=str(ckpt["model_name"]), num_classes=int(ckpt["num_classes"]),
            in_channels=int(ckpt.get("in_channels", 3)), dataset=str((config.get("data") or {}).get("name", "?")),
            resource=f"{PREFIX}teachers/{path.name}", top1=(ckpt.get("metrics") or {}).get("test_top1"),
        ))
    return tuple(found)


def shipped_weights(name: str | None = None) -> list[ShippedWeights]:
    """Shipped checkpoints, all or those of model ``name``."""
    return [w for w in _scan() if name is None or w.model == name]


def find_shipped(name: str, num_classes: int | None, in_channels: int | None) -> ShippedWeights:
    """The shipped checkpoint of ``name`` for that class count and channel count (None: any).

    Raises:
        UserError: none fits; the message lists the shipped ones.
    """
    fits = [w for w in shipped_weights(name)
            if num_classes in (None, w.num_classes) and in_channels in (None, w.in_channels)]
    if len(fits) == 1:
        return fits[0]
    shipped = ", ".join(f"{w.model} ({w.num_classes} classes, {w.in_channels} channel(s), {w.dataset})"
                        for w in shipped_weights()) or "none"
    if not fits:
        raise UserError(f"no shipped weights for {name!r} with num_classes={num_classes}, in_channels={in_channels}; "
                        f"shipped: {shipped}; or pass pretrained='path.pt'")
    raise UserError(f"several shipped weights fit {name!r}: pass num_classes and in_channels ({shipped})")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the checkpoint's other entries) of a ``.pt``/``.pth``/``.safetensors`` file.

    Raises:
        CheckpointError: missing, unreadable, or not holding tensors (the message names the file).
    """
    from softlabels.resources import resolve_path

    path = resolve_path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        try:
            from safetensors import safe_open
        except ImportError:
            raise UserError("reading .safetensors needs the safetensors package: pip install 'softlabels[export]'") from None
        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                meta = dict(f.metadata() or {})
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {type(exc).__name__}: {exc}") from None
        return state, meta
    from softlabels.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state dict of tensors")
    return state, {k: v for k, v in ckpt.items() if k != "model"}


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Copy the weights of ``path`` into ``model`` (strict); CheckpointError naming the file on a mismatch."""
    state, _ = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).splitlines()[0:3])[:400]
        raise CheckpointError(f"weights {path} do not fit the model: {first}") from None


def model_notes() -> str:
    """Lines for ``softlabels list models``: the shipped weights and the torchvision models with theirs."""
    from softlabels.models.imagenet import torchvision_model_names, torchvision_weight_names

    lines = ["shipped weights (create_model(NAME, pretrained=True); teacher.checkpoint RESOURCE):"]
    lines += [f"  {w.model}: {w.dataset}, {w.num_classes} classes, {w.in_channels} channel(s), "
              f"top-1 {w.top1 if w.top1 is not None else '?'}; {w.resource}" for w in shipped_weights()] or ["  none"]
    tv = []
    for name in torchvision_model_names():
        weights = [w for w in torchvision_weight_names(name) if w != "DEFAULT"]
        tv.append(f"torchvision:{name}" + (f" [{' '.join(weights)}]" if weights else ""))
    lines.append("torchvision models (any torchvision classifier; [weight enums] for teacher.weights / pretrained=): "
                 + ", ".join(tv))
    return "\n".join(lines)
