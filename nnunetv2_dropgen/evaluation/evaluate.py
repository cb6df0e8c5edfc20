"""Trained nnU-Net models x named test sets -> predictions, nnU-Net's metrics, a table and a figure.

Everything a run could trip over (models, trainer classes, test sets, options) is checked before the first
prediction, so bad input costs nothing. Predictions are kept under `out/predictions/<model>/<test set>/`
and reused by the next run (see `predict`), so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from nnunetv2_dropgen.evaluation.errors import EvaluationError
from nnunetv2_dropgen.evaluation.figure import SliceRow, annotated, best_slice, save_figure
from nnunetv2_dropgen.evaluation.files import write_json_atomic, write_text_atomic
from nnunetv2_dropgen.evaluation.held_out import check_held_out
from nnunetv2_dropgen.evaluation.metrics import (
    DiceStats,
    current_summary,
    dice_statistics,
    label_names,
    score_folder,
)
from nnunetv2_dropgen.evaluation.models import (
    ModelSpec,
    TrainedModel,
    check_trainer_found,
    locate_models,
    locate_previous_stage,
    trainer_search_path,
)
from nnunetv2_dropgen.evaluation.predict import (
    PredictionSettings,
    cases_to_predict,
    check_prediction_folder,
    load_predictor,
    predict_cases,
    prediction_folder,
    prediction_lock,
)
from nnunetv2_dropgen.evaluation.report import EvaluationTable, to_csv, to_dict, to_markdown
from nnunetv2_dropgen.evaluation.test_sets import TestSet, check_names, check_test_set, discover_test_sets

OUT_FOLDER = "evaluation"
"""Default output folder, inside nnUNet_results/DatasetXXX_Name (beside the models it evaluates)."""
TABLE_STEM = "dice"

SlicePanels = Callable[[TestSet, np.ndarray, int], Sequence[tuple[str, np.ndarray]]]
"""(test set, image (channels, *spatial), slice index) -> extra figure panels (title, 2D array)."""


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate; test_sets None: every imagesTs*/labelsTs* pair of the raw dataset."""

    dataset: str | int
    models: Sequence[ModelSpec]
    test_sets: Sequence[TestSet] | None = None
    baseline: str | None = None
    """A model's name in the table or its trainer; default: the first model."""
    out: Path | None = None
    """Default: nnUNet_results/DatasetXXX_Name/evaluation."""
    overwrite: bool = False
    prediction: PredictionSettings = field(default_factory=PredictionSettings)
    in_domain: Sequence[str] = ()
    figure_name: str = f"{TABLE_STEM}.png"
    title: str | None = None
    slice_panels: SlicePanels | None = None
    previous_stage_predictions: Mapping[str, Path] = field(default_factory=dict)
    """For cascades: test set name -> folder of the previous stage's predictions (else evaluate makes them)."""


@dataclass(frozen=True)
class EvaluationResult:
    table: EvaluationTable
    markdown: str
    files: dict[str, Path]
    """'markdown', 'csv', 'json' and 'figure' -> the file written."""
    models: list[TrainedModel]
    test_sets: list[TestSet]
    predicted: dict[tuple[str, str], int]
    """(model name, test set) -> cases predicted in this run (0: all reused)."""
    notes: list[str]


@dataclass(frozen=True)
class _Plan:
    """Everything checked, nothing written yet."""

    dataset: str
    models: list[TrainedModel]
    test_sets: list[TestSet]
    baseline: str
    out: Path
    dataset_json: dict
    label_manager: LabelManager
    reader: BaseReaderWriter
    notes: list[str]
    previous_stages: dict[str, TrainedModel | None]
    """Cascade model identifier -> the model predicting its input (None: every test set's input was given)."""


def _environment_folder(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise EvaluationError(f"{name} is not set; nnU-Net needs it: export {name}=/path/to/{name}.")
    return Path(value)


def _dataset_name(dataset: str | int) -> str:
    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError):
        raise EvaluationError(
            f"nnU-Net finds no dataset {dataset!r} in nnUNet_raw ({os.environ.get('nnUNet_raw')}), "
            f"nnUNet_preprocessed ({os.environ.get('nnUNet_preprocessed')}) or nnUNet_results "
            f"({os.environ.get('nnUNet_results')}); check -d and those variables."
        ) from None


