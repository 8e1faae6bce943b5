"""Wide ResNets of the CIFAR distillation benchmark (RepDistiller / CRD ``wrn.py``).

``wrn_D_W``: depth D = 6n + 4, widen factor W; a 3x3 conv stem to 16 channels, three stages of n
pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 conv shortcut when the width changes)
with 16W/32W/64W channels, then BN-ReLU, global average pooling and the classifier. Dropout 0.
Input ``(N, in_channels, H, W)`` (32x32 or 28x28 work), output logits ``(N, num_classes)``.
Parameter/buffer names (``conv1``, ``blockK.layer.i.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``,
``fc``) match RepDistiller's, so its checkpoints load with ``load_state_dict``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: ``(N, in_planes, H, W) -> (N, out_planes, H / stride, W / stride)``.

    Output is the un-activated sum (the next block, or the final BN-ReLU, activates it).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        # Name kept from the reference implementation for checkpoint compatibility.
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        # Equal widths: identity shortcut on the raw input; otherwise the 1x1 conv sees the activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """A stage of ``n`` :class:`WideBasicBlock`; the first one carries the stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers``: ``stem`` (the 16-channel stem conv, H x W), ``stage1``..``stage3`` (raw,
    un-activated stage outputs with 16W/32W/64W channels at H, H/2, H/4, as in RepDistiller),
    ``stage1_pre_relu``..``stage3_pre_relu`` (the BN that follows each stage, i.e. the input of the
    ReLU after it: the next stage's first ``bn1`` and the final ``bn1``), ``pooled`` (``(N, 64W)``),
    ``logits``.
    """

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self, zero_linear_bias=True)

        self.feature_layers: dict[str, str] = {
            "stem": "conv1",
            "stage1": "block1",
            "stage2": "block2",
            "stage3": "block3",
            "stage1_pre_relu": "block2.layer.0.bn1",
            "stage2_pre_relu": "block3.layer.0.bn1",
            "stage3_pre_relu": "bn1",
            "pooled": "flatten",
            "logits": "fc",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model("wrn_16_1")
def wrn_16_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-16-1."""
    return WideResNet(16, 1, num_classes, in_channels)


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-16-2."""
    return WideResNet(16, 2, num_classes, in_channels)


@register_model("wrn_40_1")
def wrn_40_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-40-1."""
    return WideResNet(40, 1, num_classes, in_channels)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-40-2."""
    return WideResNet(40, 2, num_classes, in_channels)
