"""torchvision classifiers behind ``create_model("torchvision:NAME", ...)`` (ImageNet-scale experiments).

Models are built with ``weights=None`` (random initialisation, nothing is ever downloaded). Input
``(N, in_channels, H, W)`` at the resolution the architecture expects (224x224 for ImageNet), output
logits ``(N, num_classes)``.
"""
from __future__ import annotations

from torch import nn

from softlabels.errors import UserError

__all__ = ["create_torchvision_model", "torchvision_model_names"]

# Models whose training-mode forward would return auxiliary outputs: keep ``forward(x) -> logits``.
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def create_torchvision_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build torchvision classifier ``name`` with random weights and ``num_classes`` outputs.

    When ``in_channels != 3`` the first convolution is replaced by a freshly initialised one with
    ``in_channels`` inputs (same kernel, stride, padding). ``model.feature_layers`` is filled where the
    module layout is known: the ResNet family (resnet*, resnext*, wide_resnet*) gets ``stem``,
    ``stage1``..``stage4``, ``pooled`` and ``logits``; other models get ``logits`` when their last
    parametrised module is a ``Linear`` (the classifier), else nothing.

    Raises:
        UserError: ``name`` is not a torchvision classification model (the message lists the known ones),
            or its first convolution cannot be adapted to ``in_channels``.
    """
    import torchvision

    names = torchvision_model_names()
    if name not in names:
        raise UserError(f"unknown torchvision model {name!r}; available: {', '.join(names)}")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_NO_AUX.get(name, {}))
    if in_channels != 3:
        _replace_first_conv(model, name, in_channels)
    model.feature_layers = _feature_layers(model)
    return model


def _replace_first_conv(model: nn.Module, name: str, in_channels: int) -> None:
    first = next(((path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].groups != 1:
        raise UserError(
            f"torchvision model {name!r}: cannot adapt its first convolution to {in_channels} input channels"
        )
    path, old = first
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, new)


def _feature_layers(model: nn.Module) -> dict[str, str]:
    from torchvision.models import ResNet

    if isinstance(model, ResNet):
        # Flatten inside ``avgpool`` so that its output is the pooled feature; the forward's own
        # ``torch.flatten(x, 1)`` is then a no-op. No parameters change.
        model.avgpool = nn.Sequential(model.avgpool, nn.Flatten(1))
        layers = {"stem": "relu"}
        layers.update({f"stage{k}": f"layer{k}" for k in range(1, 5)})
        layers.update(pooled="avgpool", logits="fc")
        return layers
    with_params = [path for path, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if with_params and isinstance(model.get_submodule(with_params[-1]), nn.Linear):
        return {"logits": with_params[-1]}
    return {}