def _dataset_json(models: Sequence[TrainedModel]) -> dict:
    """The dataset.json the models were trained with; all models must agree on labels, channels and files."""
    contents = [json.loads((m.folder / "dataset.json").read_text()) for m in models]
    keys = ("labels", "file_ending", "channel_names")
    for model, content in zip(models[1:], contents[1:], strict=True):
        differing = [k for k in keys if content.get(k) != contents[0].get(k)]
        if differing:
            raise EvaluationError(
                f"{model.label} and {models[0].label} were trained with different {', '.join(differing)} in their "
                "dataset.json, so one table cannot compare them; evaluate them separately."
            )
    return contents[0]


def _baseline(models: Sequence[TrainedModel], requested: str | None) -> str:
    if requested is None:
        return models[0].label
    for model in models:
        if requested in (model.label, model.spec.trainer, model.folder.name):
            return model.label
    raise EvaluationError(
        f"The baseline {requested!r} is not one of the evaluated models ({', '.join(m.label for m in models)}); "
        "name one of them with --baseline."
    )


def _plan(request: EvaluationRequest, notes: list[str]) -> _Plan:
    """Check everything and decide what goes where; raises EvaluationError with a sentence, writes nothing."""
    results = _environment_folder("nnUNet_results")
    dataset = _dataset_name(request.dataset)
    models = locate_models(results / dataset, request.models)
    for model in models:
        check_trainer_found(model)
        folds = ", ".join(str(f) for f in model.folds)
        notes.append(f"{model.label}: {model.folder.name}, fold(s) {folds} ({model.spec.checkpoint})")
        ct_note = _ct_statistics_note(model)
        if ct_note:
            notes.append(ct_note)
    dataset_json = _dataset_json(models)
    label_manager = PlansManager(str(models[0].folder / "plans.json")).get_label_manager(dataset_json)
    file_ending = dataset_json["file_ending"]

    if request.test_sets is None:
        raw = Path(os.environ.get("nnUNet_raw") or "") / dataset
        if not os.environ.get("nnUNet_raw") or not raw.is_dir():
            raise EvaluationError(
                f"No test sets were named and the raw dataset {raw} is not there to look for imagesTs*/labelsTs* "
                "folders; set nnUNet_raw, or name test sets with --test-set NAME IMAGES_FOLDER LABELS_FOLDER."
            )
        test_sets, discovery_notes = discover_test_sets(raw)
        notes += discovery_notes
    else:
        test_sets = list(request.test_sets)
        if not test_sets:
            raise EvaluationError("No test set to evaluate on: name at least one with --test-set.")
    check_names(test_sets)
    unknown = [name for name in request.in_domain if name not in {t.name for t in test_sets}]
    if unknown:
        raise EvaluationError(
            f"--in-domain names {', '.join(unknown)}, which is not a test set here "
            f"({', '.join(t.name for t in test_sets)})."
        )
    examples = (next(t.images.glob(f"*_0000{file_ending}"), None) for t in test_sets if t.images.is_dir())
    example = next((str(e) for e in examples if e is not None), None)
    reader = determine_reader_writer_from_dataset_json(dataset_json, example, verbose=False)()
    checked = [check_test_set(test_set, dataset_json, reader, label_manager) for test_set in test_sets]
    check_held_out(dataset, dataset_json, models, checked, reader, notes)

    out = (request.out or results / dataset / OUT_FOLDER).resolve()
    previous_stages = _previous_stages(request, results / dataset, models, checked, file_ending, notes)
    for model in [*models, *(m for m in previous_stages.values() if m is not None)]:
        for test_set in checked:
            check_prediction_folder(prediction_folder(out, model, test_set), test_set, file_ending)
    baseline = _baseline(models, request.baseline)
    return _Plan(dataset, models, checked, baseline, out, dataset_json, label_manager, reader, notes, previous_stages)


