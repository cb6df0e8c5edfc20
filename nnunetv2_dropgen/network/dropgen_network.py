"""DropGenNetwork: one module that turns an nnU-Net patch into DropGen's input and runs the backbone.

The same module serves training and sliding-window inference, so the features a network was trained
on are exactly the features it sees at prediction time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_dropgen.dropout import ChannelDropout

FEATURE_INSTANCE_NORM_EPS = 1e-5


def scale_to_unit_range(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max scale each (sample, channel) of (B, C, *spatial) to [0, 1]; a constant patch gives 0."""
    flat = images.flatten(2)
    low = flat.amin(dim=2).view(*images.shape[:2], *([1] * (images.ndim - 2)))
    high = flat.amax(dim=2).view_as(low)
    return (images - low) / (high - low).clamp_min(eps)


def centered_padding(shape: tuple[int, ...], multiple: int, min_size: int) -> list[int]:
    """F.pad argument (last axis first) that makes every axis a multiple of `multiple`, at least `min_size`."""
    pad: list[int] = []
    for size in reversed(shape):
        target = max(-(-size // multiple) * multiple, min_size)
        extra = target - size
        pad += [extra // 2, extra - extra // 2]
    return pad


class DropGenNetwork(nn.Module):
    """concat([images, frozen features, extra channels]) -> channel dropout (training) -> backbone.

    Input channels: the first `num_image_channels` are images (each gets its own features), the
    `num_extra_channels` after them (e.g. a cascade's one-hot segmentation) are passed through,
    never fed to the extractor and never dropped. The backbone must accept
    `num_image_channels * (1 + feature_channels) + num_extra_channels` input channels.
    With `use_image=False` the image channels are zeroed in training and inference alike
    (the features-only ablation); dropout then applies to the features only.
    """

    def __init__(
        self,
        extractor: nn.Module,
        backbone: nn.Module,
        num_image_channels: int,
        p: float = 0.75,
        num_extra_channels: int = 0,
        *,
        feature_channels: int,
        spatial_multiple: int,
        min_spatial_size: int | None = None,
        use_image: bool = True,
    ) -> None:
        super().__init__()
        if num_image_channels < 1:
            raise ValueError(f"DropGen needs at least one image channel; got num_image_channels={num_image_channels}.")
        if num_extra_channels < 0:
            raise ValueError(f"num_extra_channels must be >= 0; got {num_extra_channels}.")
        self.extractor = extractor.eval().requires_grad_(False)
        self.backbone = backbone
        self.num_image_channels = num_image_channels
        self.num_extra_channels = num_extra_channels
        self.feature_channels = feature_channels
        self.spatial_multiple = spatial_multiple
        self.min_spatial_size = min_spatial_size or spatial_multiple
        self.use_image = use_image
        num_features = num_image_channels * feature_channels
        first_dropped = 0 if use_image else num_image_channels
        self.dropout = ChannelDropout(p, channels=range(first_dropped, num_image_channels + num_features))

    @staticmethod
    def backbone_input_channels(num_image_channels: int, feature_channels: int, num_extra_channels: int = 0) -> int:
        """How many input channels the backbone must be built with."""
        return num_image_channels * (1 + feature_channels) + num_extra_channels

    @property
    def decoder(self) -> nn.Module:
        """The backbone's decoder, so nnU-Net's `network.decoder.deep_supervision = ...` keeps working."""
        return self.backbone.decoder

    @property
    def p(self) -> float:
        return self.dropout.p

    def train(self, mode: bool = True) -> DropGenNetwork:
        super().train(mode)
        self.extractor.eval()  # frozen: BatchNorm statistics must never move
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(
                f"DropGen needs 3D patches (B, C, Z, Y, X) because its feature extractor is 3D; got shape "
                f"{tuple(x.shape)}. Use a 3D nnU-Net configuration (3d_fullres, 3d_lowres, 3d_cascade_fullres)."
            )
        expected = self.num_image_channels + self.num_extra_channels
        if x.shape[1] != expected:
            raise ValueError(
                f"DropGenNetwork was built for {self.num_image_channels} image + {self.num_extra_channels} extra "
                f"channels = {expected}; got {x.shape[1]} channels."
            )
        images = x[:, : self.num_image_channels]
        features = self.compute_features(images)
        if not self.use_image:
            images = torch.zeros_like(images)
        z = torch.cat([images, features.to(images.dtype), x[:, self.num_image_channels :]], dim=1)
        return self.backbone(self.dropout(z))

    @torch.no_grad()
    def compute_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-extractor features per image channel, instance-normalized in float32: (B, C*F, *spatial)."""
        batch, channels, *spatial = images.shape
        with torch.autocast(images.device.type, enabled=False):
            unit = scale_to_unit_range(images.float()).reshape(batch * channels, 1, *spatial)
            pad = centered_padding(tuple(spatial), self.spatial_multiple, self.min_spatial_size)
            if any(pad):
                unit = F.pad(unit, pad, mode="replicate")
        features = self.extractor(unit)
        if any(pad):
            features = features[(slice(None), slice(None), *_crop_slices(pad, spatial))]
        with torch.autocast(images.device.type, enabled=False):
            features = F.instance_norm(features.float(), eps=FEATURE_INSTANCE_NORM_EPS)
        return features.reshape(batch, channels * features.shape[1], *spatial)

    def extra_repr(self) -> str:
        return (
            f"image_channels={self.num_image_channels}, feature_channels={self.feature_channels}, "
            f"extra_channels={self.num_extra_channels}, use_image={self.use_image}"
        )


def _crop_slices(pad: list[int], spatial: list[int]) -> tuple[slice, ...]:
    """Slices (first axis first) undoing `centered_padding`'s pad list (last axis first)."""
    befores = pad[0::2][::-1]
    return tuple(slice(before, before + size) for before, size in zip(befores, spatial, strict=True))
