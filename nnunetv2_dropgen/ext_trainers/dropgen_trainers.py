"""Thin module nnU-Net imports from `nnUNet_extTrainer`.

The classes themselves live in `nnunetv2_dropgen.trainers`, an importable package, so they keep a
stable module path after nnU-Net removes what it imported from this folder.
"""

from nnunetv2_dropgen.trainers import *  # noqa: F401,F403
from nnunetv2_dropgen.trainers import __all__  # noqa: F401
