"""The anatomix 3D U-Net, rebuilt from its published layout so `anatomix.pth` loads with strict=True.

The published model is a flat `nn.Sequential` stored as `model`; state-dict keys are
`model.<index>.<param>`. Each level is (conv, norm, activation) blocks; encoder levels end in a
pooling layer, decoder levels start with an upsampling layer followed by a skip concatenation
`[encoder_features, upsampled]` (the concatenation holds no parameters, so it has no index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class AnatomixConfig:
    """Options of the anatomix U-Net; the two published models differ only in these."""

    output_nc: int = 16
    num_downs: int = 4
    ngf: int = 16
    norm: Literal["batch", "instance"] = "batch"
    pooling: Literal["Max", "Avg"] = "Max"
    interp: Literal["nearest", "trilinear"] = "nearest"
    instance_norm_eps: float = 1e-2

    @property
    def spatial_multiple(self) -> int:
        return 2**self.num_downs


ANATOMIX = AnatomixConfig()
ANATOMIX_DEV = AnatomixConfig(output_nc=32, num_downs=5, ngf=32, norm="instance", pooling="Avg", interp="trilinear")


class AnatomixUNet(nn.Module):
    """anatomix feature network: (B, 1, *spatial) in [0, 1] -> (B, output_nc, *spatial).

    Spatial sizes must be multiples of `config.spatial_multiple`; DropGenNetwork pads for it.
    """

    def __init__(self, config: AnatomixConfig = ANATOMIX) -> None:
        super().__init__()
        self.config = config
        self.spatial_multiple = config.spatial_multiple
        self.out_channels = config.output_nc

        layers: list[nn.Module] = []
        self._skip_sources: set[int] = set()  # indices of the layers whose outputs feed the skips
        self._concat_after: list[int] = []  # index of the upsampling layer each skip joins

        widths = [config.ngf * 2**level for level in range(config.num_downs + 1)]
        in_ch = 1
        for level, width in enumerate(widths[:-1]):
            n_convs = 3 if level == 0 else 2
            for _ in range(n_convs):
                layers += self._conv_block(in_ch, width)
                in_ch = width
            self._skip_sources.add(len(layers) - 1)
            layers.append(self._pool())
        for _ in range(2):
            layers += self._conv_block(in_ch, widths[-1])
            in_ch = widths[-1]
        for level in reversed(range(config.num_downs)):
            layers.append(nn.Upsample(scale_factor=2, mode=config.interp))
            self._concat_after.append(len(layers) - 1)
            in_ch = in_ch + widths[level]
            for _ in range(2):
                layers += self._conv_block(in_ch, widths[level])
                in_ch = widths[level]
        layers.append(self._conv(in_ch, config.output_nc))
        self.model = nn.Sequential(*layers)

    def _conv(self, in_ch: int, out_ch: int) -> nn.Conv3d:
        return nn.Conv3d(in_ch, out_ch, 3, padding="same", padding_mode="reflect", bias=self.config.norm == "instance")

    def _norm(self, ch: int) -> nn.Module:
        if self.config.norm == "batch":
            return nn.BatchNorm3d(ch)
        return nn.InstanceNorm3d(ch, eps=self.config.instance_norm_eps)

    def _conv_block(self, in_ch: int, out_ch: int) -> list[nn.Module]:
        return [self._conv(in_ch, out_ch), self._norm(out_ch), nn.ReLU(inplace=True)]

    def _pool(self) -> nn.Module:
        return nn.MaxPool3d(2) if self.config.pooling == "Max" else nn.AvgPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"anatomix is a 3D network and needs (B, 1, Z, Y, X) input; got shape {tuple(x.shape)}.")
        bad = [s for s in x.shape[2:] if s % self.spatial_multiple]
        if bad:
            raise ValueError(
                f"anatomix needs every spatial size divisible by {self.spatial_multiple}; got {tuple(x.shape[2:])}. "
                "Pad the input (DropGenNetwork does this for you)."
            )
        skips: list[torch.Tensor] = []
        concat_at = iter(self._concat_after)
        next_concat = next(concat_at, None)
        for index, layer in enumerate(self.model):
            x = layer(x)
            if index in self._skip_sources:
                skips.append(x)
            elif index == next_concat:
                x = torch.cat([skips.pop(), x], dim=1)
                next_concat = next(concat_at, None)
        return x
