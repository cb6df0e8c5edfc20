"""The volumeScaling option at inference: nnU-Net's predictor tells the network the whole volume's range.

A network only ever sees one sliding window, so scaling its extractor input with the whole test volume's
min-max (the DropGen authors' test-time scaling) needs the volume. nnU-Net's predictor passes the whole
preprocessed volume to `predict_sliding_window_return_logits`; importing the DropGen trainers wraps that
method so a DropGen network with the option gets the volume's range per image channel for the duration
of the call. Every other network, and DropGen networks without the option, predict exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_dropgen.network import DropGenNetwork
from nnunetv2_dropgen.trainers.pretrained_weights import unwrapped


def _with_volume_range(predict: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(predict)
    def predict_sliding_window_return_logits(self: nnUNetPredictor, input_image: torch.Tensor) -> torch.Tensor:
        network = unwrapped(self.network)
        if not isinstance(network, DropGenNetwork) or "volumeScaling" not in network.options:
            return predict(self, input_image)
        flat = input_image[: network.num_image_channels].float().flatten(1)
        network.volume_range = torch.stack([flat.amin(dim=1), flat.amax(dim=1)])
        try:
            return predict(self, input_image)
        finally:
            network.volume_range = None

    predict_sliding_window_return_logits.dropgen_volume_range = True
    return predict_sliding_window_return_logits


def route_volume_scaling() -> None:
    """Wrap nnU-Net's sliding-window prediction once (importing the trainers again changes nothing)."""
    current = nnUNetPredictor.predict_sliding_window_return_logits
    if not getattr(current, "dropgen_volume_range", False):
        nnUNetPredictor.predict_sliding_window_return_logits = _with_volume_range(current)
