"""Demo trainer pairs: DropGen and plain nnU-Net with the SAME short schedule, one pair per schedule.

The schedule lives in the class name (not in an environment variable) so `nnUNetv2_predict -tr <name>`
rebuilds exactly what was trained. The comparison is only fair because both classes of a pair differ in
nothing but DropGen.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer
from nnunetv2_dropgen.trainers.schedule import Schedule, ScheduledTrainer

TINY = Schedule(1, 2, 1)
"""CI smoke test: checks every step runs, learns nothing."""
CPU = Schedule(5, 40, 2)
"""200 iterations, 4-9 minutes per trainer on 2 CPU cores (1-2.5 s per iteration): enough to segment the source."""
GPU = Schedule(30, 100, 10)
"""3000 iterations: a few minutes per trainer on a GPU, closer to a real (250000-iteration) run."""


class _SkipFinalValidation:
    """Demo models train on fold 'all', where nnU-Net's final validation would only re-score the training cases;
    the demo scores held-out test domains instead, so that step would only slow the demo down.
    """

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("Demo schedule: final validation skipped (the demo evaluates held-out test sets).")


class DropGenTrainer_demoTiny(_SkipFinalValidation, DropGenTrainer):
    schedule = TINY


class nnUNetTrainer_demoTiny(_SkipFinalValidation, ScheduledTrainer, nnUNetTrainer):
    schedule = TINY


class DropGenTrainer_demo(_SkipFinalValidation, DropGenTrainer):
    schedule = CPU


class nnUNetTrainer_demo(_SkipFinalValidation, ScheduledTrainer, nnUNetTrainer):
    schedule = CPU


class DropGenTrainer_demoGPU(_SkipFinalValidation, DropGenTrainer):
    schedule = GPU


class nnUNetTrainer_demoGPU(_SkipFinalValidation, ScheduledTrainer, nnUNetTrainer):
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
