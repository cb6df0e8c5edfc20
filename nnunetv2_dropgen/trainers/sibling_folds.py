"""Folds of one trainer that started from different extractor weights: an ensemble of them mixes two features.

nnU-Net treats the folds of a trainer, plans and configuration as one model (`nnUNetv2_predict` ensembles
them). Which weights DropGen's extractor starts from is not in the trainer name: `DROPGEN_WEIGHTS_<NAME>`
chooses them, so a fold trained in a shell without the variable silently gets other features than its
siblings. Each checkpoint records the weights' sha256, which is what this compares.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nnunetv2_dropgen.network.dropgen_network import RECORD_KEY
from nnunetv2_dropgen.network.feature_record import FeatureRecord

_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def sibling_fold_records(fold_folder: Path) -> dict[str, FeatureRecord]:
    """The feature record of every other fold of the same model folder, by fold folder name.

    `fold_folder` is `<nnUNet_results>/DatasetXXX/<trainer>__<plans>__<configuration>/fold_<k>`. A sibling
    counts once it has a checkpoint (final, else latest, else best); one that cannot be read (a fold training in
    parallel may be writing it) or has no record is skipped.
    """
    records: dict[str, FeatureRecord] = {}
    for sibling in sorted(fold_folder.parent.glob("fold_*")):
        if sibling.resolve() == fold_folder.resolve() or not sibling.is_dir():
            continue
        checkpoint = next((sibling / c for c in _CHECKPOINTS if (sibling / c).is_file()), None)
        if checkpoint is None:
            continue
        try:  # mmap: only the record is read, not the weights and optimizer state (hundreds of MB on default plans)
            state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["network_weights"]
            records[sibling.name] = FeatureRecord.from_state(state[RECORD_KEY])
        except Exception:  # being written by a fold training in parallel, or not a DropGen checkpoint
            continue
    return records


def mixed_weights_warning(fold_folder: Path, record: FeatureRecord, variable: str) -> str | None:
    """A sentence when another fold of this model started from other extractor weights than `record`, else None.

    `variable` is the DROPGEN_WEIGHTS_<NAME> that chooses this extractor's weights.
    """
    others = {
        fold: other
        for fold, other in sibling_fold_records(fold_folder).items()
        if other.weights_sha256 and other.weights_sha256 != record.weights_sha256
    }
    if not others:
        return None
    listed = "; ".join(f"{fold}: sha256 {r.weights_sha256} ({r.weights_origin})" for fold, r in others.items())
    return (
        f"this fold's extractor weights (sha256 {record.weights_sha256}, {record.weights_origin}) differ from those "
        f"other folds of this model started from ({listed}). nnUNetv2_predict ensembles the folds, so the ensemble "
        f"would mix networks trained on different features. Stop and train every fold with the same {variable} "
        "(or none), or move the other folds away if you mean to replace them."
    )
