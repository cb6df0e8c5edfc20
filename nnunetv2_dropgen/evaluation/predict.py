"""Predict test sets with nnU-Net's own predictor (in this process), reusing finished predictions so a run resumes.

nnU-Net writes a segmentation file while it exports it, so a killed run can leave a truncated file behind.
Cases are therefore predicted into a hidden `.<test set>.partial` folder beside the final one and moved
into the final folder (`os.replace`, atomic on one file system) only once nnU-Net has finished them: a
file in the final folder is always complete. The partial folder is emptied at the start of every run.
A `prediction_source.json` in the final folder records which checkpoints made the predictions of which
images, so predictions of a model that has been trained again since, or of test images written again since,
are made again rather than reused. Two runs that
share an output folder (two benchmark runs on one --workdir, two evaluate commands with one --out) take
turns on each prediction folder through a lock file inside it: the second finds the first's predictions
and reuses them instead of emptying its partial folder under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from filelock import FileLock
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_dropgen.evaluation.errors import EvaluationError
from nnunetv2_dropgen.evaluation.files import write_json_atomic
from nnunetv2_dropgen.evaluation.models import TrainedModel
from nnunetv2_dropgen.evaluation.test_sets import TestSet, num_channels

SOURCE_FILE = "prediction_source.json"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
LOCK_FILE = ".prediction.lock"


@dataclass(frozen=True)
class PredictionSettings:
    """How nnU-Net predicts (its -device, -step_size, --disable_tta, -npp, -nps); 0 workers: no worker processes."""

    device: str = "cpu"
    tile_step_size: float = 0.5
    use_mirroring: bool = True
    num_processes_preprocessing: int = 0
    num_processes_export: int = 0


def resolve_device(name: str | None) -> str:
    """cuda when PyTorch sees a GPU and no device was named; a named device must exist."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was given but PyTorch sees no CUDA GPU; use --device cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise EvaluationError("--device mps was given but PyTorch sees no Apple GPU; use --device cpu.")
    return name


def prediction_folder(out: Path, model: TrainedModel, test_set: TestSet) -> Path:
    return out / "predictions" / model.identifier / test_set.name


def _partial_folder(folder: Path) -> Path:
    return folder.parent / f"{PARTIAL_PREFIX}{folder.name}{PARTIAL_SUFFIX}"


def prediction_lock(folder: Path) -> FileLock:
    """The lock a run holds while it decides what `folder` lacks and predicts it (a hidden file inside it, which
    neither scoring nor the check for foreign cases reads: they look only at files with the dataset's ending)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / LOCK_FILE)


def prediction_source(
    model: TrainedModel, settings: PredictionSettings, test_set: TestSet, previous_stage: Path | None = None
) -> dict:
    """What made a folder's predictions: the checkpoint files and the test set's images (each by size and
    modification time: a model trained again or images made again are predicted again), the settings and, for
    a cascade, the folder of previous-stage predictions it took."""
    cases = set(test_set.cases)
    images = [p for p in sorted(test_set.images.iterdir()) if p.is_file() and p.name.rsplit("_", 1)[0] in cases]
    source = {
        "model_folder": str(model.folder),
        "checkpoints": _size_and_time(model.checkpoints()),
        "images": _size_and_time(images),
        "tile_step_size": settings.tile_step_size,
        "use_mirroring": settings.use_mirroring,
    }
    return {**source, "previous_stage": str(previous_stage)} if previous_stage is not None else source


def _size_and_time(paths: Sequence[Path]) -> dict[str, list[int]]:
    stats = {str(path): path.stat() for path in paths}
    return {path: [stat.st_size, stat.st_mtime_ns] for path, stat in stats.items()}


def check_prediction_folder(folder: Path, test_set: TestSet, file_ending: str) -> None:
    """A prediction folder may hold only cases of its test set: others would be scored against no label."""
    if not folder.is_dir():
        return
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if p.name.endswith(file_ending) and p.name[: -len(file_ending)] not in set(test_set.cases)
    )
    if extra:
        raise EvaluationError(
            f"{folder} holds predictions of case(s) that are not in test set {test_set.name!r} "
            f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}): delete them, or use another --out."
        )


def cases_to_predict(
    folder: Path,
    model: TrainedModel,
    test_set: TestSet,
    file_ending: str,
    settings: PredictionSettings,
    overwrite: bool,
    previous_stage: Path | None = None,
) -> list[str]:
    """Cases without a finished prediction made by this model's current checkpoints (all with `overwrite`)."""
    source_file = folder / SOURCE_FILE
    recorded = json.loads(source_file.read_text()) if source_file.is_file() else None
    if overwrite or recorded != prediction_source(model, settings, test_set, previous_stage):
        return list(test_set.cases)
    return [case for case in test_set.cases if not (folder / f"{case}{file_ending}").is_file()]


