"""The DropGen authors' behaviours that differ from this package's defaults, as named, recorded options.

Each is a trainer-name part (`DropGenTrainer_minimix_bnBatch`, ...), so nnUNetv2_predict rebuilds exactly what
was trained, and each is recorded in every checkpoint's feature record, so a checkpoint never meets a network
built with other options. Checkpoints written before options existed record none and load as before.

  bnBatch        the extractor's BatchNorm uses the statistics of the current batch, in training and at test
                 (the authors' code does this from its first validation on: test-time BatchNorm adaptation);
                 default: its running statistics, frozen
  volumeScaling  at inference the extractor's input is min-max scaled with the whole test volume, once
                 (the authors), not per sliding window; training stays per patch
  unitImage      the backbone's image channel is the [0, 1] image the extractor saw (the authors), not
                 nnU-Net's normalized image
  voxelNorm      features normalized across channels at each voxel (the anatomix authors' advice for their
                 dev models) instead of per channel over the patch
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPTIONS = ("bnBatch", "volumeScaling", "unitImage", "voxelNorm")
"""In the order they appear in trainer names."""


class BatchStatisticsNorm(nn.Module):
    """A BatchNorm layer's replacement that always normalizes with the current batch's statistics and never
    updates its buffers.

    It takes over the layer's own parameters and buffers under the same names (weights load strictly,
    checkpoints keep their keys). It is deliberately not a `_BatchNorm`: nnU-Net's multi-GPU training converts
    every `_BatchNorm` of the network into a `SyncBatchNorm` (`convert_sync_batchnorm`), which in the frozen
    extractor's eval mode would normalize with the running statistics again, silently. Under DDP each process
    normalizes with its own part of the batch.
    """

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.kind, self.num_features, self.eps = type(norm).__name__, norm.num_features, norm.eps
        self.register_parameter("weight", norm.weight)
        self.register_parameter("bias", norm.bias)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(norm, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.kind}({self.num_features}, eps={self.eps}), batch statistics"


def use_batch_statistics(module: nn.Module) -> int:
    """Replace every BatchNorm inside `module` by a BatchStatisticsNorm in place; returns how many there were."""
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.modules.batchnorm._BatchNorm)
    ]
    for parent, name, child in found:
        setattr(parent, name, BatchStatisticsNorm(child))
    return len(found)


def check_options(options: tuple[str, ...]) -> tuple[str, ...]:
    """The options in their canonical order; a ValueError naming what is unknown."""
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown DropGen option(s) {', '.join(unknown)}; the options are {', '.join(OPTIONS)}.")
    return tuple(o for o in OPTIONS if o in options)
