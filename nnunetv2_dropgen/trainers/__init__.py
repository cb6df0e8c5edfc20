"""nnU-Net trainers that train and predict with a DropGenNetwork (`-tr DropGenTrainer`)."""

from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer
from nnunetv2_dropgen.trainers.variants import (
    DropGenTrainer_1epoch,
    DropGenTrainer_5epochs,
    DropGenTrainer_10epochs,
    DropGenTrainer_50epochs,
    DropGenTrainer_100epochs,
    DropGenTrainer_250epochs,
    DropGenTrainer_anatomixDev,
    DropGenTrainer_featuresOnly,
    DropGenTrainer_noDropout,
    DropGenTrainer_p025,
    DropGenTrainer_p050,
    DropGenTrainer_p090,
    DropGenTrainer_quick,
)

__all__ = [
    "DropGenTrainer",
    "DropGenTrainer_1epoch",
    "DropGenTrainer_5epochs",
    "DropGenTrainer_10epochs",
    "DropGenTrainer_50epochs",
    "DropGenTrainer_100epochs",
    "DropGenTrainer_250epochs",
    "DropGenTrainer_anatomixDev",
    "DropGenTrainer_featuresOnly",
    "DropGenTrainer_noDropout",
    "DropGenTrainer_p025",
    "DropGenTrainer_p050",
    "DropGenTrainer_p090",
    "DropGenTrainer_quick",
]
