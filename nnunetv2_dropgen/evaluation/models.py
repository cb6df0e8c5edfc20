"""Trained nnU-Net models: where nnU-Net keeps them, its defaults and names, and what to say when one is missing."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_dropgen.evaluation.defaults import DEFAULT_CHECKPOINT, DEFAULT_CONFIGURATION, DEFAULT_PLANS
from nnunetv2_dropgen.evaluation.errors import EvaluationError
from nnunetv2_dropgen.ext_trainers import trainer_dir

ALL_FOLDS = "all"

Fold = int | str


@dataclass(frozen=True)
class ModelSpec:
    """A model as nnUNetv2_predict names it (-tr, -p, -c, -f, -chk); folds None: those trained."""

    trainer: str
    plans: str = DEFAULT_PLANS
    configuration: str = DEFAULT_CONFIGURATION
    folds: tuple[Fold, ...] | None = None
    checkpoint: str = DEFAULT_CHECKPOINT
    label: str | None = None
    """Its name in tables and figures; default: the trainer (or trainer__plans__configuration if trainers repeat)."""


@dataclass(frozen=True)
class TrainedModel:
    """A model folder found on disk, with the folds to ensemble and its name in tables."""

    spec: ModelSpec
    folder: Path
    folds: tuple[Fold, ...]
    label: str
    previous_stage: str | None = None
    """For a cascade (3d_cascade_fullres): the configuration whose predictions it takes as input (3d_lowres)."""

    @property
    def identifier(self) -> str:
        """A folder name that differs whenever the predictions would (model, folds, checkpoint)."""
        folds = "-".join(str(f) for f in self.folds)
        return f"{self.folder.name}__fold_{folds}__{Path(self.spec.checkpoint).stem}"

    def checkpoints(self) -> list[Path]:
        return [self.folder / f"fold_{fold}" / self.spec.checkpoint for fold in self.folds]


def parse_fold(value: str) -> Fold:
    """'all' or a fold number, as nnUNetv2_predict's -f takes them."""
    if value == ALL_FOLDS:
        return ALL_FOLDS
    try:
        return int(value)
    except ValueError:
        raise EvaluationError(
            f"Fold {value!r} is neither a number nor 'all'; use e.g. -f 0 1 2 3 4 or -f all."
        ) from None


def _folds_with(folder: Path, checkpoint: str) -> list[Fold]:
    """Folds of a model folder holding `checkpoint`: numbered ones first (sorted), then 'all'."""
    numbered, has_all = [], False
    for fold_dir in folder.glob("fold_*"):
        if not (fold_dir / checkpoint).is_file():
            continue
        name = fold_dir.name[len("fold_") :]
        if name == ALL_FOLDS:
            has_all = True
        elif name.isdigit():
            numbered.append(int(name))
    return [*sorted(numbered), *([ALL_FOLDS] if has_all else [])]


def trained_models(dataset_results: Path) -> list[str]:
    """Every trained model under nnUNet_results/DatasetXXX, described as -tr/-p/-c and its folds, for messages."""
    found = []
    for folder in sorted(p for p in dataset_results.glob("*__*__*") if p.is_dir()):
        trainer, plans, configuration = folder.name.split("__", 2)
        folds = sorted(
            {
                str(f)
                for checkpoint in ("checkpoint_final.pth", "checkpoint_best.pth")
                for f in _folds_with(folder, checkpoint)
            }
        )
        described = f"-tr {trainer} -p {plans} -c {configuration}"
        found.append(f"{described} (folds {', '.join(folds)})" if folds else f"{described} (no checkpoint yet)")
    return found


def _describe_spec(spec: ModelSpec) -> str:
    return f"-tr {spec.trainer} -p {spec.plans} -c {spec.configuration}"


