"""DropGenTrainer variants in nnU-Net's naming style: each is a few class attributes.

Everything here is reconstructible from the class name, so `nnUNetv2_predict -tr <name>` rebuilds
the exact network that was trained.
"""

from __future__ import annotations

from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer
from nnunetv2_dropgen.trainers.schedule import Schedule


class DropGenTrainer_anatomixDev(DropGenTrainer):
    """The 94M-parameter anatomix-dev extractor (32 features, inputs padded to multiples of 32)."""

    extractor_name = "anatomix-dev"


class DropGenTrainer_p025(DropGenTrainer):
    dropout_p = 0.25


class DropGenTrainer_p050(DropGenTrainer):
    dropout_p = 0.5


class DropGenTrainer_p090(DropGenTrainer):
    dropout_p = 0.9


class DropGenTrainer_noDropout(DropGenTrainer):
    """Ablation: image and features concatenated, nothing dropped."""

    dropout_p = 0.0


class DropGenTrainer_featuresOnly(DropGenTrainer):
    """Ablation, the invariance-only baseline: image channels always zeroed, the network sees features only."""

    use_image = False
    dropout_p = 0.0


class DropGenTrainer_1epoch(DropGenTrainer):
    schedule = Schedule(epochs=1)


class DropGenTrainer_5epochs(DropGenTrainer):
    schedule = Schedule(epochs=5)


class DropGenTrainer_10epochs(DropGenTrainer):
    schedule = Schedule(epochs=10)


class DropGenTrainer_50epochs(DropGenTrainer):
    """Few-shot fine-tuning length."""

    schedule = Schedule(epochs=50)


class DropGenTrainer_100epochs(DropGenTrainer):
    schedule = Schedule(epochs=100)


class DropGenTrainer_250epochs(DropGenTrainer):
    schedule = Schedule(epochs=250)


class DropGenTrainer_quick(DropGenTrainer):
    """Smoke-test schedule (2 epochs of 4 iterations): checks a set-up end to end in minutes on a CPU."""

    schedule = Schedule(epochs=2, iterations_per_epoch=4, val_iterations_per_epoch=2)
