"""Build a DropGenNetwork from an extractor name and a backbone, with or without pretrained extractor weights."""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from nnunetv2_dropgen.feature_extractors import get_extractor_spec, load_pretrained
from nnunetv2_dropgen.network.dropgen_network import DropGenNetwork


def build_dropgen_network(
    extractor_name: str,
    backbone: nn.Module,
    *,
    num_image_channels: int = 1,
    p: float = 0.75,
    num_extra_channels: int = 0,
    use_image: bool = True,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    options: tuple[str, ...] = (),
) -> DropGenNetwork:
    """Wrap `backbone` with the registered extractor `extractor_name`.

    pretrained=False leaves the extractor's weights random, as inference does before the checkpoint (which
    carries them) is loaded; pretrained=True loads them (`weights`, DROPGEN_WEIGHTS_<NAME>, or the extractor's
    own source) and records their sha256 and origin in `network.record`. options: the DropGen authors'
    behaviours to follow (network.options.OPTIONS). Raises ValueError for `weights` without pretrained=True,
    which would otherwise leave the extractor random while the caller believes it loaded.
    """
    if weights is not None and not pretrained:
        raise ValueError(
            f"weights={os.fspath(weights)!r} is only loaded with pretrained=True; pass pretrained=True to use it "
            "(pretrained=False leaves the extractor random, for a checkpoint to fill)."
        )
    network = DropGenNetwork(
        get_extractor_spec(extractor_name),
        backbone,
        num_image_channels=num_image_channels,
        p=p,
        num_extra_channels=num_extra_channels,
        use_image=use_image,
        options=options,
    )
    if pretrained:
        load_extractor_weights(network, weights)
    return network


def load_extractor_weights(network: DropGenNetwork, weights: str | os.PathLike | None = None) -> None:
    """Load the extractor's pretrained weights into `network` and record which ones they were."""
    resolved = load_pretrained(network.spec.name, network.extractor, weights)
    if resolved is None:
        digest = state_dict_sha256(network.extractor)
        network.record = network.record.with_weights(
            digest, f"provided by the extractor's build function (sha256 {digest})"
        )
    else:
        network.record = network.record.with_weights(resolved.sha256, resolved.describe())


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's tensors in state_dict order: identifies weights that did not come from a file."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