def locate_model(dataset_results: Path, spec: ModelSpec) -> TrainedModel:
    """The model folder nnU-Net would use for `spec`, with its folds; a sentence if it or a fold is missing."""
    folder = dataset_results / convert_trainer_plans_config_to_identifier(spec.trainer, spec.plans, spec.configuration)
    if not folder.is_dir():
        existing = trained_models(dataset_results) if dataset_results.is_dir() else []
        there = (
            f"The trained models under {dataset_results} are: {'; '.join(existing)}."
            if existing
            else f"There are no trained models under {dataset_results} yet."
        )
        raise EvaluationError(
            f"No trained model for {_describe_spec(spec)}: {folder} does not exist. {there} "
            "Check -tr/-p/-c (and -d), or train the model first with nnUNetv2_train."
        )
    for required in ("plans.json", "dataset.json"):
        if not (folder / required).is_file():
            raise EvaluationError(
                f"{folder} has no {required}, so it is not a complete nnU-Net model folder; train the model "
                "with nnUNetv2_train (it writes that file at the start of training)."
            )
    available = _folds_with(folder, spec.checkpoint)
    if spec.folds is None:
        numbered = [f for f in available if f != ALL_FOLDS]
        started = {d.name[len("fold_") :] for d in folder.glob("fold_*") if d.is_dir()}
        unfinished = sorted(int(f) for f in started if f.isdigit() and int(f) not in numbered)
        if numbered and unfinished:
            raise EvaluationError(
                f"{_describe_spec(spec)}: fold(s) {', '.join(map(str, unfinished))} have no {spec.checkpoint} yet "
                f"(still training?), so the ensemble would be of fold(s) {', '.join(map(str, numbered))} only. "
                f"Finish them, or name the folds to ensemble with -f {' '.join(map(str, numbered))}."
            )
        folds = tuple(numbered or available)
        if not folds:
            raise EvaluationError(
                f"{folder} has no fold with {spec.checkpoint} ({_describe_spec(spec)} is not trained to the end "
                "yet); finish training, or choose another checkpoint with -chk checkpoint_best.pth."
            )
    else:
        requested = [parse_fold(str(f)) for f in spec.folds]  # 0 and "0" are the same fold
        missing = [f for f in requested if f not in available]
        if missing:
            have = ", ".join(str(f) for f in available) or "none"
            raise EvaluationError(
                f"{_describe_spec(spec)}: fold(s) {', '.join(str(f) for f in missing)} have no {spec.checkpoint} "
                f"in {folder} (folds with it: {have}); choose folds with -f or another checkpoint with -chk."
            )
        folds = tuple(requested)
    previous = PlansManager(str(folder / "plans.json")).get_configuration(spec.configuration).previous_stage_name
    return TrainedModel(spec, folder, folds, spec.label or spec.trainer, previous)


def locate_previous_stage(dataset_results: Path, model: TrainedModel) -> TrainedModel:
    """The model whose predictions a cascade takes: the same trainer, plans, folds and checkpoint, its previous
    configuration (as a user of nnUNetv2_predict runs it by hand first); a sentence when it is not trained."""
    spec = model.spec
    previous = ModelSpec(spec.trainer, spec.plans, str(model.previous_stage), model.folds, spec.checkpoint)
    try:
        return locate_model(dataset_results, previous)
    except EvaluationError as error:
        raise EvaluationError(
            f"{_describe_spec(spec)} is a cascade: it segments each case from the prediction of "
            f"{model.previous_stage}, which evaluate makes with the same trainer, plans and folds, or takes from "
            f"--prev-stage-predictions NAME DIR for every test set. {error}"
        ) from None


def locate_models(dataset_results: Path, specs: Sequence[ModelSpec]) -> list[TrainedModel]:
    """Every requested model; table names are trainers, or trainer__plans__configuration where trainers repeat."""
    if not specs:
        raise EvaluationError("No model to evaluate: name at least one trainer with -tr.")
    models = [locate_model(dataset_results, spec) for spec in specs]
    trainers = [m.spec.trainer for m in models]
    renamed = []
    for model in models:
        label = model.label
        if model.spec.label is None and trainers.count(model.spec.trainer) > 1:
            label = model.folder.name
        renamed.append(TrainedModel(model.spec, model.folder, model.folds, label, model.previous_stage))
    identifiers = [m.identifier for m in renamed]
    labels = [m.label for m in renamed]
    for values, what in (
        (identifiers, "model (same trainer, plans, configuration, folds and checkpoint)"),
        (labels, "name"),
    ):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise EvaluationError(f"The same {what} is requested twice: {', '.join(repeated)}; name each model once.")
    return renamed


@contextlib.contextmanager
def trainer_search_path() -> Iterator[str | None]:
    """Let nnU-Net find the DropGen trainers: their folder is added to nnUNet_extTrainer inside the block.

    Yields a note for the user when the variable had to be changed, None when it already listed the folder;
    the variable is restored afterwards.
    """
    here = str(trainer_dir())
    saved = os.environ.get("nnUNet_extTrainer")
    listed = [p for p in (saved or "").split(os.pathsep) if p]
    if any(Path(p).resolve() == Path(here) for p in listed):
        yield None
        return
    os.environ["nnUNet_extTrainer"] = os.pathsep.join([*listed, here])
    before = "was not set" if not listed else "did not list the DropGen trainers"
    try:
        yield f"nnUNet_extTrainer {before}; using {os.environ['nnUNet_extTrainer']} for this run."
    finally:
        if saved is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = saved


def check_trainer_found(model: TrainedModel) -> None:
    """nnU-Net must find the trainer class to rebuild the network: check that before predicting anything."""
    # nnU-Net prints every folder it searches and imports every trainer module (some warn about deprecated
    # torch APIs); a failure is reported below in one sentence.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            recursive_find_trainer_class_by_name(model.spec.trainer)
        except (RuntimeError, AssertionError):
            raise EvaluationError(
                f"nnU-Net cannot find the trainer class {model.spec.trainer} that {model.folder} was trained with, "
                f"so it cannot rebuild the network (nnUNet_extTrainer={os.environ.get('nnUNet_extTrainer', '')}). "
                "Add the folder of the module that defines it to nnUNet_extTrainer."
            ) from None
