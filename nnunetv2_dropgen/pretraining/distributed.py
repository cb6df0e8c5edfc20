"""Run under `torchrun`: one process per device, DistributedDataParallel, rank 0 writes and reports.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and the rendezvous address); with WORLD_SIZE > 1 the
process group is started from those (NCCL on CUDA, gloo on CPU). Without them this is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among world_size processes and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device
    started_here: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def start(device: str | torch.device) -> DistributedContext:
        """Join the process group torchrun describes (if any) and pick this rank's device."""
        device = torch.device(device)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return DistributedContext(0, 1, device, False)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        started_here = not dist.is_initialized()
        if started_here:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return DistributedContext(dist.get_rank(), dist.get_world_size(), device, started_here)

    def close(self) -> None:
        """Leave the process group if this context started it."""
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()
