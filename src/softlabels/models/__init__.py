"""Model zoo: ``create_model(name, num_classes, in_channels)`` from a registry.

Each module in this package (and in ``cifar/``) registers its models with ``@register_model``;
they are imported automatically, so adding a model touches no central file.
Every zoo model maps feature names ("stem", "stage1".."stageN", "pooled", "logits", plus
"pre_relu" variants where defined) to module paths in ``model.feature_layers``; ``forward(x)``
returns logits only.
"""
from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from softlabels.errors import UserError
from softlabels.models.base import MODELS, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]

_loaded = False


def _import_all() -> None:
    """Import every submodule once so that their ``@register_model`` decorators run."""
    global _loaded
    if _loaded:
        return
    for package_name in ("softlabels.models", "softlabels.models.cifar"):
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"{package_name}.{info.name}")
    _loaded = True


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (``torchvision:NAME`` works for any torchvision classifier)."""
    _import_all()
    return MODELS.names()


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a registered model with a fresh initialisation.

    Args:
        name: a name from :func:`list_models`, or ``torchvision:NAME`` for torchvision classifiers.
        num_classes: size of the logit vector.
        in_channels: image channels (3 for CIFAR/ImageNet, 1 for Fashion-MNIST).
    """
    _import_all()
    if num_classes < 1 or in_channels < 1:
        raise UserError(f"model {name!r}: num_classes and in_channels must be >= 1")
    if name.startswith("torchvision:"):
        from softlabels.models.imagenet import create_torchvision_model

        return create_torchvision_model(name.split(":", 1)[1], num_classes, in_channels)
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)
