"""CIFAR MobileNetV2 of the distillation benchmark (RepDistiller / CRD ``mobile_half``).

Expansion 6, width multiplier 0.5: a stride-2 3x3 conv stem (16 channels), seven groups of inverted
residual blocks (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
(6,320,1,1) with c scaled by 0.5, a 1x1 conv to 1280 channels, global average pooling and the classifier.
Input ``(N, in_channels, H, W)`` (32x32 or 28x28 work), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``blocks.g.i.conv``, ``conv2``, ``classifier.0``) match RepDistiller's.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["CifarMobileNetV2", "InvertedResidual"]

# (expansion, output channels at width 1, blocks, first stride); expansion None = the model's ``expansion``.
_SETTINGS: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear), residual when shapes agree.

    ``(N, inp, H, W) -> (N, oup, H / stride, W / stride)``.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for small images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers`` (shapes for ``mobile_half`` on 32x32): ``stem`` (16 x 16 x 16), ``stage1``
    (block group 1, 12 x 16 x 16), ``stage2`` (group 2, 16 x 8 x 8), ``stage3`` (group 4, 48 x 4 x 4),
    ``stage4`` (group 6, 160 x 2 x 2) -- the same groups RepDistiller returns as features; ``pooled``
    (``(N, 1280)``), ``logits``. No ``*_pre_relu`` entries: the stage outputs are linear bottlenecks,
    not followed by a ReLU.
    """

    def __init__(self, expansion: int, width_mult: float, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTINGS:
            out_channels = int(c * width_mult)
            layers = []
            ratio = expansion if t is None else t
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, ratio))
                channels = out_channels
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        init_weights(self, linear_std=0.01)

        self.feature_layers: dict[str, str] = {
            "stem": "conv1",
            "stage1": "blocks.1",
            "stage2": "blocks.2",
            "stage3": "blocks.4",
            "stage4": "blocks.6",
            "pooled": "flatten",
            "logits": "classifier",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        return self.classifier(self.flatten(self.avgpool(x)))


@register_model("MobileNetV2", "mobilenetv2")
def mobile_half(num_classes: int, in_channels: int = 3) -> CifarMobileNetV2:
    """RepDistiller's ``mobile_half``: MobileNetV2 with expansion 6 and width 0.5."""
    return CifarMobileNetV2(6, 0.5, num_classes, in_channels)
