"""Pieces shared by the zoo models: weight initialisation and the channel shuffle.

Not a model module (the leading underscore keeps the auto-importer away from it).
"""
from __future__ import annotations

import torch
from torch import nn


def init_weights(model: nn.Module, *, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """Standard initialisation, in place, drawn from torch's global RNG (so ``torch.manual_seed`` fixes it).

    Convolutions: Kaiming normal (``fan_out``, ReLU gain), which equals the ``N(0, 2 / (k*k*out_channels))``
    scheme of the reference CIFAR code; conv biases zero. Batch/group norm: weight 1, bias 0.
    Linear layers keep PyTorch's default unless ``linear_std`` is given (weight ``N(0, linear_std)``, bias 0)
    or ``zero_linear_bias`` is set (bias 0 only).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
                nn.init.zeros_(module.bias)
            elif zero_linear_bias:
                nn.init.zeros_(module.bias)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: ``(N, C, H, W) -> (N, C, H, W)``, interleaving ``groups`` channel groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
