"""Model zoo: ``create_model(name, num_classes=..., in_channels=..., pretrained=False, **kwargs)``.

Each module in this package (and in ``cifar/``) registers its models with ``@register_model``;
they are imported automatically, so adding a model touches no central file (plugins register theirs
the same way, see docs/plugins.md). Every zoo model maps feature names ("stem", "stage1".."stageN",
"pooled", "logits", plus "pre_relu" variants where defined) to module paths in ``model.feature_layers``;
``forward(x)`` returns logits only. ``torchvision:NAME`` builds any torchvision classifier.
"""
from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import nn

from softlabels.errors import UserError
from softlabels.models.base import MODELS, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]

_loaded = False
_TORCHVISION = "torchvision:"


def _import_all() -> None:
    """Import every submodule once so that their ``@register_model`` decorators run."""
    global _loaded
    if _loaded:
        return
    for package_name in ("softlabels.models", "softlabels.models.cifar"):
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and info.name not in ("base", "pretrained"):
                importlib.import_module(f"{package_name}.{info.name}")
    _loaded = True
    from softlabels.plugins import load_entry_points

    load_entry_points()  # installed plugins' models too (once per process)


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (``"resnet*"``; None: all), sorted.

    ``pattern`` starting with ``torchvision:`` lists torchvision classifiers instead (``"torchvision:resnet*"``).
    ``pretrained``: only models with weights: shipped checkpoints for zoo names (:mod:`.pretrained`),
    torchvision weight enums for ``torchvision:`` names.
    """
    _import_all()
    if pattern is not None and pattern.startswith(_TORCHVISION):
        from softlabels.models.imagenet import torchvision_model_names, torchvision_weight_names

        names = [n for n in torchvision_model_names() if fnmatch.fnmatchcase(n, pattern[len(_TORCHVISION):])]
        if pretrained:
            names = [n for n in names if torchvision_weight_names(n)]
        return [_TORCHVISION + n for n in names]
    names = MODELS.names() if pattern is None else [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        from softlabels.models.pretrained import shipped_weights

        with_weights = {w.model for w in shipped_weights()}
        names = [n for n in names if n in with_weights]
    return names


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    pretrained: bool | str | Path = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a model (timm-style).

    Args:
        name: a name from :func:`list_models`, or ``torchvision:NAME`` for torchvision classifiers.
        num_classes: size of the logit vector; None: taken from the pretrained weights (required otherwise).
        in_channels: image channels (3 for CIFAR/ImageNet, 1 for Fashion-MNIST); None: from the shipped
            weights with ``pretrained=True``, else 3.
        pretrained: False (fresh initialisation); True (the shipped checkpoint for that name, class count and
            channels; torchvision: the ``DEFAULT`` weights); a path to a ``.pt``/``.pth``/``.safetensors`` file
            or ``softlabels:...`` resource (read with ``weights_only=True``); for ``torchvision:`` names a weight
            enum name such as ``"IMAGENET1K_V1"``.
        **kwargs: passed to the model's factory (e.g. ``width=16`` for a plugin model). ``drop_rate`` works for
            every model with a ``logits`` layer: dropout on the classifier's input while training.
    Raises:
        UserError: unknown name, a kwarg the factory does not take (named), no fitting shipped weights, or
            weights that do not fit (CheckpointError naming the file).
    """
    _import_all()
    drop_rate = kwargs.pop("drop_rate", None)
    if name.startswith(_TORCHVISION):
        from softlabels.models.imagenet import create_torchvision_model

        weights = None
        if pretrained is True:
            weights = "DEFAULT"
        elif isinstance(pretrained, str) and not _looks_like_file(pretrained):
            weights, pretrained = pretrained, False
        model = create_torchvision_model(name[len(_TORCHVISION):], num_classes, in_channels or 3, weights=weights,
                                         **kwargs)
        if pretrained and weights is None:
            _load_file(model, pretrained)
        return _with_drop_rate(model, name, drop_rate)

    factory = MODELS.get(name)
    path = None
    if pretrained is True:
        from softlabels.models.pretrained import find_shipped

        shipped = find_shipped(name, num_classes, in_channels)
        num_classes, in_channels, path = shipped.num_classes, shipped.in_channels, shipped.resource
    elif pretrained:
        path = pretrained
        if num_classes is None:
            num_classes = _recorded_classes(pretrained)
    if num_classes is None:
        raise UserError(f"create_model({name!r}): pass num_classes (the size of the logit vector)")
    in_channels = 3 if in_channels is None else in_channels
    if num_classes < 1 or in_channels < 1:
        raise UserError(f"model {name!r}: num_classes and in_channels must be >= 1")
    if drop_rate is not None and _accepts(factory, "drop_rate"):
        kwargs["drop_rate"], drop_rate = drop_rate, None
    _check_kwargs(name, factory, kwargs)
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if path is not None:
        _load_file(model, path)
    return _with_drop_rate(model, name, drop_rate)


def _looks_like_file(text: str) -> bool:
    return text.startswith("softlabels:") or "/" in text or "\\" in text or Path(text).suffix in (
        ".pt", ".pth", ".bin", ".safetensors")


def _load_file(model: nn.Module, path: str | Path) -> None:
    from softlabels.models.pretrained import load_pretrained

    load_pretrained(model, path)


def _recorded_classes(path: str | Path) -> int:
    """Class count of a weights file: its recorded ``num_classes``, else the rows of its last 2-D weight."""
    from softlabels.models.pretrained import read_state_dict

    state, meta = read_state_dict(path)
    if "num_classes" in meta:
        return int(meta["num_classes"])
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
        raise UserError(f"cannot tell the class count of {path}: pass num_classes")
    return int(matrices[-1].shape[0])


def _accepts(factory: Any, key: str) -> bool:
    params = inspect.signature(factory).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_kwargs(name: str, factory: Any, kwargs: dict) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    options = [k for k in params if k not in ("num_classes", "in_channels")]
    for key in kwargs:
        if key not in params or key in ("num_classes", "in_channels"):
            raise UserError(f"model {name!r} has no option {key!r}; its options: "
                            f"{', '.join(options + ['drop_rate']) }")


def _with_drop_rate(model: nn.Module, name: str, drop_rate: float | None) -> nn.Module:
    """Dropout with probability ``drop_rate`` on the input of the ``logits`` layer while training."""
    if drop_rate is None:
        return model
    if not 0 <= float(drop_rate) < 1:
        raise UserError(f"model {name!r}: drop_rate must lie in [0, 1), got {drop_rate!r}")
    layer = getattr(model, "feature_layers", {}).get("logits")
    if layer is None:
        raise UserError(f"model {name!r} has no 'logits' layer: drop_rate is not available for it")
    p = float(drop_rate)

    def dropout_input(module: nn.Module, args: tuple) -> tuple:
        return (F.dropout(args[0], p, module.training), *args[1:])

    model.get_submodule(layer).register_forward_pre_hook(dropout_input)
    model.drop_rate = p
    return model
