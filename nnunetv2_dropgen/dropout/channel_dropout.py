"""Whole-channel dropout (`dropout3d` semantics) restricted to a chosen set of channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_probability(p: float) -> float:
    """Reject probabilities that would silently give a wrong network (p = 1 divides by zero)."""
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"channel dropout probability must be in [0, 1); got p={p}.")
    return float(p)


def channel_dropout(
    x: torch.Tensor, p: float, channels: Sequence[int] | None = None, training: bool = True
) -> torch.Tensor:
    """Zero whole channels of `x` (B, C, *spatial) per sample with probability `p`, scale survivors by 1/(1-p).

    Only `channels` (all when None) are subject to dropout; the others pass through untouched.
    Identity when not training or p == 0.
    """
    p = check_probability(p)
    if not training or p == 0.0:
        return x
    batch, num_channels = x.shape[:2]
    selected = list(range(num_channels)) if channels is None else list(channels)
    broadcast = (1,) * (x.ndim - 2)
    keep = torch.empty((batch, len(selected), *broadcast), device=x.device, dtype=x.dtype)
    keep = keep.bernoulli_(1.0 - p).div_(1.0 - p)
    if len(selected) == num_channels and selected == list(range(num_channels)):
        return x * keep
    scale = torch.ones((batch, num_channels, *broadcast), device=x.device, dtype=x.dtype)
    scale[:, selected] = keep
    return x * scale


class ChannelDropout(nn.Module):
    """`channel_dropout` as a module: active in training mode only."""

    def __init__(self, p: float, channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.p = check_probability(p)
        self.channels = None if channels is None else tuple(int(c) for c in channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_dropout(x, self.p, self.channels, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, channels={self.channels if self.channels is not None else 'all'}"
