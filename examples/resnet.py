"""A ResNet-style CNN: the non-transformer example that keeps the planner honest.

A strided stem, a stack of identical residual blocks (conv-BN-ReLU-conv-BN + skip, constant width),
global average pooling and a linear classifier. No attention, no tensor-parallel structure: the planner
may split it only by data parallel, sharding, recomputation and pipeline stages.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    def __init__(self, width: int = 256, depth: int = 16, image: int = 64, classes: int = 1000):
        super().__init__()
        self.image = image
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, stride=4, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def model() -> ResNet:
    """16 residual blocks of width 256 on 64x64 images (about 19M parameters)."""
    return ResNet()


def tiny() -> ResNet:
    return ResNet(width=16, depth=4, image=16, classes=10)


def batch(batch_size: int, model: ResNet | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and class labels."""
    image = model.image if model is not None else 64
    classes = model.head.out_features if model is not None else 1000
    return torch.randn(batch_size, 3, image, image), torch.randint(0, classes, (batch_size,))
