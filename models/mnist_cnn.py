"""The CNN from SpikingJelly's ann2snn tutorial, layer for layer.

Keeping the exact layout (a single ``network`` Sequential, module paths
``network.0`` ... ``network.13``) lets results be compared with the tutorial.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MnistCNN"]


class MnistCNN(nn.Module):
    """Three conv-BN-ReLU-avgpool blocks and a Linear(32, 10) head for 1x28x28."""

    input_shape = (1, 28, 28)

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2, 2),
            nn.Conv2d(32, 32, 3, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2, 2),
            nn.Conv2d(32, 32, 3, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [N, 1, 28, 28] images to [N, 10] logits."""
        return self.network(x)
