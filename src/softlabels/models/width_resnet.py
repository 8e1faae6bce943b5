"""Width-k CIFAR ResNet-18: the complexity axis of Yang et al. (ICML 2020)'s bias–variance curves.

``resnet18_w{k}``: a 3x3 stride-1 stem conv ``in_channels -> k`` (BN, ReLU, no max pool), four stages of
two BasicBlocks with ``[k, 2k, 4k, 8k]`` channels (strides 1, 2, 2, 2), global average pooling and a
linear layer ``8k -> num_classes``. k = 64 is the usual CIFAR ResNet-18 (about 11.2 M parameters).
Registered for the widths in :data:`WIDTHS`; :func:`width_resnet18` builds any k.

Input ``(N, in_channels, H, W)`` (any H, W >= 8), output logits ``(N, num_classes)``.
``feature_layers``: ``stem``, ``stage1``..``stage4`` (post-ReLU), ``stage1_pre_relu``..``stage4_pre_relu``,
``pooled`` (``(N, 8k)``), ``logits``.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights
from softlabels.models.cifar.resnet import BasicBlock

__all__ = ["WIDTHS", "WidthResNet", "width_model_name", "width_resnet18"]

#: widths k registered as ``resnet18_w{k}`` (Yang et al. sweep k from 1 to 64).
WIDTHS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)


def width_model_name(k: int, family: str = "resnet18") -> str:
    """The registered name of width ``k`` in ``family``: ``resnet18_w{k}``."""
    return f"{family}_w{int(k)}"


class WidthResNet(nn.Module):
    """BasicBlock ResNet with stage channels ``[k, 2k, 4k, 8k]``: ``(N, C, H, W) -> (N, num_classes)``."""

    def __init__(self, k: int, num_blocks: tuple[int, ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"width k must be >= 1, got {k}")
        self.width = int(k)
        widths = [k * 2**i for i in range(len(num_blocks))]
        self.conv1 = nn.Conv2d(in_channels, k, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(k)
        self.relu = nn.ReLU()
        in_planes = k
        stages = []
        for i, (planes, blocks) in enumerate(zip(widths, num_blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_planes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layers = nn.ModuleList(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)
        self.feature_layers: dict[str, str] = {"stem": "relu"}
        for i in range(len(num_blocks)):
            self.feature_layers[f"stage{i + 1}"] = f"layers.{i}"
        for i, blocks in enumerate(num_blocks):
            self.feature_layers[f"stage{i + 1}_pre_relu"] = f"layers.{i}.{blocks - 1}.preact"
        self.feature_layers.update(pooled="flatten", logits="fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            x = stage(x)
        return self.fc(self.flatten(self.avgpool(x)))


def width_resnet18(k: int, num_classes: int, in_channels: int = 3) -> WidthResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) with stage channels ``[k, 2k, 4k, 8k]``."""
    return WidthResNet(k, (2, 2, 2, 2), num_classes, in_channels)


def _register(k: int) -> None:
    def factory(num_classes: int, in_channels: int = 3) -> WidthResNet:
        return width_resnet18(k, num_classes, in_channels)

    factory.__doc__ = f"ResNet-18 of width {k} (stage channels {[k, 2 * k, 4 * k, 8 * k]})."
    register_model(width_model_name(k))(factory)


for _k in WIDTHS:
    _register(_k)
