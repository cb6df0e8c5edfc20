"""The demo's trainer pairs: DropGen and plain nnU-Net with the SAME schedule, so they differ in DropGen alone.

Both are composed trainer names (see `nnunetv2_dropgen.trainers.names`): the schedule is part of the name,
not an environment variable, so `nnUNetv2_predict -tr <name>` rebuilds exactly what was trained.
"""

from __future__ import annotations

from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.trainers.schedule import NAMED_SCHEDULES

DEMO_SCHEDULES = {"tiny": "demoTiny", "cpu": "demo", "gpu": "demoGPU"}
"""The demo's --schedule choices -> the schedule part of the trainer names."""


def demo_trainer_names(schedule: str, extractor: str) -> tuple[str, str]:
    """(DropGen trainer, nnU-Net baseline trainer) for a demo schedule and an extractor name."""
    part = DEMO_SCHEDULES[schedule]
    return f"DropGenTrainer_{get_extractor_spec(extractor).trainer_token}_{part}", f"nnUNetTrainer_{part}"


def demo_epochs(schedule: str) -> int:
    """How many epochs both trainers of a demo schedule run (the demo's progress bar counts them)."""
    return NAMED_SCHEDULES[DEMO_SCHEDULES[schedule]].epochs


def demo_iterations(schedule: str) -> int:
    """How many training iterations both trainers of a demo schedule run."""
    named = NAMED_SCHEDULES[DEMO_SCHEDULES[schedule]]
    return named.epochs * named.iterations_per_epoch
