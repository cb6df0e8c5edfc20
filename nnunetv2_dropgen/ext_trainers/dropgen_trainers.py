"""Thin module nnU-Net imports from `nnUNet_extTrainer`.

The classes themselves live in `nnunetv2_dropgen.trainers` (and the demo's schedules in
`nnunetv2_dropgen.demo.trainers`), importable packages, so they keep a stable module path after
nnU-Net removes what it imported from this folder.
"""

from nnunetv2_dropgen.demo.trainers import *  # noqa: F401,F403
from nnunetv2_dropgen.trainers import *  # noqa: F401,F403
