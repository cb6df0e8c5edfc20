"""Named test sets (an images folder and a labels folder): found in the raw dataset or named by the user.

Every test set is checked against the model's dataset.json before any prediction runs, so a bad folder
stops the evaluation with a sentence instead of failing halfway through.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_dropgen.evaluation.errors import EvaluationError

IMAGES_PREFIX = "imagesTs"
LABELS_PREFIX = "labelsTs"
PLAIN_TEST_SET = "Ts"
"""Name of the test set in plain `imagesTs`/`labelsTs` (no suffix to name it after)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SHOWN = 5  # how many offending cases an error message lists


@dataclass(frozen=True)
class TestSet:
    """Images (`CASE_XXXX<file_ending>`, one file per channel) and labels (`CASE<file_ending>`) under one name."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    images: Path
    labels: Path
    cases: tuple[str, ...] = ()
    """Case ids, sorted; filled in by `check_test_set`."""


def num_channels(dataset_json: Mapping) -> int:
    """Image channels per case, as nnU-Net counts them (`channel_names`, or `modality` in older datasets)."""
    return len(dataset_json.get("channel_names", dataset_json.get("modality", {})))


def discover_test_sets(raw_dataset: Path) -> tuple[list[TestSet], list[str]]:
    """Every `imagesTs*` folder of a raw dataset that has its `labelsTs*` twin, and notes on those that have not.

    `imagesTs_siteB` + `labelsTs_siteB` is the test set "siteB"; plain `imagesTs` + `labelsTs` is "Ts". An
    images folder without labels is common (nnU-Net's own imagesTs has none) and is skipped with a note.
    """
    test_sets, notes = [], []
    for images in sorted(p for p in raw_dataset.glob(f"{IMAGES_PREFIX}*") if p.is_dir()):
        suffix = images.name[len(IMAGES_PREFIX) :]
        labels = raw_dataset / f"{LABELS_PREFIX}{suffix}"
        if labels.is_dir():
            test_sets.append(TestSet(suffix.lstrip("_") or PLAIN_TEST_SET, images, labels))
        else:
            notes.append(f"{images.name} has no {labels.name} beside it, so it cannot be scored: skipped.")
    if not test_sets:
        raise EvaluationError(
            f"{raw_dataset} has no imagesTs*/labelsTs* folder pair (e.g. imagesTs_siteB with labelsTs_siteB) to "
            "evaluate on; name test sets yourself with --test-set NAME IMAGES_FOLDER LABELS_FOLDER."
        )
    return test_sets, notes


def check_names(test_sets: Sequence[TestSet]) -> None:
    """Names become folder names and table rows: plain characters, each used once."""
    seen: set[str] = set()
    for test_set in test_sets:
        if not _NAME.fullmatch(test_set.name):
            raise EvaluationError(
                f"Test set name {test_set.name!r} cannot be used: names become folder names, so use letters, "
                "digits, '_', '-' and '.' (starting with a letter or digit)."
            )
        if test_set.name in seen:
            raise EvaluationError(f"Two test sets are called {test_set.name!r}; give each test set its own name.")
        seen.add(test_set.name)


def _listing(items: Iterable[str]) -> str:
    items = sorted(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _image_cases(test_set: TestSet, file_ending: str, channels: int) -> list[str]:
    """Case ids of the images folder; every case must have exactly the channels dataset.json names."""
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(file_ending)}")
    found: dict[str, set[int]] = defaultdict(set)
    misnamed = []
    for path in test_set.images.iterdir():
        if not path.name.endswith(file_ending) or path.name.startswith("."):
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            misnamed.append(path.name)
        else:
            found[match.group(1)].add(int(match.group(2)))
    if misnamed:
        raise EvaluationError(
            f"Test set {test_set.name!r}: {_listing(misnamed)} in {test_set.images} are not named CASE_XXXX"
            f"{file_ending} (nnU-Net's naming, XXXX the 4-digit channel index); rename them."
        )
    if not found:
        raise EvaluationError(
            f"Test set {test_set.name!r}: {test_set.images} holds no images (CASE_0000{file_ending}); "
            "point it at a folder of images in nnU-Net's naming."
        )
    expected = set(range(channels))
    wrong = {case: sorted(found_channels) for case, found_channels in found.items() if found_channels != expected}
    if wrong:
        case, present = sorted(wrong.items())[0]
        raise EvaluationError(
            f"Test set {test_set.name!r}: the model's dataset.json names {channels} image channel(s) "
            f"(_0000 to _{channels - 1:04d}), but in {test_set.images} case {case} has channel(s) "
            f"{', '.join(f'_{c:04d}' for c in present)}"
            + (f" (and {len(wrong) - 1} more case(s) do not match either)" if len(wrong) > 1 else "")
            + "; give every case exactly the channels the model was trained with."
        )
    return sorted(found)


def _label_cases(test_set: TestSet, file_ending: str) -> list[str]:
    return sorted(
        p.name[: -len(file_ending)]
        for p in test_set.labels.iterdir()
        if p.name.endswith(file_ending) and not p.name.startswith(".")
    )


def check_labels(
    test_set: TestSet, cases: Sequence[str], file_ending: str, reader: BaseReaderWriter, label_manager: LabelManager
) -> None:
    """Every label file holds only values dataset.json defines (the ignore label included)."""
    allowed = {int(v) for v in label_manager.all_labels}
    if label_manager.has_ignore_label:
        allowed.add(int(label_manager.ignore_label))
    unknown: dict[int, list[str]] = defaultdict(list)
    for case in cases:
        segmentation, _ = reader.read_seg(str(test_set.labels / f"{case}{file_ending}"))
        for value in np.unique(segmentation):
            if int(value) not in allowed:
                unknown[int(value)].append(case)
    if unknown:
        values = ", ".join(str(v) for v in sorted(unknown))
        cases_with = sorted({case for found in unknown.values() for case in found})
        raise EvaluationError(
            f"Test set {test_set.name!r}: {test_set.labels} contains label value(s) {values} (in case(s) "
            f"{_listing(cases_with)}) that the model's dataset.json does not define (it defines "
            f"{', '.join(str(v) for v in sorted(allowed))}); fix those label files or the labels folder."
        )


def check_test_set(
    test_set: TestSet, dataset_json: Mapping, reader: BaseReaderWriter, label_manager: LabelManager
) -> TestSet:
    """The test set with its case ids, after checking folders, naming, channels, case ids and label values."""
    for kind, folder in (("images", test_set.images), ("labels", test_set.labels)):
        if not folder.is_dir():
            advice = "" if kind == "images" else " (a test set needs ground truth to be scored)"
            raise EvaluationError(
                f"Test set {test_set.name!r}: the {kind} folder {folder} does not exist{advice}; "
                "check the path given with --test-set."
            )
    file_ending = dataset_json["file_ending"]
    cases = _image_cases(test_set, file_ending, num_channels(dataset_json))
    labelled = _label_cases(test_set, file_ending)
    unlabelled, unmatched = sorted(set(cases) - set(labelled)), sorted(set(labelled) - set(cases))
    if unlabelled or unmatched:
        problems = []
        if unlabelled:
            problems.append(f"case(s) {_listing(unlabelled)} have images but no label file in {test_set.labels}")
        if unmatched:
            problems.append(f"label file(s) of case(s) {_listing(unmatched)} have no images in {test_set.images}")
        raise EvaluationError(
            f"Test set {test_set.name!r}: the case ids of images and labels do not match: {'; '.join(problems)}. "
            f"Every case needs CASE_0000{file_ending} in the images folder and CASE{file_ending} in the labels folder."
        )
    check_labels(test_set, cases, file_ending, reader, label_manager)
    return dataclasses.replace(test_set, cases=tuple(cases))
