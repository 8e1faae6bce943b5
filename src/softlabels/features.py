"""Feature capture through forward hooks on named modules.

Methods ask for features by name ("stem", "stage1".."stageN", "stageK_pre_relu", "pooled",
"logits"); each zoo model maps those names to module paths in ``model.feature_layers``. A raw
dotted module path also works (``"module:layer3.1.bn2"``), e.g. for torchvision models. Model
forward signatures stay ``forward(x) -> logits``.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.errors import ConfigError


def resolve_feature(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is feature ``name`` of ``model`` (ConfigError listing the known names)."""
    if name.startswith("module:"):
        path = name.split(":", 1)[1]
    else:
        layers = getattr(model, "feature_layers", {})
        if name not in layers:
            known = ", ".join(sorted(layers)) or "none (use 'module:<dotted path>')"
            raise ConfigError(f"model {type(model).__name__} has no feature {name!r}; known: {known}")
        path = layers[name]
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"model {type(model).__name__} has no module {path!r} (feature {name!r})") from None


def stage_names(model: nn.Module) -> list[str]:
    """``["stage1", ..., "stageN"]`` in order, as the model declares them."""
    layers = getattr(model, "feature_layers", {})
    stages = [k for k in layers if k.startswith("stage") and k[5:].isdigit()]
    return sorted(stages, key=lambda k: int(k[5:]))


class FeatureCapture:
    """Keeps the latest outputs of the requested features of ``model``.

    ``capture.features[name]`` holds the tensor produced during the last forward pass (with its
    autograd graph, so losses on features train the model). Call :meth:`remove` (or use it as a
    context manager) to detach the hooks.
    """

    def __init__(self, model: nn.Module, names: list[str] | tuple[str, ...]) -> None:
        self.names = list(dict.fromkeys(names))
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.names:
            module = resolve_feature(model, name)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def store(_module, _inputs, output):
            self.features[name] = output

        return store

    def get(self, name: str) -> torch.Tensor:
        if name not in self.features:
            raise RuntimeError(f"feature {name!r} was not produced by the last forward pass")
        return self.features[name]

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
