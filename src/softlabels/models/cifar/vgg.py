"""CIFAR VGGs with batch norm of the distillation benchmark (RepDistiller / CRD ``vgg.py``, ``*_bn``).

Five conv blocks (3x3 conv with bias, BN, ReLU; the last ReLU of each block is applied outside it)
separated by 2x2 max pools, global average pooling and a single ``Linear(512, num_classes)``.
The pool after block 3 is only applied to inputs of at least 64 pixels, as in the reference (which
applies it to 64x64 inputs), so a 32x32 image reaches block 4 at 4x4 and a 28x28 one at 3x3.
Input ``(N, in_channels, H, W)``, output logits ``(N, num_classes)``.
Parameter/buffer names (``blockK.j``, ``classifier``) match RepDistiller's, so its checkpoints load.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.models.base import register_model
from softlabels.models.cifar._common import init_weights

__all__ = ["CifarVGG"]

# Conv widths per block.
_CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(widths: list[int], in_channels: int) -> nn.Sequential:
    """conv-BN-ReLU repeated, without the final ReLU (so the block output is pre-ReLU)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class CifarVGG(nn.Module):
    """VGG-BN for small images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    ``feature_layers``: ``stem`` (block 0 after ReLU, 64 x H x W), ``stage1``..``stage4`` (blocks 1-4
    after ReLU: 128/256/512/512 channels at H/2, H/4, H/8, H/8 -- H/16 for inputs of 64 pixels or more),
    ``stage1_pre_relu``..``stage4_pre_relu``
    (the same before the ReLU, i.e. the block's last BN), ``pooled`` (``(N, 512)``), ``logits``.
    """

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.block0 = _make_block(cfg[0], in_channels)
        self.block1 = _make_block(cfg[1], cfg[0][-1])
        self.block2 = _make_block(cfg[2], cfg[1][-1])
        self.block3 = _make_block(cfg[3], cfg[2][-1])
        self.block4 = _make_block(cfg[4], cfg[3][-1])
        self.relu0, self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU() for _ in range(5))
        self.pool0, self.pool1, self.pool2, self.pool3 = (nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(4))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        init_weights(self, linear_std=0.01)

        self.feature_layers: dict[str, str] = {"stem": "relu0"}
        self.feature_layers.update({f"stage{k}": f"relu{k}" for k in range(1, 5)})
        self.feature_layers.update({f"stage{k}_pre_relu": f"block{k}" for k in range(1, 5)})
        self.feature_layers.update(pooled="flatten", logits="classifier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        large = x.shape[2] >= 64
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if large:
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(self.flatten(self.pool4(x)))


@register_model("vgg8", "vgg8_bn")
def vgg8(num_classes: int, in_channels: int = 3) -> CifarVGG:
    """VGG-8 with BN (one conv per block)."""
    return CifarVGG(_CFGS["vgg8"], num_classes, in_channels)


@register_model("vgg11", "vgg11_bn")
def vgg11(num_classes: int, in_channels: int = 3) -> CifarVGG:
    """VGG-11 with BN."""
    return CifarVGG(_CFGS["vgg11"], num_classes, in_channels)


@register_model("vgg13", "vgg13_bn")
def vgg13(num_classes: int, in_channels: int = 3) -> CifarVGG:
    """VGG-13 with BN."""
    return CifarVGG(_CFGS["vgg13"], num_classes, in_channels)


@register_model("vgg16", "vgg16_bn")
def vgg16(num_classes: int, in_channels: int = 3) -> CifarVGG:
    """VGG-16 with BN."""
    return CifarVGG(_CFGS["vgg16"], num_classes, in_channels)


@register_model("vgg19", "vgg19_bn")
def vgg19(num_classes: int, in_channels: int = 3) -> CifarVGG:
    """VGG-19 with BN."""
    return CifarVGG(_CFGS["vgg19"], num_classes, in_channels)
