"""Training length as a class attribute, so a schedule is part of the trainer name nnU-Net records."""

from __future__ import annotations

import re
from typing import NamedTuple

import torch


class Schedule(NamedTuple):
    """Epochs, training and validation iterations per epoch (None keeps nnU-Net's value), and whether the
    final validation on the fold's validation cases runs (schedules for held-out test sets skip it)."""

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    final_validation: bool = True


NAMED_SCHEDULES: dict[str, Schedule] = {
    "quick": Schedule(2, 4, 2),
    "demoTiny": Schedule(1, 2, 1, final_validation=False),
    "demo": Schedule(20, 50, 5, final_validation=False),
    "cpuBench": Schedule(60, 50, 5, final_validation=False),
    "demoGPU": Schedule(30, 100, 10, final_validation=False),
}
"""Schedules by trainer-name part. quick: a smoke test of a set-up (minutes on a CPU). demoTiny: the demo's
CI smoke test. demo: 1000 iterations, the CPU demo with the narrow CPU plans (nnU-Net's curve is flat by then,
DropGen's still rising; see benchmarks/RESULTS.md). cpuBench: 3000 iterations, a quick look at the CPU
domain-shift benchmark (DropGen has not converged by then; the benchmark's CPU default is `80epochs`, 20,000
iterations). demoGPU: 3000 iterations.
The demo and benchmark ones train on fold 'all' and are scored on held-out test sets, so they skip the final
validation."""

_EPOCHS = re.compile(r"^(\d+)epochs?$")


def schedule_from_token(token: str) -> Schedule | None:
    """'quick', 'demo', ..., '1epoch', '<N>epochs' -> a Schedule; anything else -> None."""
    if token in NAMED_SCHEDULES:
        return NAMED_SCHEDULES[token]
    match = _EPOCHS.match(token)
    if match and int(match.group(1)) >= 1 and (token.endswith("s") == (int(match.group(1)) != 1)):
        return Schedule(epochs=int(match.group(1)))
    return None


class ScheduledTrainer:
    """Mixin for nnU-Net trainers: applies `schedule` after nnU-Net's __init__, which is where nnU-Net sets it."""

    schedule: Schedule = Schedule()

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        epochs, iterations, val_iterations, _ = self.schedule
        if epochs is not None:
            self.num_epochs = epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = val_iterations

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if not self.schedule.final_validation:
            self.print_to_log_file("Schedule without final validation: models are scored on held-out test sets.")
            if self.fold != "all":
                self.print_to_log_file(
                    f"WARNING: fold {self.fold} gets no validation/ folder, so nnUNetv2_find_best_configuration, "
                    "ensembling and the cascade's next stage cannot use it; for cross-validation train with an "
                    "<N>epochs schedule (e.g. _250epochs)."
                )
            return
        super().perform_actual_validation(save_probabilities)
