"""`nnUNetv2_train ... -pretrained_weights CHECKPOINT` for DropGen networks: fine-tuning from a trained model.

nnU-Net's `load_pretrained_weights` compares the shape of every state-dict entry, and a DropGen checkpoint
holds one entry that is not a tensor: the feature record (`_extra_state`), which says what shaped the
features the backbone learned from. This loader follows nnU-Net's rules for the tensors (every key but the
segmentation layers present with the same shape; segmentation layers not transferred) and loads the record
with them, so a checkpoint of another feature pipeline is refused with a sentence, and the extractor
weights of the checkpoint come along. The network remembers the file, so the trainer keeps that extractor
at the start of training instead of loading whatever weights resolve now.

nnU-Net calls the loader by its name in `nnunetv2.run.run_training`; importing the DropGen trainers routes
that name here for DropGen networks and leaves every other network to nnU-Net's own function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnunetv2.run.run_training as run_training
import torch
import torch.distributed as dist
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_load_pretrained_weights
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_dropgen.network import DropGenNetwork

SEGMENTATION_LAYERS = ".seg_layers."
"""nnU-Net's marker of the layers it never transfers (the number of classes may differ)."""


class PretrainedWeightsError(RuntimeError):
    """A -pretrained_weights checkpoint that does not fit the network; the message says what differs."""


def unwrapped(network: nn.Module) -> nn.Module:
    """The module inside DDP and torch.compile wrappers (without importing torch._dynamo)."""
    module = network.module if isinstance(network, DistributedDataParallel) else network
    return getattr(module, "_orig_mod", module)


def load_pretrained_weights(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """nnU-Net's `load_pretrained_weights`, for DropGen networks with their feature record; others go to nnU-Net's."""
    module = unwrapped(network)
    if not isinstance(module, DropGenNetwork):
        nnunet_load_pretrained_weights(network, fname, verbose)
        return
    location = torch.device("cuda", dist.get_rank()) if dist.is_initialized() else torch.device("cpu")
    saved: dict[str, Any] = torch.load(fname, map_location=location, weights_only=False)["network_weights"]
    current = module.state_dict()
    tensors = {k for k, v in current.items() if isinstance(v, torch.Tensor) and SEGMENTATION_LAYERS not in k}
    missing = sorted(k for k in tensors if k not in saved)
    reshaped = sorted(k for k in tensors if k in saved and saved[k].shape != current[k].shape)
    if missing or reshaped:
        example = (
            f"{missing[0]} is missing"
            if missing
            else f"{reshaped[0]}: {list(saved[reshaped[0]].shape)} in the file, "
            f"{list(current[reshaped[0]].shape)} in this network"
        )
        raise PretrainedWeightsError(
            f"{fname} does not fit this DropGen network ({len(missing)} missing, {len(reshaped)} with other shapes; "
            f"e.g. {example}). Pretrain and fine-tune with the same plans, configuration, image channels and "
            "extractor."
        )
    merged = {**current, **{k: saved[k] for k in tensors}}
    record_key = next((k for k in current if not isinstance(current[k], torch.Tensor)), None)
    if record_key is not None and record_key in saved:
        merged[record_key] = saved[record_key]  # refuses another feature pipeline, adopts the extractor's origin
    elif record_key is not None:
        del merged[record_key]  # a checkpoint from before records: checked against what that version computed
    module.load_state_dict(merged)
    module.pretrained_from = str(fname)
    print(f"DropGen: loaded -pretrained_weights {fname} (every layer but the segmentation layers, and the extractor)")


def route_nnunet_loader() -> Callable[..., None]:
    """Make nnU-Net's training entry point load -pretrained_weights through `load_pretrained_weights`."""
    run_training.load_pretrained_weights = load_pretrained_weights
    return load_pretrained_weights
