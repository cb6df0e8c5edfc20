"""Training length as a class attribute, so a schedule is part of the trainer name nnU-Net records."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Schedule(NamedTuple):
    """Epochs, training iterations per epoch, validation iterations per epoch; None keeps nnU-Net's value."""

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None


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
        epochs, iterations, val_iterations = self.schedule
        if epochs is not None:
            self.num_epochs = epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = val_iterations
