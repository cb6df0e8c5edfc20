"""How an image channel becomes an extractor's input, and how the extractor's output is normalized.

Each step has an `identifier` that every checkpoint records, so a trained model is never fed features
computed another way than those it was trained on (see `network.FeatureRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class InputPreprocessing(Protocol):
    """Turns (N, 1, *spatial) float32 image channels into the extractor's input."""

    @property
    def identifier(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class FeatureNormalization(Protocol):
    """Normalizes (N, F, *spatial) float32 extractor outputs."""

    @property
    def identifier(self) -> str: ...

    def __call__(self, features: torch.Tensor) -> torch.Tensor: ...


def scale_to_unit_range(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max scale each (sample, channel) of (B, C, *spatial) to [0, 1]; a constant patch gives 0."""
    flat = images.flatten(2)
    low = flat.amin(dim=2).view(*images.shape[:2], *([1] * (images.ndim - 2)))
    high = flat.amax(dim=2).view_as(low)
    return (images - low) / (high - low).clamp_min(eps)


@dataclass(frozen=True)
class MinMaxScaling:
    """Per-patch, per-channel min-max scaling to [0, 1]: the input range anatomix was trained on."""

    eps: float = 1e-8

    @property
    def identifier(self) -> str:
        return f"minmax-per-patch(eps={self.eps:g})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return scale_to_unit_range(images, self.eps)


@dataclass(frozen=True)
class InstanceNormalization:
    """Per-sample, per-channel standardization of the features (no affine, no running statistics)."""

    eps: float = 1e-5

    @property
    def identifier(self) -> str:
        return f"instance-norm(eps={self.eps:g})"

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(features, eps=self.eps)


@dataclass(frozen=True)
class VoxelwiseNormalization:
    """Standardize each voxel's feature vector across its channels (mean 0, std 1 over the F channels)."""

    eps: float = 1e-5

    @property
    def identifier(self) -> str:
        return f"voxelwise-norm(eps={self.eps:g})"

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        mean = features.mean(dim=1, keepdim=True)
        std = features.var(dim=1, keepdim=True, unbiased=False).add(self.eps).sqrt()
        return (features - mean) / std
