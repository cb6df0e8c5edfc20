"""DropGenTrainer: nnU-Net's default trainer with DropGen (the `DropGen` mixin on `nnUNetTrainer`)."""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_dropgen.trainers.dropgen import DropGen
from nnunetv2_dropgen.trainers.schedule import ScheduledTrainer


class DropGenTrainer(DropGen, ScheduledTrainer, nnUNetTrainer):
    """anatomix features + channel dropout p=0.75 over image and feature channels; nnU-Net defaults otherwise."""
