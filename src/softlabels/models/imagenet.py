"""torchvision classifiers behind ``create_model("torchvision:NAME", ...)`` (ImageNet-scale experiments).

Models are built with random weights unless a torchvision weight enum is named (``weights``: read from the
torch hub cache, downloaded only when missing there). Input
``(N, in_channels, H, W)`` at the resolution the architecture expects (224x224 for ImageNet), output
logits ``(N, num_classes)``.
"""
from __future__ import annotations

from torch import nn

from softlabels.errors import UserError

__all__ = ["create_torchvision_model", "torchvision_model_names", "torchvision_weight_names"]

# Models whose training-mode forward would return auxiliary outputs: keep ``forward(x) -> logits``.
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_weight_names(name: str) -> list[str]:
    """Weight enum names of torchvision model ``name`` (e.g. ``["IMAGENET1K_V1", "IMAGENET1K_V2"]``)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return []
    return [w.name for w in enum]


def create_torchvision_model(
    name: str, num_classes: int | None, in_channels: int = 3, weights: str | None = None, **kwargs
) -> nn.Module:
    """Build torchvision classifier ``name`` with ``num_classes`` outputs, random or pretrained weights.

    ``weights``: None (random initialisation) or a weight enum name (``"IMAGENET1K_V1"``, ``"DEFAULT"``):
    the file is read from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) with ``weights_only=True``
    and downloaded there first when missing (needs network). ``kwargs`` go to the torchvision builder.

    When ``in_channels != 3`` the first convolution is replaced by a freshly initialised one with
    ``in_channels`` inputs (same kernel, stride, padding). ``model.feature_layers`` is filled where the
    module layout is known: the ResNet family (resnet*, resnext*, wide_resnet*) gets ``stem``,
    ``stage1``..``stage4``, ``pooled`` and ``logits``; other models get ``logits`` when their last
    parametrised module is a ``Linear`` (the classifier), else nothing.

    Raises:
        UserError: ``name`` is not a torchvision classification model (the message lists the known ones),
            an unknown weight name or builder option, a class count or channel count the weights do not
            have, or a first convolution that cannot be adapted to ``in_channels``.
    """
    import torchvision

    names = torchvision_model_names()
    if name not in names:
        raise UserError(f"unknown torchvision model {name!r}; available: {', '.join(names)}")
    options = {**_NO_AUX.get(name, {}), **kwargs}
    state = None
    if weights is not None:
        enum = _weights_enum(name, weights)
        classes = len(enum.meta.get("categories") or [])
        if num_classes not in (None, classes):
            raise UserError(f"torchvision:{name} weights {weights} predict {classes} classes, not {num_classes}")
        if in_channels != 3:
            raise UserError(f"torchvision:{name} weights {weights} expect 3 input channels, not {in_channels}")
        num_classes = classes
        if name in _NO_AUX:
            options["transform_input"] = True  # as torchvision does for these weights
            options.pop("init_weights", None)
        state = _cached_state_dict(name, weights)
        if name in _NO_AUX:  # built without the auxiliary classifiers: drop their weights
            state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    if num_classes is None:
        raise UserError(f"create_model('torchvision:{name}'): pass num_classes (or pretrained weights)")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as exc:
        raise UserError(f"torchvision:{name}: {exc}") from None
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(f"torchvision:{name} weights {weights} do not fit: {str(exc).splitlines()[0][:300]}") from None
    if in_channels != 3:
        _replace_first_conv(model, name, in_channels)
    model.feature_layers = _feature_layers(model)
    return model


def _weights_enum(name: str, weights: str):
    import torchvision

    known = torchvision_weight_names(name)
    if weights not in known:
        raise UserError(f"torchvision:{name} has no weights {weights!r}; known: {', '.join(known) or 'none'}")
    return torchvision.models.get_model_weights(name)[weights]


def _cached_state_dict(name: str, weights: str) -> dict:
    """The weights' state dict from the torch hub cache (``weights_only=True``); downloaded when absent."""
    import torch

    from softlabels.resources import torchvision_weights_path

    path = torchvision_weights_path(f"{name}.{weights}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read cached weights {path}: {type(exc).__name__}; delete it to download again") from None


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