@contextlib.contextmanager
def _quiet(log: TextIO) -> Iterator[None]:
    """nnU-Net's predictor prints per-case chatter and warnings; they go to the log, the progress bar stays clean
    (a model's CT statistics are in evaluate's notes)."""
    from nnunetv2_dropgen.plans import CTStatisticsWarning  # here: the plans package imports from this one

    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", CTStatisticsWarning)
        yield


def load_predictor(model: TrainedModel, settings: PredictionSettings, log: TextIO) -> nnUNetPredictor:
    """nnU-Net's predictor for `model`, exactly as nnUNetv2_predict sets it up."""
    device = torch.device(settings.device)
    with _quiet(log):
        predictor = nnUNetPredictor(
            tile_step_size=settings.tile_step_size,
            use_gaussian=True,
            use_mirroring=settings.use_mirroring,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(
            str(model.folder), use_folds=model.folds, checkpoint_name=model.spec.checkpoint
        )
    return predictor


def predict_cases(
    predictor: nnUNetPredictor,
    model: TrainedModel,
    test_set: TestSet,
    cases: Sequence[str],
    folder: Path,
    dataset_json: Mapping,
    settings: PredictionSettings,
    log: TextIO,
    previous_stage: Path | None = None,
) -> None:
    """Predict `cases` into `folder`; each file appears there only when complete (see the module docstring).

    Without worker processes cases are predicted one at a time and each is moved as soon as it is done, so an
    interruption loses at most one case; with workers nnU-Net predicts them as one batch, moved at the end.
    previous_stage: for a cascade, the folder holding the previous stage's prediction of every case.
    """
    file_ending = dataset_json["file_ending"]
    source = prediction_source(model, settings, test_set, previous_stage)
    previous = str(previous_stage) if previous_stage is not None else None
    source_file = folder / SOURCE_FILE
    folder.mkdir(parents=True, exist_ok=True)
    if not source_file.is_file() or json.loads(source_file.read_text()) != source:
        for stale in [folder / f"{case}{file_ending}" for case in cases]:
            stale.unlink(missing_ok=True)  # made by another checkpoint: never mix them with the new ones
        write_json_atomic(source_file, source)
    partial = _partial_folder(folder)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    channels = num_channels(dataset_json)
    inputs = [[str(test_set.images / f"{case}_{c:04d}{file_ending}") for c in range(channels)] for case in cases]
    outputs = [str(partial / case) for case in cases]

    def move(case: str) -> None:
        os.replace(partial / f"{case}{file_ending}", folder / f"{case}{file_ending}")

    with _quiet(log):
        if settings.num_processes_preprocessing == 0 and settings.num_processes_export == 0:
            for case, files, output in zip(cases, inputs, outputs, strict=True):
                predictor.predict_from_files_sequential([files], [output], False, True, previous)
                move(case)
        else:
            predictor.predict_from_files(
                inputs,
                outputs,
                save_probabilities=False,
                overwrite=True,
                num_processes_preprocessing=max(1, settings.num_processes_preprocessing),
                num_processes_segmentation_export=max(1, settings.num_processes_export),
                folder_with_segs_from_prev_stage=previous,
            )
            for case in cases:
                move(case)
    shutil.rmtree(partial)