def _ct_statistics_note(model: TrainedModel) -> str | None:
    """A sentence when the model normalizes a channel with its training set's CT statistics (nnU-Net's
    CTNormalization): test images of another modality are then saturated before the model sees them."""
    from nnunetv2_dropgen.plans import ct_channels  # here: the plans package imports from this one

    plans = json.loads((model.folder / "plans.json").read_text())
    channels = ct_channels(plans, model.spec.configuration)
    if not channels:
        return None
    return (
        f"{model.label} normalizes image channel(s) {', '.join(map(str, channels))} with nnU-Net's CTNormalization "
        "(its CT training set's statistics): test images of another modality (MR) are saturated before it sees "
        "them. For those, train with per-image normalization plans (nnunetv2_dropgen plans "
        "--per-image-normalization; README: 'Train on CT, segment MR')."
    )


def _previous_stages(
    request: EvaluationRequest,
    dataset_results: Path,
    models: Sequence[TrainedModel],
    test_sets: Sequence[TestSet],
    file_ending: str,
    notes: list[str],
) -> dict[str, TrainedModel | None]:
    """For every cascade model, what gives it its previous-stage input; every problem said before anything runs."""
    given = {name: Path(folder) for name, folder in request.previous_stage_predictions.items()}
    cascades = [m for m in models if m.previous_stage is not None]
    if given and not cascades:
        raise EvaluationError(
            "--prev-stage-predictions is for cascade configurations (3d_cascade_fullres), and none of the evaluated "
            "models is one; leave it out."
        )
    unknown = sorted(set(given) - {t.name for t in test_sets})
    if unknown:
        raise EvaluationError(
            f"--prev-stage-predictions names {', '.join(unknown)}, which is not a test set here "
            f"({', '.join(t.name for t in test_sets)})."
        )
    for test_set in test_sets:
        if test_set.name in given:
            missing = [c for c in test_set.cases if not (given[test_set.name] / f"{c}{file_ending}").is_file()]
            if missing:
                raise EvaluationError(
                    f"The previous-stage predictions {given[test_set.name]} for {test_set.name!r} lack case(s) "
                    f"{', '.join(missing[:5])}; predict them with the {cascades[0].previous_stage} model first."
                )
    stages: dict[str, TrainedModel | None] = {}
    for model in cascades:
        if all(t.name in given for t in test_sets):
            stages[model.identifier] = None
            continue
        previous = locate_previous_stage(dataset_results, model)
        check_trainer_found(previous)
        stages[model.identifier] = previous
        notes.append(f"{model.label} is a cascade: its input, {previous.folder.name}'s prediction, is made first.")
    return stages


def _example_row(plan: _Plan, test_set: TestSet, panels: SlicePanels | None) -> SliceRow:
    """The first case of a test set at the slice with the most foreground."""
    file_ending = plan.dataset_json["file_ending"]
    case = test_set.cases[0]
    reference = plan.reader.read_seg(str(test_set.labels / f"{case}{file_ending}"))[0][0]
    ground_truth = annotated(reference, plan.label_manager.ignore_label)
    index = best_slice(ground_truth)
    image, _ = plan.reader.read_images([str(test_set.images / f"{case}_0000{file_ending}")])
    predictions = [
        plan.reader.read_seg(str(prediction_folder(plan.out, m, test_set) / f"{case}{file_ending}"))[0][0][index]
        for m in plan.models
    ]
    extra = list(panels(test_set, image, index)) if panels is not None else []
    return SliceRow(test_set.name, case, index, image[0][index], predictions, ground_truth[index], extra)


def run_evaluation(request: EvaluationRequest, say: Callable[[str], None] = tqdm.write) -> EvaluationResult:
    """Predict what is missing, score every (model, test set) with nnU-Net, write table and figure.

    nnU-Net finds trainers through nnUNet_extTrainer; the DropGen trainers' folder is added for the run.
    """
    with trainer_search_path() as note:
        plan = _plan(request, [note] if note else [])
        for line in plan.notes:
            say(line)
        return _run(request, plan)


