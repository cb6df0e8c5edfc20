"""Which of nnU-Net's input channels are images and which are extra inputs, derived from the plans alone."""

from __future__ import annotations

from dataclasses import dataclass

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager


@dataclass(frozen=True)
class ChannelLayout:
    """nnU-Net input = images then extra channels (the cascade's previous-stage one-hot segmentation)."""

    num_image_channels: int
    num_extra_channels: int


def require_3d(configuration_manager: ConfigurationManager, configuration_name: str | None = None) -> None:
    """DropGen's extractor is a 3D network: refuse 2D configurations before anything is built or read."""
    dims = len(configuration_manager.patch_size)
    if dims != 3:
        which = f"configuration {configuration_name!r}" if configuration_name else "this configuration"
        raise RuntimeError(
            f"DropGen needs a 3D configuration, but {which} is {dims}D (patch size "
            f"{list(configuration_manager.patch_size)}): its feature extractors are 3D networks. "
            "Train with 3d_fullres (or 3d_lowres / 3d_cascade_fullres), e.g. "
            "`nnUNetv2_train DATASET 3d_fullres FOLD -tr DropGenTrainer`."
        )


def channel_layout(configuration_manager: ConfigurationManager, num_input_channels: int) -> ChannelLayout:
    """Split nnU-Net's input channel count into images and extras using the plans' per-channel normalization."""
    num_images = len(configuration_manager.normalization_schemes)
    num_extra = num_input_channels - num_images
    is_cascade = configuration_manager.previous_stage_name is not None
    if num_extra < 0 or (num_extra > 0 and not is_cascade):
        raise RuntimeError(
            f"nnU-Net asks for {num_input_channels} input channels but the plans describe {num_images} image "
            "channels and this is not a cascade configuration; the plans and dataset.json do not agree. "
            "Re-run nnUNetv2_plan_and_preprocess for this dataset."
        )
    return ChannelLayout(num_images, num_extra)
