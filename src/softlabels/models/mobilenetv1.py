"""ImageNet MobileNet V1 (width 1.0) as used by the ImageNet experiments of OFD, WSL and mdistiller.

A stride-2 3x3 conv-BN-ReLU stem (32 channels) and 13 depthwise-separable blocks (dw3x3-BN-ReLU,
1x1-BN-ReLU) up to 1024 channels, global average pooling and ``Linear(1024, num_classes)``.
Input ``(N, in_channels, H, W)`` (224x224 for ImageNet; other sizes work thanks to global average
pooling), output logits ``(N, num_classes)``. Parameter names (``model.i.j``, ``fc``) match the reference
implementation, so its checkpoints load with ``load_state_dict``.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["MobileNetV1"]

# (output channels, stride) of the 13 depthwise-separable blocks.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU())


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(),
    )


class MobileNetV1(nn.Module):
    """MobileNet V1: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers`` (shapes for 224x224): ``stem`` (32 x 112 x 112), ``stage1``..``stage4`` (outputs
    of blocks 3, 5, 11, 13: 128 x 56, 256 x 28, 512 x 14, 1024 x 7, post-ReLU),
    ``stage1_pre_relu``..``stage4_pre_relu`` (the same blocks' last BN, i.e. before the final ReLU --
    the features OFD distils), ``pooled`` (``(N, 1024)``), ``logits``.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 2)]
        channels = 32
        for out_channels, stride in _BLOCKS:
            layers.append(_conv_dw(channels, out_channels, stride))
            channels = out_channels
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

        self.feature_layers: dict[str, str] = {"stem": "model.0"}
        stage_blocks = (3, 5, 11, 13)
        self.feature_layers.update({f"stage{k}": f"model.{b}" for k, b in enumerate(stage_blocks, start=1)})
        self.feature_layers.update({f"stage{k}_pre_relu": f"model.{b}.4" for k, b in enumerate(stage_blocks, start=1)})
        self.feature_layers.update(pooled="flatten", logits="fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.model(x)))


@register_model("mobilenetv1", "MobileNetV1")
def mobilenetv1(num_classes: int, in_channels: int = 3) -> MobileNetV1:
    """ImageNet MobileNet V1 (width 1.0, ~4.2M parameters with 1000 classes)."""
    return MobileNetV1(num_classes, in_channels)
