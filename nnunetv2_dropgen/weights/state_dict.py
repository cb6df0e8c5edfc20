"""Read a weight file as a plain state_dict, whatever wrapper the training code that wrote it used."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch

from nnunetv2_dropgen.weights.errors import WeightsMissing, WeightsUnreadable

COMPILE_PREFIX = "_orig_mod."
"""What torch.compile puts before every key of a compiled module's state_dict."""
TRAINING_CHECKPOINT = (
    "an extractor's weight file is its state_dict alone, not a training checkpoint such as nnU-Net's "
    "checkpoint_final.pth (from a DropGen checkpoint: the 'network_weights' entries that start with 'extractor.', "
    "without that prefix, saved with torch.save)"
)


def short_error(exc: BaseException) -> str:
    """`Type: first line` of an exception, for a message that must stay one sentence."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class NotAStateDict(ValueError):
    """Why a file cannot be read as a state_dict, as a phrase that fits into a caller's sentence."""


def read_state_dict(source: Path | BinaryIO) -> dict[str, torch.Tensor]:
    """The state_dict in `source`, a file or its bytes (unwrapped, `_orig_mod.` stripped); NotAStateDict says why
    not."""
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "unsupported global" in str(exc).lower():  # a readable PyTorch file holding more than tensors
            raise NotAStateDict(f"it holds objects other than tensors; {TRAINING_CHECKPOINT}") from exc
        raise NotAStateDict(f"it is truncated or not a PyTorch file ({short_error(exc)})") from exc
    if isinstance(loaded, Mapping) and "network_weights" in loaded:
        raise NotAStateDict(f"it is a training checkpoint (it has 'network_weights'); {TRAINING_CHECKPOINT}")
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise NotAStateDict(
            "it loads, but it is not a state_dict (a dict of parameter names to tensors, possibly under a "
            "'state_dict' or 'model' key)"
        )
    state = {key.removeprefix(COMPILE_PREFIX): value for key, value in loaded.items()}
    if len(state) != len(loaded):
        raise NotAStateDict(
            f"it holds some parameters both with and without torch.compile's '{COMPILE_PREFIX}' prefix, so "
            "it is ambiguous which to use"
        )
    return state


def load_state_dict_file(
    path: str | os.PathLike, name: str | None = None, sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (`weights_only=True`): unwrap a "state_dict"/"model" entry, strip `_orig_mod.`.

    Checkpoints saved from a torch.compile'd model carry the `_orig_mod.` prefix on every key; the
    published anatomix loader strips it too. Every failure is a WeightsError naming the file, so a
    truncated download never surfaces as an obscure zip or pickle error. With `sha256` (the checksum the
    file was verified and is recorded under), the bytes loaded are those bytes or WeightsUnreadable: the file
    is read once, so one replaced after its check cannot be loaded under the old checksum.
    """
    path = Path(path)
    label = name or "NAME"
    fix = (
        f"Replace it with a good copy: for published weights `nnunetv2_dropgen weights fetch {label} --force`, or "
        f"`nnunetv2_dropgen weights install {label} /path/to/{path.name}`."
    )
    if not path.is_file():
        raise WeightsMissing(f"The weight file {path} does not exist or is not a file. {fix}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsUnreadable(f"Could not read the weight file {path} ({short_error(exc)}). {fix}") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise WeightsUnreadable(
            f"The weight file {path} changed after it was checked (sha256 {sha256}), so the weights loaded would not "
            "be those checked and recorded. Let whatever writes it finish, then run the command again."
        )
    try:
        return read_state_dict(io.BytesIO(data))
    except NotAStateDict as problem:
        raise WeightsUnreadable(f"Could not use the weight file {path}: {problem}. {fix}") from problem.__cause__
