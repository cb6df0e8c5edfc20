"""The anatomix 3D U-Net, rebuilt from its published layout so `anatomix.pth` loads with strict=True.

The published model is a flat `nn.Sequential` stored as `model`; state-dict keys are
`model.<index>.<param>`. Each level is (conv, norm, activation) blocks; encoder levels end in a
pooling layer, decoder levels start with an upsampling layer followed by a skip concatenation
`[encoder_features, upsampled]` (the concatenation holds no parameters, so it has no index).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from nnunetv2_dropgen.feature_extractors.registry import ExtractorSpec, register_extractor
from nnunetv2_dropgen.weights.sources import PublishedWeights, WeightsSource


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

ANATOMIX_WEIGHTS = PublishedWeights(
    name="anatomix",
    filename="anatomix.pth",
    hf_repo="neeldey/anatomix",
    urls=("https://raw.githubusercontent.com/neel-dey/anatomix/main/model-weights/anatomix.pth",),
    git_blob_sha1="d13b2f335850a0a3a9042dcaf9a7181631098b80",
)
ANATOMIX_DEV_WEIGHTS = PublishedWeights(
    name="anatomix-dev",
    filename="anatomix-dev.pth",
    hf_repo="neeldey/anatomix",
    history="The Hub once published an earlier anatomix-dev.pth under the same name (about 36M parameters, "
    "16 feature channels); today's has about 94M parameters and 32 feature channels. Pin the Hub revision you "
    "mean with DROPGEN_REVISION_ANATOMIX_DEV=<commit>, or fetch the current file with "
    "`nnunetv2_dropgen weights fetch anatomix-dev --force`.",
)


class AnatomixUNet(nn.Module):
    """anatomix feature network: (B, 1, *spatial) in [0, 1] -> (B, output_nc, *spatial).

    Spatial sizes must be multiples of `config.spatial_multiple`; DropGenNetwork pads for it.
    """

    def __init__(self, config: AnatomixConfig = ANATOMIX) -> None:
        super().__init__()
        self.config = config

        layers: list[nn.Module] = []
        self._skip_sources: set[int] = set()  # indices of the layers whose outputs feed the skips
        self._concat_after: list[int] = []  # index of the upsampling layer each skip joins
        self._taps: list[int] = []  # the convolutions pretraining supervises (anatomix's, see forward_levels)

        widths = [config.ngf * 2**level for level in range(config.num_downs + 1)]
        in_ch = 1
        for level, width in enumerate(widths[:-1]):
            n_convs = 3 if level == 0 else 2
            for _ in range(n_convs):
                last_conv = len(layers)
                layers += self._conv_block(in_ch, width)
                in_ch = width
            self._skip_sources.add(len(layers) - 1)
            layers.append(self._pool())
        self._taps.append(last_conv)  # the deepest encoder level's last convolution
        self._taps.append(len(layers))  # the bottleneck's first convolution
        for _ in range(2):
            layers += self._conv_block(in_ch, widths[-1])
            in_ch = widths[-1]
        for level in reversed(range(config.num_downs)):
            layers.append(nn.Upsample(scale_factor=2, mode=config.interp))
            self._concat_after.append(len(layers) - 1)
            in_ch = in_ch + widths[level]
            if level > 0:
                self._taps.append(len(layers))  # each decoder level's first convolution, but the finest
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
        return self._run(x, keep_levels=False)[-1]

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What pretraining supervises, as anatomix does: six convolution outputs taken before their normalization.

        For 4 levels: the deepest encoder level's last convolution (1/8 resolution), the bottleneck's first (1/16),
        the first convolution of the decoder levels at 1/8, 1/4 and 1/2, then the final output (full resolution);
        in the published layout these are layers 27, 31, 38, 45, 52 and 65 (anatomix's `--nce_layers`).
        """
        return self._run(x, keep_levels=True)

    def _run(self, x: torch.Tensor, keep_levels: bool) -> list[torch.Tensor]:
        """The forward pass; supervised taps are kept only when asked, so inference frees them as it goes."""
        if x.ndim != 5:
            raise ValueError(f"anatomix is a 3D network and needs (B, 1, Z, Y, X) input; got shape {tuple(x.shape)}.")
        multiple = self.config.spatial_multiple
        if any(s % multiple for s in x.shape[2:]):
            raise ValueError(
                f"anatomix needs every spatial size divisible by {multiple}; got {tuple(x.shape[2:])}. "
                "Pad the input (DropGenNetwork does this for you)."
            )
        skips: list[torch.Tensor] = []
        levels: list[torch.Tensor] = []
        concat_at = iter(self._concat_after)
        next_concat = next(concat_at, None)
        for index, layer in enumerate(self.model):
            x = layer(x)
            if index in self._skip_sources:
                skips.append(x)
            elif index == next_concat:
                x = torch.cat([skips.pop(), x], dim=1)
                next_concat = next(concat_at, None)
            if keep_levels and index in self._taps:
                levels.append(x)
        return [*levels, x]


def anatomix_spec(
    name: str, config: AnatomixConfig, weights: WeightsSource | None = None, superseded_by: str | None = None
) -> ExtractorSpec:
    """An extractor of anatomix's layout: per-patch [0, 1] input, instance-normalized 16-or-more features."""
    return ExtractorSpec(
        superseded_by=superseded_by,
        name=name,
        build=partial(AnatomixUNet, config),
        feature_channels=config.output_nc,
        spatial_multiple=config.spatial_multiple,
        # reflect padding needs at least 2 voxels at the coarsest level
        min_spatial_size=2 * config.spatial_multiple,
        weights=weights,
    )


register_extractor(anatomix_spec("anatomix", ANATOMIX, ANATOMIX_WEIGHTS))
register_extractor(anatomix_spec("anatomix-dev", ANATOMIX_DEV, ANATOMIX_DEV_WEIGHTS))
