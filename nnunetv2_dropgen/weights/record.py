"""The record beside a user's own pretrained extractor: what it is and which file it describes.

`nnunetv2_dropgen pretrain` writes `model.pth` (a plain state_dict) and `model.json` (this record).
When such a file is later given as an extractor's weights, the record says which architecture it
fits and its sha256 proves the file is the one pretraining wrote, so it is trusted as the user's
own extractor instead of being reported as an unverified copy of the published weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nnunetv2_dropgen.weights.checksums import sha256_file
from nnunetv2_dropgen.weights.errors import WeightsUnreadable
from nnunetv2_dropgen.weights.files import temporary_beside

RECORD_FORMAT = "nnunetv2-dropgen-pretrained-extractor/1"
_FORMAT_FAMILY = RECORD_FORMAT.rsplit("/", 1)[0] + "/"


def record_path(path: str | os.PathLike) -> Path:
    """Where the record of the weight file `path` lives: same folder and stem, suffix `.json`."""
    return Path(path).with_suffix(".json")


def found_record_path(path: str | os.PathLike) -> Path:
    """The record read for `path`: beside it, else beside the file a symbolic link `path` points to."""
    beside = record_path(path)
    return beside if beside.is_file() else record_path(Path(path).resolve())


def save_pretrained(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, record: Mapping[str, Any]) -> str:
    """Write `path` (a plain state_dict) and its record atomically; returns the sha256 of the weight file.

    The record gets "format" and "sha256" added; it must name the "architecture" (the registered
    extractor name the weights fit). Nothing is replaced unless both files could be written.
    """
    path = Path(path)
    if not isinstance(record.get("architecture"), str) or not record["architecture"]:
        raise ValueError(
            "The pretraining record must name the extractor architecture the weights fit, e.g. "
            "{'architecture': 'anatomix', ...}; add an 'architecture' entry."
        )
    if path.suffix == ".json":
        raise ValueError(
            f"{path} ends in .json, the suffix of the record written beside it; name it e.g. {path.stem}.pth."
        )
    bad = [
        str(key) for key, value in state_dict.items() if not (isinstance(key, str) and isinstance(value, torch.Tensor))
    ]
    if not state_dict or bad:
        raise ValueError(
            f"save_pretrained needs a non-empty state_dict (parameter names to tensors); "
            f"entries that are not: {', '.join(bad[:5]) or 'none (it is empty)'}. Pass module.state_dict()."
        )
    tensors = {key: value.detach().cpu() for key, value in state_dict.items()}
    target_record = record_path(path)
    with temporary_beside(path) as weights_part, temporary_beside(target_record) as record_part:
        torch.save(tensors, weights_part)
        sha256 = sha256_file(weights_part)
        document = {**record, "format": RECORD_FORMAT, "sha256": sha256}
        try:
            text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        except TypeError as exc:
            raise ValueError(
                f"The pretraining record cannot be written as JSON ({exc}); keep its values plain."
            ) from exc
        record_part.write_text(text, encoding="utf-8")
        os.replace(weights_part, path)
        os.replace(record_part, target_record)
    return sha256


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The pretraining record beside the weight file `path`, or None when there is none.

    A JSON document of another kind beside the weights is not a record (None); a file that cannot
    be read as JSON raises WeightsUnreadable, because silently ignoring a damaged record would demote
    the user's own extractor to an unverified file.
    """
    location = found_record_path(path)
    if not location.is_file():
        return None
    try:
        document = json.loads(location.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsUnreadable(
            f"The file {location} beside the weights cannot be read as a pretraining record ({exc}). Restore "
            f"it from where the model was pretrained, or move it away to use {Path(path).name} without it."
        ) from exc
    if not isinstance(document, dict) or not str(document.get("format", "")).startswith(_FORMAT_FAMILY):
        return None
    if document["format"] != RECORD_FORMAT:
        raise WeightsUnreadable(
            f"The pretraining record {location} has format {document['format']!r}, which this version of "
            f"nnunetv2_dropgen does not know ({RECORD_FORMAT!r}); upgrade nnunetv2_dropgen."
        )
    return document
