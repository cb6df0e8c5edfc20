"""DropGenNetwork: one module that turns an nnU-Net patch into DropGen's input and runs the backbone.

The same module serves training and sliding-window inference, so the features a network was trained
on are exactly the features it sees at prediction time.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_dropgen.dropout import ChannelDropout
from nnunetv2_dropgen.feature_extractors import ExtractorSpec
from nnunetv2_dropgen.feature_extractors.preprocessing import VoxelwiseNormalization
from nnunetv2_dropgen.network.feature_record import FeatureRecord
from nnunetv2_dropgen.network.options import check_options, use_batch_statistics
from nnunetv2_dropgen.weights import env_var_for

RECORD_KEY = "_extra_state"
"""Where nn.Module puts `DropGenNetwork.get_extra_state()` (the feature record) in the state_dict."""


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
    `backbone_input_channels(...)` input channels. With `use_image=False` the image channels are
    zeroed in training and inference alike (the features-only ablation); dropout then applies to the
    features only. The extractor comes from `spec` with random weights: pretrained ones are loaded by
    the caller (`build_dropgen_network(..., pretrained=True)`, the trainer) or come with a checkpoint.
    """

    spec: ExtractorSpec
    extractor: nn.Module
    backbone: nn.Module
    dropout: ChannelDropout
    num_image_channels: int
    num_extra_channels: int
    use_image: bool
    record: FeatureRecord
    options: tuple[str, ...]
    """The authors' behaviours this network follows (see `options`); () for this package's defaults."""
    volume_range: torch.Tensor | None
    """With the volumeScaling option, at inference: (2, C) min and max of each image channel of the whole volume,
    set by nnU-Net's predictor (see trainers.volume_scaling) around its sliding window."""
    pretrained_from: str | None
    """The checkpoint nnU-Net's -pretrained_weights loaded into this network (extractor included), if any."""

    def __init__(
        self,
        spec: ExtractorSpec,
        backbone: nn.Module,
        *,
        num_image_channels: int = 1,
        p: float = 0.75,
        num_extra_channels: int = 0,
        use_image: bool = True,
        options: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if num_image_channels < 1:
            raise ValueError(f"DropGen needs at least one image channel; got num_image_channels={num_image_channels}.")
        if num_extra_channels < 0:
            raise ValueError(f"num_extra_channels must be >= 0; got {num_extra_channels}.")
        self.spec = spec
        self.extractor = spec.build().eval().requires_grad_(False)
        self.backbone = backbone
        self.num_image_channels = num_image_channels
        self.num_extra_channels = num_extra_channels
        self.use_image = use_image
        num_features = num_image_channels * spec.feature_channels
        first_dropped = 0 if use_image else num_image_channels
        self.dropout = ChannelDropout(p, channels=range(first_dropped, num_image_channels + num_features))
        self.options = check_options(tuple(options))
        self.batch_statistics_layers = use_batch_statistics(self.extractor) if "bnBatch" in self.options else 0
        """How many extractor BatchNorm layers bnBatch switched (0 without it, or for an extractor without any,
        where the option changes nothing: trainers refuse to start such a training)."""
        self.normalization = VoxelwiseNormalization() if "voxelNorm" in self.options else spec.normalization
        self.volume_range = None
        self.record = FeatureRecord.of(spec, self.normalization.identifier, self.options)
        self.pretrained_from = None
        self._loaded_weights_sha256: str | None = None
        """Of the extractor weights the last checkpoint loaded into this network started from."""
        self._register_load_state_dict_pre_hook(self._accept_unrecorded_checkpoint)

    @staticmethod
    def backbone_input_channels(num_image_channels: int, feature_channels: int, num_extra_channels: int = 0) -> int:
        """How many input channels the backbone must be built with."""
        return num_image_channels * (1 + feature_channels) + num_extra_channels

    @property
    def feature_channels(self) -> int:
        return self.spec.feature_channels

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
        if "unitImage" in self.options:
            images = self._extractor_input(images).reshape(images.shape).to(images.dtype)
        if not self.use_image:
            images = torch.zeros_like(images)
        z = torch.cat([images, features.to(images.dtype), x[:, self.num_image_channels :]], dim=1)
        return self.backbone(self.dropout(z))

    @torch.no_grad()
    def _extractor_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) images -> (B*C, 1, *spatial) extractor input in float32: the spec's preprocessing, or
        with volumeScaling at inference the whole volume's min-max range."""
        batch, channels, *spatial = images.shape
        with torch.autocast(images.device.type, enabled=False):
            if self.volume_range is not None and not self.training:
                low, high = (r.to(images.device).view(1, channels, *([1] * len(spatial))) for r in self.volume_range)
                unit = ((images.float() - low) / (high - low).clamp_min(1e-8)).clamp(0.0, 1.0)
            else:
                unit = self.spec.preprocessing(images.float())
        return unit.reshape(batch * channels, 1, *spatial)

    @torch.no_grad()
    def compute_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-extractor features per image channel, normalized in float32: (B, C*F, *spatial).

        Scaling and normalization run in float32; the extractor itself runs under the caller's autocast (nnU-Net's
        float16 on CUDA, where the DropGen authors use bfloat16; float32 on CPU)."""
        batch, channels, *spatial = images.shape
        unit = self._extractor_input(images)
        with torch.autocast(images.device.type, enabled=False):
            pad = centered_padding(tuple(spatial), self.spec.spatial_multiple, self.spec.min_spatial_size)
            if any(pad):
                unit = F.pad(unit, pad, mode="replicate")
        if self.batch_statistics_layers and channels > 1:
            # bnBatch: each image channel (modality) gets its own batch statistics, over its B patches, as the
            # authors' single-channel runs had; pooled over channels, one modality would shift another's features
            per_channel = unit.view(batch, channels, *unit.shape[1:]).unbind(1)
            features = torch.stack([self.extractor(part) for part in per_channel], dim=1).flatten(0, 1)
        else:
            features = self.extractor(unit)
        if any(pad):
            features = features[(slice(None), slice(None), *_crop_slices(pad, spatial))]
        with torch.autocast(images.device.type, enabled=False):
            features = self.normalization(features.float())
        return features.reshape(batch, channels * features.shape[1], *spatial)

    def get_extra_state(self) -> dict[str, Any]:
        return self.record.to_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = FeatureRecord.from_state(state)
        saved.check_matches(self.record)
        loaded = self._loaded_weights_sha256
        self._loaded_weights_sha256 = saved.weights_sha256 or loaded
        if loaded and saved.weights_sha256 and saved.weights_sha256 != loaded:
            # nnU-Net's predictor loads each fold's checkpoint into one network: this is an ensemble of folds
            first, second = sorted((loaded, saved.weights_sha256))
            warnings.warn(
                f"DropGen: the checkpoints loaded into this network (the folds of an ensemble) started from "
                f"different {self.spec.name} weights (sha256 {first} and {second}): the ensemble mixes networks "
                "trained on different features. Predict with the folds of one weights file (-f), or train the "
                f"others again with the same {env_var_for(self.spec.name)}.",
                stacklevel=2,
            )
        self.record = self.record.with_weights(saved.weights_sha256, saved.weights_origin)

    def _accept_unrecorded_checkpoint(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A checkpoint from before records existed is checked against what that version computed."""
        if any(key.startswith(prefix) for key in state_dict) and prefix + RECORD_KEY not in state_dict:
            state_dict[prefix + RECORD_KEY] = FeatureRecord.legacy(self.spec).to_state()

    def extra_repr(self) -> str:
        return (
            f"extractor={self.spec.name}, image_channels={self.num_image_channels}, "
            f"feature_channels={self.feature_channels}, extra_channels={self.num_extra_channels}, "
            f"use_image={self.use_image}, options={list(self.options)}"
        )


def _crop_slices(pad: list[int], spatial: list[int]) -> tuple[slice, ...]:
    """Slices (first axis first) undoing `centered_padding`'s pad list (last axis first)."""
    befores = pad[0::2][::-1]
    return tuple(slice(before, before + size) for before, size in zip(befores, spatial, strict=True))
