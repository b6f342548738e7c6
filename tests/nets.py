"""Small nets the conversion tests share (tests/test_convert.py, tests/passes/test_normalize.py).

tests/conftest.py puts this folder on sys.path, so any test module can ``from nets import ...``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["rand_bn", "Residual", "Concat"]


def rand_bn(bn):
    """Give a BatchNorm non-trivial statistics and affine parameters (so folding it is tested)."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.3)
    return bn


class Residual(nn.Module):
    """(d) relu(x + conv(relu(bn(conv(x))))) with x itself a ReLU output."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 6, 3, padding=1)
        self.c1 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn1 = rand_bn(nn.BatchNorm2d(6))
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        x = F.relu(self.c0(x))
        y = self.c2(F.relu(self.bn1(self.c1(x))))
        x = F.relu(x + y)
        return self.fc(torch.flatten(x, 1))


class Concat(nn.Module):
    """(e) two conv branches (3x3 and 1x1) concatenated, then conv."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 3, 1)
        self.c = nn.Conv2d(7, 6, 3)
        self.fc = nn.Linear(6 * 6 * 6, 4)

    def forward(self, x):
        x = F.relu(self.c0(x))
        x = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        x = F.relu(self.c(x))
        return self.fc(torch.flatten(x, 1))