class _Predictions:
    """Makes the missing predictions of one model, loading nnU-Net's predictor once, when first needed."""

    def __init__(self, model: TrainedModel, request: EvaluationRequest, plan: _Plan, log: TextIO) -> None:
        self.model, self.request, self.plan, self.log = model, request, plan, log
        self.predictor = None

    def ensure(self, test_set: TestSet, previous_stage: Path | None = None) -> tuple[Path, int]:
        """The folder with this model's prediction of every case of `test_set`, and how many were made now."""
        file_ending = self.plan.dataset_json["file_ending"]
        folder = prediction_folder(self.plan.out, self.model, test_set)
        settings = self.request.prediction
        with prediction_lock(folder):  # another run on the same --out predicts this folder: wait, then reuse
            cases = cases_to_predict(
                folder, self.model, test_set, file_ending, settings, self.request.overwrite, previous_stage
            )
            if cases:
                self.predictor = self.predictor or load_predictor(self.model, settings, self.log)
                predict_cases(
                    self.predictor, self.model, test_set, cases, folder, self.plan.dataset_json, settings, self.log,
                    previous_stage,
                )  # fmt: skip
        return folder, len(cases)


def _run(request: EvaluationRequest, plan: _Plan) -> EvaluationResult:
    file_ending = plan.dataset_json["file_ending"]
    names = label_names(plan.dataset_json, plan.label_manager)
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dice: dict[str, dict[str, dict[str, DiceStats]]] = {t.name: {} for t in plan.test_sets}
    predicted: dict[tuple[str, str], int] = {}
    pairs = [(m, t) for m in plan.models for t in plan.test_sets]
    given = {name: Path(folder) for name, folder in request.previous_stage_predictions.items()}
    with tqdm(total=len(pairs), desc="evaluate", unit="set", disable=None) as progress:
        for model in plan.models:
            with open(logs / f"predict_{model.identifier}.log", "a") as log:
                predictions = _Predictions(model, request, plan, log)
                previous_model = plan.previous_stages.get(model.identifier)
                previous = _Predictions(previous_model, request, plan, log) if previous_model else None
                for test_set in plan.test_sets:
                    progress.set_postfix_str(f"{model.label} on {test_set.name}")
                    previous_stage = None
                    if model.previous_stage is not None:
                        previous_stage = given.get(test_set.name) or previous.ensure(test_set)[0]
                    folder, made = predictions.ensure(test_set, previous_stage)
                    predicted[(model.label, test_set.name)] = made
                    summary = (
                        None
                        if made
                        else current_summary(test_set.labels, folder, test_set.cases, file_ending, list(names))
                    )
                    if summary is None:
                        summary = score_folder(test_set.labels, folder, file_ending, plan.reader, plan.label_manager)
                    dice[test_set.name][model.label] = dice_statistics(summary, names)
                    progress.update()

    table = EvaluationTable(
        models=tuple(m.label for m in plan.models),
        baseline=plan.baseline,
        test_sets=tuple(t.name for t in plan.test_sets),
        labels=tuple(names.values()),
        dice=dice,
        in_domain=tuple(request.in_domain),
    )
    markdown = to_markdown(table)
    files = {
        "markdown": write_text_atomic(plan.out / f"{TABLE_STEM}.md", markdown + "\n"),
        "csv": write_text_atomic(plan.out / f"{TABLE_STEM}.csv", to_csv(table)),
        "json": write_json_atomic(plan.out / f"{TABLE_STEM}.json", _json(plan, table)),
    }
    rows = [_example_row(plan, t, request.slice_panels) for t in plan.test_sets]
    title = request.title or f"{plan.dataset}: Dice per test set (baseline {plan.baseline})"
    files["figure"] = save_figure(
        plan.out / request.figure_name, rows, table, int(max(plan.label_manager.all_labels)), title
    )
    return EvaluationResult(table, markdown, files, plan.models, plan.test_sets, predicted, plan.notes)


def _json(plan: _Plan, table: EvaluationTable) -> dict:
    models = [
        {
            "name": m.label,
            "trainer": m.spec.trainer,
            "plans": m.spec.plans,
            "configuration": m.spec.configuration,
            "folds": list(m.folds),
            "checkpoint": m.spec.checkpoint,
            "folder": str(m.folder),
            "predictions": str(plan.out / "predictions" / m.identifier),
        }
        for m in plan.models
    ]
    test_sets = [
        {"name": t.name, "images": str(t.images), "labels": str(t.labels), "cases": list(t.cases)}
        for t in plan.test_sets
    ]
    return {"dataset": plan.dataset, "model_details": models, "test_set_details": test_sets, **to_dict(table)}
