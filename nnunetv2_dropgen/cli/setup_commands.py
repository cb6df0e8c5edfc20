"""`nnunetv2_dropgen trainer-dir` and `nnunetv2_dropgen doctor`: get nnU-Net to find and run DropGen."""

from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nnunetv2_dropgen.ext_trainers import trainer_dir

NNUNET_RANGE = (2, 8)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `trainer-dir` and `doctor`."""
    where = subparsers.add_parser(
        "trainer-dir",
        help="print the folder for nnUNet_extTrainer",
        description="Print the folder nnU-Net must search for DropGen trainers. Use: "
        "export nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)",
    )
    where.set_defaults(func=lambda args: print(trainer_dir()))
    doctor = subparsers.add_parser("doctor", help="check the set-up and say in plain sentences what is missing")
    doctor.set_defaults(func=_doctor)


def check_setup() -> list[tuple[bool, str]]:
    """(ok, sentence) for each thing a DropGen training run needs."""
    checks: list[tuple[bool, str]] = []
    try:
        nnunet_version = version("nnunetv2")
        supported = tuple(int(part) for part in nnunet_version.split(".")[:2]) == NNUNET_RANGE
        advice = "." if supported else "; DropGen needs 2.8.x: pip install 'nnunetv2>=2.8.1,<2.9'."
        checks.append((supported, f"nnU-Net {nnunet_version} is installed{advice}"))
    except PackageNotFoundError:
        checks.append((False, "nnU-Net is not installed: pip install 'nnunetv2>=2.8.1,<2.9'."))

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(name)
        if not value:
            checks.append((False, f"{name} is not set: export {name}=/path/to/{name} (nnU-Net needs it)."))
        elif not Path(value).is_dir():
            checks.append((False, f"{name}={value} does not exist: create it (mkdir -p {value})."))
        else:
            checks.append((True, f"{name}={value}."))

    ext = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    here = trainer_dir()
    if any(Path(p).resolve() == here for p in ext):
        checks.append((True, "nnUNet_extTrainer points at the DropGen trainers."))
    else:
        checks.append(
            (
                False,
                "nnUNet_extTrainer does not include the DropGen trainers, so nnU-Net cannot find "
                "-tr DropGenTrainer: export nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)",
            )
        )

    checks.extend(_weights_check())
    checks.append(_gpu_check())
    return checks


def _weights_check() -> list[tuple[bool, str]]:
    """What training would do about each registered extractor's weights, asked of the functions training uses.

    A corrupt or refused file is a problem; a published file that is not here yet is only information
    when training would download it, or when a working embedded extractor makes it optional.
    """
    from nnunetv2_dropgen.feature_extractors import available_extractors, get_extractor_spec
    from nnunetv2_dropgen.weights import EmbeddedWeights, weights_outlook

    specs = [spec for spec in map(get_extractor_spec, available_extractors()) if spec.weights is not None]
    if not specs:
        return [(True, "No registered extractor has pretrained weights to check.")]
    outlooks = [(weights_outlook(spec.name, spec.weights), isinstance(spec.weights, EmbeddedWeights)) for spec in specs]
    embedded = [outlook.name for outlook, is_embedded in outlooks if is_embedded and outlook.state == "ready"]
    checks: list[tuple[bool, str]] = []
    for outlook, _ in outlooks:
        if outlook.state == "unavailable" and embedded:
            note = f" (Information only: {embedded[0]} works without it.)"
            checks.append((True, outlook.sentence + note))
        else:
            checks.append((outlook.state in ("ready", "download"), outlook.sentence))
    return checks


def _gpu_check() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, f"GPU: {torch.cuda.get_device_name(0)} (training and prediction will use it)."
    return False, "No CUDA GPU is visible: training works on CPU (-device cpu) but is far slower."


def _doctor(args: argparse.Namespace) -> int:
    checks = check_setup()
    for ok, sentence in checks:
        print(f"[{'ok' if ok else '!!'}] {sentence}")
    problems = sum(not ok for ok, _ in checks)
    print("Everything DropGen needs is in place." if not problems else f"{problems} thing(s) to look at above.")
    return 0 if not problems else 1
