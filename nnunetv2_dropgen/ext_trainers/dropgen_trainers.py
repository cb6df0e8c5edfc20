"""Thin module nnU-Net imports from `nnUNet_extTrainer`.

The classes live in `nnunetv2_dropgen.trainers`, an importable package, so they keep a stable module
path after nnU-Net removes what it imported from this folder. Composed names (`DropGenTrainer_p050`, ...)
are answered by that package's module `__getattr__`, which this module shares.
"""

from nnunetv2_dropgen.trainers import DropGenTrainer
from nnunetv2_dropgen.trainers import __getattr__ as __getattr__

__all__ = ["DropGenTrainer"]
