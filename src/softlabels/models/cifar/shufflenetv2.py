"""CIFAR ShuffleNet V2 of the distillation benchmark (RepDistiller / CRD ``ShuffleV2``, net size 1.0).

A 1x1 conv stem to 24 channels (no pooling), three stages of one stride-2 down-sampling unit followed
by 3/7/3 channel-split units (116/232/464 channels), a 1x1 conv to 1024 channels, global average
pooling and the classifier.
Input ``(N, in_channels, H, W)`` (32x32 or 28x28 work), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``bn1``, ``layerK.i.*``, ``conv2``, ``bn2``, ``linear``) match RepDistiller's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import ChannelShuffle, init_weights

__all__ = ["DownUnit", "ShuffleNetV2", "SplitUnit"]


class SplitUnit(nn.Module):
    """Channel split: the first half passes through, the second goes 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU.

    ``(N, C, H, W) -> (N, C, H, W)``, then the halves are concatenated and shuffled (2 groups).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        branch = channels - self.split
        self.conv1 = nn.Conv2d(branch, branch, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(branch)
        self.conv2 = nn.Conv2d(branch, branch, kernel_size=3, stride=1, padding=1, groups=branch, bias=False)
        self.bn2 = nn.BatchNorm2d(branch)
        self.conv3 = nn.Conv2d(branch, branch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class DownUnit(nn.Module):
    """Stride-2 unit: two branches (dw3x3-BN, 1x1-BN-ReLU | 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU), concatenated
    and shuffled. ``(N, in_channels, H, W) -> (N, out_channels, H / 2, W / 2)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 for small images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers``: ``stem`` (24 x H x W), ``stage1``..``stage3`` (116/232/464 channels at H/2, H/4,
    H/8), ``pooled`` (``(N, 1024)``, after the final 1x1 conv-BN-ReLU), ``logits``. No ``*_pre_relu``
    entries (a stage output mixes un-activated pass-through channels with activated ones).
    """

    def __init__(
        self,
        out_channels: tuple[int, int, int, int],
        num_blocks: tuple[int, int, int],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        channels = 24
        stages = []
        for width, blocks in zip(out_channels[:3], num_blocks):
            stages.append(nn.Sequential(DownUnit(channels, width), *[SplitUnit(width) for _ in range(blocks)]))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(channels, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(out_channels[3], num_classes)
        init_weights(self)

        self.feature_layers: dict[str, str] = {
            "stem": "relu",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "pooled": "flatten",
            "logits": "linear",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.linear(self.flatten(self.avgpool(x)))


@register_model("ShuffleV2", "shufflenetv2")
def shuffle_v2(num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x: widths 116/232/464, final 1024, 3/7/3 split units after each down unit."""
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)
