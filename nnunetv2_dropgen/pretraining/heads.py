"""Projection heads: small MLPs that map sampled voxel features into the space the contrastive loss compares.

As in anatomix, each supervised feature level gets its own 3-layer MLP of 256 units (linear layers
without bias, batch normalisation, ReLU; the last normalisation has no affine parameters). The heads
are trained with the extractor and discarded afterwards: only the extractor's weights are written out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

HEAD_WIDTH = 256


def projection_head(in_channels: int, width: int = HEAD_WIDTH, layers: int = 3) -> nn.Sequential:
    """One MLP head: (N, in_channels) -> (N, width)."""
    modules: list[nn.Module] = []
    for index in range(layers):
        last = index == layers - 1
        modules += [
            nn.Linear(in_channels if index == 0 else width, width, bias=False),
            nn.BatchNorm1d(width, affine=not last),
        ]
        if not last:
            modules.append(nn.ReLU(inplace=True))
    return nn.Sequential(*modules)


class ProjectionHeads(nn.Module):
    """One projection head per feature level."""

    def __init__(self, level_channels: Sequence[int], width: int = HEAD_WIDTH) -> None:
        super().__init__()
        self.heads = nn.ModuleList(projection_head(channels, width) for channels in level_channels)

    def forward(self, level: int, samples: torch.Tensor) -> torch.Tensor:
        return self.heads[level](samples)
