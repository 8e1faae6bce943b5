"""CIFAR ResNet-50 of the distillation benchmark (RepDistiller / CRD ``resnetv2.py``).

The Bottleneck ResNet-50 (stages [3, 4, 6, 3], widths 64/128/256/512, expansion 4) with a CIFAR
stem: one 3x3 stride-1 conv to 64 channels, BN, ReLU, no max pool.
Input ``(N, in_channels, H, W)`` (32x32 or 28x28 work), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``bn1``, ``layerK.i.{conv1..3,bn1..3,shortcut}``, ``linear``) match
RepDistiller's, so its checkpoints load with ``load_state_dict``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["Bottleneck", "CifarBottleneckResNet"]


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with expansion 4; the 3x3 conv carries the stride.

    ``preact`` (an identity module) outputs the pre-ReLU sum.
    ``(N, in_planes, H, W) -> (N, 4 * planes, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.preact(out + self.shortcut(x))
        return F.relu(out)


class CifarBottleneckResNet(nn.Module):
    """Bottleneck ResNet with a CIFAR stem: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers``: ``stem`` (64 x H x W), ``stage1``..``stage4`` (post-ReLU, 256/512/1024/2048
    channels at H, H/2, H/4, H/8), ``stage1_pre_relu``..``stage4_pre_relu`` (last block's sum before
    its ReLU), ``pooled`` (``(N, 2048)``), ``logits``.
    """

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = self._make_stage(64, num_blocks[0], stride=1)
        self.layer2 = self._make_stage(128, num_blocks[1], stride=2)
        self.layer3 = self._make_stage(256, num_blocks[2], stride=2)
        self.layer4 = self._make_stage(512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)
        init_weights(self)

        self.feature_layers: dict[str, str] = {"stem": "relu"}
        for k in range(1, 5):
            self.feature_layers[f"stage{k}"] = f"layer{k}"
        for k, n in enumerate(num_blocks, start=1):
            self.feature_layers[f"stage{k}_pre_relu"] = f"layer{k}.{n - 1}.preact"
        self.feature_layers.update(pooled="flatten", logits="linear")

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(Bottleneck(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.flatten(self.avgpool(x)))


@register_model("ResNet50")
def resnet50(num_classes: int, in_channels: int = 3) -> CifarBottleneckResNet:
    """CIFAR ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes, in_channels)
