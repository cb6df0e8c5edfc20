"""The folder to put in `nnUNet_extTrainer` (print it with `nnunetv2_dropgen trainer-dir`).

Importing this package imports nothing else, so finding the folder costs nothing (the shell start-up line
`export nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)` runs in every new shell).
"""

from pathlib import Path


def trainer_dir() -> Path:
    """The folder to put in nnUNet_extTrainer: it holds one thin module importing the trainer classes."""
    return Path(__file__).resolve().parent
