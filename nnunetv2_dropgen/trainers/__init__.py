"""nnU-Net trainers that train and predict with a DropGenNetwork (`-tr DropGenTrainer`, and composed names).

Besides `DropGenTrainer` itself and the `DropGen` mixin (`class MyDropGen(DropGen, MyTrainer)`), this module
answers every name of the forms described in `names` (e.g. `DropGenTrainer_minimix_p050_quick`,
`nnUNetTrainerDA5_DropGen_minimix`, `nnUNetTrainer_demo`) with a class built on first use.
"""

from __future__ import annotations

import sys
import time

from nnunetv2_dropgen.trainers.dropgen import DropGen, TrainerConflict
from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer
from nnunetv2_dropgen.trainers.names import (
    GRAMMAR,
    ON_A_BASE,
    TrainerNameError,
    build_trainer_class,
    meant_for_dropgen,
    parse_dropgen_name,
)
from nnunetv2_dropgen.trainers.pretrained_weights import route_nnunet_loader
from nnunetv2_dropgen.trainers.volume_scaling import route_volume_scaling

route_nnunet_loader()  # nnU-Net's -pretrained_weights loader would trip over the feature record
route_volume_scaling()  # the volumeScaling option needs the whole volume's range at inference

__all__ = [
    "GRAMMAR",
    "ON_A_BASE",
    "DropGen",
    "DropGenTrainer",
    "TrainerConflict",
    "TrainerNameError",
    "build_trainer_class",
    "parse_dropgen_name",
]


# When each name's error was last printed: one nnU-Net search asks every module of every folder within
# moments, so it is said once per search, and again by a later search in the same process (a notebook).
_EXPLAINED: dict[str, float] = {}
_ONE_SEARCH_S = 10.0


def __getattr__(name: str) -> type:
    """A composed trainer name: built once, then the same class every time (so pickling finds it here)."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        trainer = build_trainer_class(name)
    except TrainerNameError as exc:
        # nnU-Net looks trainers up with hasattr, which swallows this error: a name meant for DropGen would
        # end in nnU-Net's "could not find requested nnunet trainer" alone, so say why here, once per name
        # (other names stay silent: nnU-Net's search goes on to the next folder of nnUNet_extTrainer)
        if meant_for_dropgen(name) and time.monotonic() - _EXPLAINED.get(name, -_ONE_SEARCH_S) >= _ONE_SEARCH_S:
            _EXPLAINED[name] = time.monotonic()
            print(f"nnunetv2_dropgen: {exc}", file=sys.stderr, flush=True)
        raise
    globals()[name] = trainer
    return trainer
