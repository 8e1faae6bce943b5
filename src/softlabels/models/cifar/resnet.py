"""CIFAR ResNets of the distillation benchmark (RepDistiller / CRD ``resnet.py``).

``resnet{8,14,20,32,44,56,110}``: BasicBlock ResNets with stem 16 channels and stages 16/32/64;
``resnet8x4`` and ``resnet32x4``: the same with stem 32 and stages 64/128/256.
A stage has ``(depth - 2) / 6`` blocks; a block's shortcut is a 1x1 conv + BN whenever the shape
changes ("option B"), so the parameter counts equal the benchmark's.

Input ``(N, in_channels, H, W)`` (32x32 for CIFAR, 28x28 for Fashion-MNIST work; global average
pooling makes any size >= 4x4 fine), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``bn1``, ``layerK.i.{conv1,bn1,conv2,bn2,downsample}``, ``fc``)
match RepDistiller's, so its CIFAR checkpoints load with ``load_state_dict``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["BasicBlock", "CifarResNet"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    ``preact`` (an identity module) outputs the pre-ReLU sum, so a hook on it sees the pre-ReLU feature.
    ``(N, in_planes, H, W) -> (N, planes, H / stride, W / stride)``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.preact(out + shortcut)
        return F.relu(out)


class CifarResNet(nn.Module):
    """BasicBlock ResNet for small images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``widths`` = (stem, stage1, stage2, stage3) channels; stages 2 and 3 halve the resolution.

    ``feature_layers``: ``stem`` (conv-BN-ReLU, ``widths[0]`` x H x W), ``stage1``..``stage3`` (post-ReLU
    stage outputs at H, H/2, H/4), ``stage1_pre_relu``..``stage3_pre_relu`` (the last block's sum
    before its ReLU), ``pooled`` (``(N, widths[3])``), ``logits``.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_stage(widths[0], widths[1], blocks, stride=1)
        self.layer2 = self._make_stage(widths[1], widths[2], blocks, stride=2)
        self.layer3 = self._make_stage(widths[2], widths[3], blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

        last = blocks - 1
        self.feature_layers: dict[str, str] = {
            "stem": "relu",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "stage1_pre_relu": f"layer1.{last}.preact",
            "stage2_pre_relu": f"layer2.{last}.preact",
            "stage3_pre_relu": f"layer3.{last}.preact",
            "pooled": "flatten",
            "logits": "fc",
        }

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 (channels 16/16/32/64)."""
    return CifarResNet(8, _NARROW, num_classes, in_channels)


@register_model("resnet14")
def resnet14(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-14 (channels 16/16/32/64)."""
    return CifarResNet(14, _NARROW, num_classes, in_channels)


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (channels 16/16/32/64)."""
    return CifarResNet(20, _NARROW, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (channels 16/16/32/64)."""
    return CifarResNet(32, _NARROW, num_classes, in_channels)


@register_model("resnet44")
def resnet44(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (channels 16/16/32/64)."""
    return CifarResNet(44, _NARROW, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (channels 16/16/32/64)."""
    return CifarResNet(56, _NARROW, num_classes, in_channels)


@register_model("resnet110")
def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (channels 16/16/32/64)."""
    return CifarResNet(110, _NARROW, num_classes, in_channels)


@register_model("resnet8x4")
def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-8x4 (channels 32/64/128/256)."""
    return CifarResNet(8, _WIDE, num_classes, in_channels)


@register_model("resnet32x4")
def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32x4 (channels 32/64/128/256)."""
    return CifarResNet(32, _WIDE, num_classes, in_channels)
