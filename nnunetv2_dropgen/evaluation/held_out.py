"""Test cases a model trained on: a "held-out" Dice of one is not held out, so evaluate stops before predicting.

A test case counts as trained on when a fold in the ensemble trained on a case of `imagesTr` with the same id
AND the same image (channel 0000, same bytes or the same voxel values): synthetic benchmarks reuse ids for
different images, and an id alone proves nothing. Which cases a fold trained on is nnU-Net's `do_split`: fold
'all' every training case; fold k the `train` list of fold k in nnUNet_preprocessed/DatasetXXX/
splits_final.json (nnU-Net keeps no copy in the model folder), or for a k beyond the file's folds nnU-Net's seeded
80:20 split. Without that file, the 5-fold split nnU-Net writes when it trains a fold (with fewer than 5 cases
for it, every training case counts).

In-domain test sets (--in-domain) are not exempt: they measure Dice on unseen cases of the training domain, the
reference the held-out Dice is compared to, and training cases would inflate it.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_dropgen.evaluation.defaults import NNUNET_FOLDS, NNUNET_SEED, SPLITS_FILE
from nnunetv2_dropgen.evaluation.errors import EvaluationError
from nnunetv2_dropgen.evaluation.models import ALL_FOLDS, Fold, TrainedModel
from nnunetv2_dropgen.evaluation.splits import listing
from nnunetv2_dropgen.evaluation.test_sets import TestSet


@dataclass(frozen=True)
class FoldCases:
    """The case ids one fold trained on, and where that comes from (for the message)."""

    cases: frozenset[str]
    source: str


def _training_images(raw: Path, dataset_json: Mapping) -> dict[str, Path]:
    """Case id -> channel-0000 image of every training case, as nnU-Net lists them (imagesTr, or dataset.json's
    `dataset`); empty when the raw dataset is not there."""
    if "dataset" not in dataset_json and not (raw / "imagesTr").is_dir():
        return {}
    # nnU-Net resolves the paths of dataset.json's `dataset` in place: give it a copy
    dataset = get_filenames_of_train_images_and_targets(str(raw), copy.deepcopy(dict(dataset_json)))
    images = {str(case): Path(entry["images"][0]) for case, entry in dataset.items() if entry["images"]}
    return {case: image for case, image in images.items() if image.is_file()}


def _same_image(test_image: Path, training_image: Path, reader: BaseReaderWriter) -> bool:
    """The same file, the same bytes, or the same voxel values (one written again, or stored another way)."""
    if not training_image.is_file():
        return False
    if filecmp.cmp(test_image, training_image, shallow=False):
        return True
    test, _ = reader.read_images([str(test_image)])
    training, _ = reader.read_images([str(training_image)])
    return test.shape == training.shape and bool(np.array_equal(test, training))


def trained_test_cases(
    test_set: TestSet, training: Mapping[str, Path], file_ending: str, reader: BaseReaderWriter
) -> list[str]:
    """Cases of `test_set` whose image is the image of the training case with the same id."""
    return [
        case
        for case in test_set.cases
        if case in training and _same_image(test_set.images / f"{case}_0000{file_ending}", training[case], reader)
    ]


def fold_cases(fold: Fold, all_cases: Sequence[str], preprocessed: Path | None) -> FoldCases:
    """What nnU-Net's do_split trains fold `fold` on (`all_cases`: every training case id)."""
    if fold == ALL_FOLDS:
        return FoldCases(frozenset(all_cases), "fold 'all' trains on every training case")
    splits_file = preprocessed / SPLITS_FILE if preprocessed is not None else None
    if splits_file is None or not splits_file.is_file():
        # nnU-Net's do_split then wrote its default split: 5 folds of the sorted case ids, its seed
        where = splits_file or f"nnUNet_preprocessed/<dataset>/{SPLITS_FILE} (nnUNet_preprocessed is not set)"
        enough = len(all_cases) >= NNUNET_FOLDS
        default = generate_crossval_split(sorted(all_cases), NNUNET_SEED, NNUNET_FOLDS) if enough else []
        if int(fold) < len(default):
            return FoldCases(
                frozenset(str(case) for case in default[int(fold)]["train"]),
                f"{where} is not there, so fold {fold}'s train list of the 5-fold split nnU-Net writes then",
            )
        return FoldCases(frozenset(all_cases), f"{where} is not there, so every training case counts")
    try:
        splits = json.loads(splits_file.read_text())
        if int(fold) < len(splits):
            return FoldCases(frozenset(splits[int(fold)]["train"]), f"fold {fold}'s train list in {splits_file}")
    except (ValueError, KeyError, TypeError, IndexError):
        raise EvaluationError(
            f"{splits_file} is not a list of folds with 'train' and 'val' case lists, so evaluate cannot tell which "
            "cases the models trained on; write it again (nnunetv2_dropgen splits) or restore nnU-Net's."
        ) from None
    # as nnUNetTrainer.do_split for a fold the file does not have: a seeded random 80:20 split
    keys = np.sort(list(all_cases))
    chosen = np.random.RandomState(seed=NNUNET_SEED + int(fold)).choice(len(keys), int(len(keys) * 0.8), False)
    return FoldCases(
        frozenset(str(keys[i]) for i in chosen),
        f"{splits_file} has {len(splits)} fold(s), so nnU-Net trained fold {fold} on its seeded random 80:20 split",
    )


def check_held_out(
    dataset: str,
    dataset_json: Mapping,
    models: Sequence[TrainedModel],
    test_sets: Sequence[TestSet],
    reader: BaseReaderWriter,
    notes: list[str],
) -> None:
    """Raise EvaluationError naming test set, cases, model and folds when a fold evaluated trained on a test case."""
    raw_root = os.environ.get("nnUNet_raw")
    raw = Path(raw_root) / dataset if raw_root else None
    training = _training_images(raw, dataset_json) if raw is not None else {}
    if not training:
        notes.append(
            f"The training images ({raw / 'imagesTr' if raw else 'nnUNet_raw is not set'}) are not there, so "
            "evaluate cannot check that no test case is one the models trained on."
        )
        return
    file_ending = dataset_json["file_ending"]
    repeated = {t.name: trained_test_cases(t, training, file_ending, reader) for t in test_sets}
    if not any(repeated.values()):
        return
    preprocessed_root = os.environ.get("nnUNet_preprocessed")
    preprocessed = Path(preprocessed_root) / dataset if preprocessed_root else None
    for model in models:
        folds = {fold: fold_cases(fold, sorted(training), preprocessed) for fold in model.folds}
        for test_set in test_sets:
            trained_by = {f: sorted(set(repeated[test_set.name]) & c.cases) for f, c in folds.items()}
            trained_by = {f: cases for f, cases in trained_by.items() if cases}
            if not trained_by:
                continue
            cases = sorted({case for found in trained_by.values() for case in found})
            fold, first = next(iter(trained_by.items()))
            clean = [str(f) for f in model.folds if f not in trained_by]
            advice = (
                f"Evaluate only the fold(s) that did not train on them, -f {' '.join(clean)}"
                if clean
                else "Evaluate a fold that held them out, -f k"
            )
            raise EvaluationError(
                f"Test set {test_set.name!r}: case(s) {listing(map(str, cases))} are training cases of {model.label} "
                f"(fold(s) {', '.join(str(f) for f in trained_by)} of {', '.join(str(f) for f in model.folds)}; "
                f"e.g. {first[0]}: the same image as {training[first[0]]}, and {folds[fold].source}), so its Dice "
                f"would not be held out. {advice} (for leave-one-site-out: the fold that validates on this site), "
                "or move those cases out of the test set."
            )
