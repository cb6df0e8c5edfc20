"""Pretraining checkpoints: everything needed to continue a run exactly where it stopped, written atomically.

A checkpoint holds the extractor and projection heads, the optimizer and gradient-scaler state, the
number of steps done, the RNG state and the settings of the run. The training data of step k is drawn
from a generator seeded with (seed, rank, k), so a resumed run sees the data an uninterrupted run would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nnunetv2_dropgen.weights.files import temporary_beside

CHECKPOINT_FORMAT = "nnunetv2-dropgen-pretraining-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used to continue this run; the message says why and what to do."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """The checkpoint beside the output weights: `model.pth` -> `model.checkpoint.pth`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.checkpoint.pth")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` under `path` atomically: a crash while saving leaves the previous checkpoint intact."""
    with temporary_beside(path) as temporary:
        torch.save({**state, "format": CHECKPOINT_FORMAT}, temporary)
        os.replace(temporary, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors, numbers, strings only: weights_only)."""
    if not path.is_file():
        raise CheckpointError(
            f"--resume was given but there is no checkpoint {path}; start without --resume, or give the --out "
            "of the run to continue."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"the checkpoint {path} cannot be read ({type(exc).__name__}); it is damaged. Delete it to start over."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pretraining checkpoint of this version ({CHECKPOINT_FORMAT}).")
    return state
