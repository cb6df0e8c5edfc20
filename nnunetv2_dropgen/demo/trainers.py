"""Demo trainer pairs: DropGen and plain nnU-Net with the SAME short schedule, one pair per schedule.

The schedule lives in the class name (not in an environment variable) so `nnUNetv2_predict -tr <name>`
rebuilds exactly what was trained. The comparison is only fair because both classes of a pair differ in
nothing but DropGen.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer


class Schedule(NamedTuple):
    """Epochs, training iterations per epoch and validation iterations per epoch."""

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int


TINY = Schedule(1, 2, 1)
"""CI smoke test: checks every step runs, learns nothing."""
CPU = Schedule(5, 40, 2)
"""200 iterations, 4-9 minutes per trainer on 2 CPU cores (1-2.5 s per iteration): enough to segment the source."""
GPU = Schedule(30, 100, 10)
"""3000 iterations: a few minutes per trainer on a GPU, closer to a real (250000-iteration) run."""


class _DemoSchedule:
    """Applies `schedule` after nnU-Net's __init__ and skips nnU-Net's final validation.

    Demo models train on fold 'all', where nnU-Net's validation would only re-score the training cases;
    the demo scores held-out test domains instead, so that step would only slow the demo down.
    """

    schedule: Schedule

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.schedule

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("Demo schedule: final validation skipped (the demo evaluates held-out test sets).")


class DropGenTrainer_demoTiny(_DemoSchedule, DropGenTrainer):
    schedule = TINY


class nnUNetTrainer_demoTiny(_DemoSchedule, nnUNetTrainer):
    schedule = TINY


class DropGenTrainer_demo(_DemoSchedule, DropGenTrainer):
    schedule = CPU


class nnUNetTrainer_demo(_DemoSchedule, nnUNetTrainer):
    schedule = CPU


class DropGenTrainer_demoGPU(_DemoSchedule, DropGenTrainer):
    schedule = GPU


class nnUNetTrainer_demoGPU(_DemoSchedule, nnUNetTrainer):
    schedule = GPU


PAIRS: dict[str, tuple[type[nnUNetTrainer], type[nnUNetTrainer]]] = {
    "tiny": (DropGenTrainer_demoTiny, nnUNetTrainer_demoTiny),
    "cpu": (DropGenTrainer_demo, nnUNetTrainer_demo),
    "gpu": (DropGenTrainer_demoGPU, nnUNetTrainer_demoGPU),
}
"""Schedule name -> (DropGen trainer, baseline trainer) sharing that schedule."""

__all__ = [
    "DropGenTrainer_demo",
    "DropGenTrainer_demoGPU",
    "DropGenTrainer_demoTiny",
    "nnUNetTrainer_demo",
    "nnUNetTrainer_demoGPU",
    "nnUNetTrainer_demoTiny",
]
