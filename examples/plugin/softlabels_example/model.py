"""``example_cnn``: conv-BN-ReLU x2, global average pool, linear; any input size."""
from torch import nn

from softlabels.models import register_model


class ExampleCNN(nn.Module):
    """Input (N, in_channels, H, W) -> logits (N, num_classes)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(2 * width, num_classes)
        # feature names the feature-based methods (FitNet, AT, ...) can hook
        self.feature_layers = {"stem": "stem", "stage1": "stage1", "pooled": "pool", "logits": "fc"}

    def forward(self, x):
        return self.fc(self.pool(self.stage1(self.stem(x))))


@register_model("example_cnn")
def example_cnn(num_classes: int, in_channels: int = 3, width: int = 8) -> nn.Module:
    return ExampleCNN(num_classes, in_channels, width)
