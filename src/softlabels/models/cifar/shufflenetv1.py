"""CIFAR ShuffleNet V1 of the distillation benchmark (RepDistiller / CRD ``ShuffleV1``).

Groups 3, stage widths 240/480/960 with 4/8/4 units; a 1x1 conv stem to 24 channels (no pooling, so a
32x32 input reaches the last stage at 4x4); each stage starts with a stride-2 unit whose output is the
concatenation of the residual branch and a 3x3 average-pooled shortcut.
Input ``(N, in_channels, H, W)`` (32x32 or 28x28 work), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``bn1``, ``layerK.i.{conv1..3,bn1..3}``, ``linear``) match RepDistiller's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import ChannelShuffle, init_weights

__all__ = ["ShuffleNetV1", "ShuffleV1Unit"]


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1 unit.

    Stride 1: ``out = ReLU(branch(x) + x)``; stride 2: ``out = ReLU(cat(branch(x), avgpool(x)))``, so
    ``out_planes`` here is the branch width. ``preact`` (an identity module) outputs the pre-ReLU value.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        first_groups = 1 if in_planes == 24 else groups  # the stem output (24 channels) is not grouped
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(self.preact(out))


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 for small images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers``: ``stem`` (24 x H x W), ``stage1``..``stage3`` (post-ReLU, 240/480/960 channels
    at H/2, H/4, H/8), ``stage1_pre_relu``..``stage3_pre_relu`` (last unit before its ReLU),
    ``pooled`` (``(N, 960)``), ``logits``.
    """

    def __init__(
        self,
        out_planes: tuple[int, int, int],
        num_blocks: tuple[int, int, int],
        groups: int,
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_planes = 24
        self.layer1 = self._make_stage(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_stage(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_stage(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(out_planes[2], num_classes)
        init_weights(self)

        self.feature_layers: dict[str, str] = {"stem": "relu"}
        self.feature_layers.update({f"stage{k}": f"layer{k}" for k in range(1, 4)})
        self.feature_layers.update(
            {f"stage{k}_pre_relu": f"layer{k}.{n - 1}.preact" for k, n in enumerate(num_blocks, start=1)}
        )
        self.feature_layers.update(pooled="flatten", logits="linear")

    def _make_stage(self, out_planes: int, blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            # The stride-2 unit concatenates its input, so its branch only produces the remaining channels.
            branch = out_planes - self.in_planes if i == 0 else out_planes
            layers.append(ShuffleV1Unit(self.in_planes, branch, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.avgpool(x)))


@register_model("ShuffleV1", "shufflenetv1")
def shuffle_v1(num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleNet V1, groups 3, widths 240/480/960, units 4/8/4."""
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)
