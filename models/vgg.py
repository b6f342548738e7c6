"""VGG-style networks with conv3x3-BN-ReLU blocks and max pooling.

The feature extractor is built from a cfg list: an int adds a 3x3 conv
(padding 1) with that many output channels, followed by BatchNorm and ReLU;
``'M'`` adds ``MaxPool2d(2)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VGG", "VGG_CFGS", "vgg11_bn", "vgg16_bn", "vgg_mnist"]

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg_mnist": [32, "M", 64, "M", 128, "M"],
}


class VGG(nn.Module):
    """``features`` (from ``cfg``) -> flatten -> ``classifier`` Linear.

    ``image_size`` is the square input side; the classifier input size is
    derived from it (each ``'M'`` floors the side by half).
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
            else:
                out = int(item)
                layers += [
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(),
                ]
                channels = out
        if side < 1:
            raise ValueError(f"image_size={image_size} too small for cfg {list(cfg)}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [N, in_channels, image_size, image_size] images to [N, num_classes] logits."""
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg11_bn(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> VGG:
    """VGG-11 with BatchNorm, CIFAR-shaped by default (3x32x32 -> 512 features)."""
    return VGG(VGG_CFGS["vgg11"], in_channels, num_classes, image_size)


def vgg16_bn(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> VGG:
    """VGG-16 with BatchNorm, CIFAR-shaped by default (3x32x32 -> 512 features)."""
    return VGG(VGG_CFGS["vgg16"], in_channels, num_classes, image_size)


def vgg_mnist(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> VGG:
    """Small VGG for 1x28x28: [32, M, 64, M, 128, M] -> Linear(128*3*3, 10)."""
    return VGG(VGG_CFGS["vgg_mnist"], in_channels, num_classes, image_size)
