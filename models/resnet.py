"""CIFAR-style ResNets built from BasicBlocks.

Every ReLU is its own ``nn.ReLU`` module and nothing runs in place, so the
residual add and each activation appear as distinct nodes when traced.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet20", "resnet18"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1 conv+BN shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        # Option B: a projection only where shape changes.
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block; output has ``planes`` channels."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu2(out + identity)
        return out


class ResNet(nn.Module):
    """3x3 stem conv-BN-ReLU, BasicBlock stages, global avgpool, Linear head.

    ``widths[i]`` is the channel count of stage ``i`` and ``blocks[i]`` its
    block count; every stage after the first halves the spatial size.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError("widths and blocks must have the same length")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        stages: list[nn.Module] = []
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer = []
            for j in range(n):
                layer.append(BasicBlock(in_planes, w, stride if j == 0 else 1))
                in_planes = w
            stages.append(nn.Sequential(*layer))
        # Named layer1..layerK to match the torchvision naming convention.
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [N, in_channels, H, W] images to [N, num_classes] logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet20(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """CIFAR ResNet-20: stages of 16/32/64 channels, 3 BasicBlocks each."""
    return ResNet((16, 32, 64), (3, 3, 3), in_channels, num_classes)


def resnet18(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-18 with a CIFAR 3x3 stem: stages 64/128/256/512, 2 BasicBlocks each."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), in_channels, num_classes)
