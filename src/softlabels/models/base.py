"""The model registry and the feature-name contract shared by every zoo model."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from softlabels.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, *aliases: str):
    """Decorator: register a factory ``f(num_classes, in_channels) -> nn.Module`` under ``name``."""
    return MODELS.register(name, *aliases)


def feature_layers(model: nn.Module) -> dict[str, str]:
    """The model's feature-name -> module-path map (``model.feature_layers``); {} if it has none."""
    return dict(getattr(model, "feature_layers", {}))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
