"""`nnunetv2_dropgen evaluate`: the table, the figure, resuming, and every bad input stopping before anything runs.

The fast tests use model folders made by hand (plans, dataset.json, empty checkpoints): everything they
check happens before a checkpoint is opened. The end-to-end tests train two real models with the demo's
tiny schedule on a tiny synthetic dataset (once per module) and evaluate them on two test sets.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from _plans import make_plans
from _tiny_dataset import write_tiny_dataset
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_dropgen.cli import evaluate_command
from nnunetv2_dropgen.evaluation import EvaluationRequest, ModelSpec, TestSet, metrics, run_evaluation
from nnunetv2_dropgen.evaluation import evaluate as evaluate_module
from nnunetv2_dropgen.evaluation.figure import DPI, figure_inches
from nnunetv2_dropgen.evaluation.files import write_json_atomic
from nnunetv2_dropgen.evaluation.metrics import FOREGROUND, DiceStats, dice_statistics, label_names
from nnunetv2_dropgen.evaluation.models import locate_model
from nnunetv2_dropgen.evaluation.predict import (
    SOURCE_FILE,
    PredictionSettings,
    cases_to_predict,
    prediction_lock,
    prediction_source,
)
from nnunetv2_dropgen.evaluation.report import HELD_OUT_MEAN_ROW, EvaluationTable, to_csv, to_dict, to_markdown
from nnunetv2_dropgen.evaluation.test_sets import discover_test_sets
from nnunetv2_dropgen.synthetic import generate_dataset

FAST_ID, E2E_ID = 960, 961
BASELINE, DROPGEN = "nnUNetTrainer_demoTiny", "DropGenTrainer_minimix_demoTiny"
MODEL_FOLDER = "{}__nnUNetPlans__3d_fullres"


def evaluate_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    return error


# --- fast: hand-made model folders ---------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A raw synthetic dataset with two test sets and a 'trained' nnUNetTrainer folder (fold all, empty checkpoint)."""
    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    raw = generate_dataset(
        folders["nnUNet_raw"], dataset_id=FAST_ID, name="EvalFast", num_train=1, num_test_per_domain=2,
        shape=(16, 16, 16), domains=["inverted"],
    )  # fmt: skip
    model = folders["nnUNet_results"] / raw.name / MODEL_FOLDER.format("nnUNetTrainer")
    (model / "fold_all").mkdir(parents=True)
    (model / "fold_all" / "checkpoint_final.pth").touch()
    (model / "plans.json").write_text(json.dumps(make_plans()))
    shutil.copy(raw / "dataset.json", model / "dataset.json")
    return {"raw": raw, "model": model, "out": tmp_path / "out", "tmp": tmp_path}


def copy_test_set(fake: dict[str, Path], name: str = "source") -> tuple[Path, Path]:
    images, labels = fake["tmp"] / "images", fake["tmp"] / "labels"
    shutil.copytree(fake["raw"] / f"imagesTs_{name}", images)
    shutil.copytree(fake["raw"] / f"labelsTs_{name}", labels)
    return images, labels


def write_label(path: Path, value: int) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    array[0, 0, 0] = value
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def test_default_test_sets_are_the_imagests_labelsts_pairs(tmp_path: Path) -> None:
    for folder in ("imagesTs", "labelsTs", "imagesTs_siteB", "labelsTs_siteB", "imagesTs_unlabelled", "imagesTr"):
        (tmp_path / folder).mkdir()
    test_sets, notes = discover_test_sets(tmp_path)
    assert [(t.name, t.images.name, t.labels.name) for t in test_sets] == [
        ("Ts", "imagesTs", "labelsTs"),
        ("siteB", "imagesTs_siteB", "labelsTs_siteB"),
    ]
    assert notes == ["imagesTs_unlabelled has no labelsTs_unlabelled beside it, so it cannot be scored: skipped."]


def test_a_missing_model_says_what_was_looked_for_and_what_exists(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "DropGenTrainer", "--out", str(fake["out"])) == 1
    error = error_of(capsys)
    looked_for = fake["model"].parent / MODEL_FOLDER.format("DropGenTrainer")
    assert f"No trained model for -tr DropGenTrainer -p nnUNetPlans -c 3d_fullres: {looked_for} does not exist" in error
    assert "-tr nnUNetTrainer -p nnUNetPlans -c 3d_fullres (folds all)" in error
    assert not fake["out"].exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-f", "0"], "fold(s) 0 have no checkpoint_final.pth in"),
        (["-chk", "checkpoint_best.pth"], "has no fold with checkpoint_best.pth"),
        (["-c", "2d"], "No trained model for -tr nnUNetTrainer -p nnUNetPlans -c 2d"),
        (["-f", "one"], "Fold 'one' is neither a number nor 'all'"),
        (["--baseline", "DropGenTrainer"], "The baseline 'DropGenTrainer' is not one of the evaluated models"),
        (["--in-domain", "siteZ"], "--in-domain names siteZ, which is not a test set here (inverted, source)"),
    ],
)
def test_bad_options_are_one_sentence_and_write_nothing(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"]), *argv) == 1
    assert expected in error_of(capsys)
    assert not fake["out"].exists()


def test_folds_still_training_are_not_left_out_of_the_ensemble_silently(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for fold in ("fold_0", "fold_1"):
        (fake["model"] / fold).mkdir()
    (fake["model"] / "fold_0" / "checkpoint_final.pth").touch()  # fold 1 has begun, not finished
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"])) == 1
    error = error_of(capsys)
    assert (
        "fold(s) 1 have no checkpoint_final.pth yet (still training?), so the ensemble would be of fold(s) 0" in error
    )
    assert "name the folds to ensemble with -f 0." in error
    assert not fake["out"].exists()


def break_missing_label(images: Path, labels: Path) -> str:
    (labels / "test_001.nii.gz").unlink()
    return f"case(s) test_001 have images but no label file in {labels}"


def break_extra_label(images: Path, labels: Path) -> str:
    shutil.copy(labels / "test_001.nii.gz", labels / "test_009.nii.gz")
    return f"label file(s) of case(s) test_009 have no images in {images}"


def break_label_value(images: Path, labels: Path) -> str:
    write_label(labels / "test_000.nii.gz", 7)
    return "contains label value(s) 7 (in case(s) test_000) that the model's dataset.json does not define (it defines 0"


def break_channels(images: Path, labels: Path) -> str:
    shutil.copy(images / "test_000_0000.nii.gz", images / "test_000_0001.nii.gz")
    return f"names 1 image channel(s) (_0000 to _0000), but in {images} case test_000 has channel(s) _0000, _0001"


def break_naming(images: Path, labels: Path) -> str:
    (images / "test_000_0000.nii.gz").rename(images / "test_000.nii.gz")
    return "test_000.nii.gz in"


def break_labels_folder(images: Path, labels: Path) -> str:
    shutil.rmtree(labels)
    return f"the labels folder {labels} does not exist (a test set needs ground truth to be scored)"


@pytest.mark.parametrize(
    "damage",
    [break_missing_label, break_extra_label, break_label_value, break_channels, break_naming, break_labels_folder],
)
def test_a_bad_test_set_is_one_sentence_before_anything_runs(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str], damage
) -> None:
    images, labels = copy_test_set(fake)
    expected = damage(images, labels)
    argv = ["-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"])]
    assert evaluate_cli(*argv, "--test-set", "mine", str(images), str(labels)) == 1
    error = error_of(capsys)
    assert expected in error and "Test set 'mine'" in error
    assert not fake["out"].exists()


def test_test_set_names_must_be_usable_as_folder_names(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = copy_test_set(fake)
    argv = ["-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"])]
    assert evaluate_cli(*argv, "--test-set", "../up", str(images), str(labels)) == 1
    assert "Test set name '../up' cannot be used" in error_of(capsys)
    assert evaluate_cli(*argv, *(["--test-set", "a", str(images), str(labels)] * 2)) == 1
    assert "Two test sets are called 'a'" in error_of(capsys)


def test_a_model_with_ct_statistics_is_named_before_anything_runs(fake: dict[str, Path]) -> None:
    """nnUNetv2_predict clips an MR image to the CT training set's range without a word: evaluate says so."""
    request = EvaluationRequest(dataset=FAST_ID, models=[ModelSpec("nnUNetTrainer")], out=fake["out"])
    notes: list[str] = []
    evaluate_module._plan(request, notes)
    assert not any("CTNormalization" in note for note in notes)
    plans = make_plans()
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"]
    (fake["model"] / "plans.json").write_text(json.dumps(plans))
    evaluate_module._plan(request, notes)
    assert any("normalizes image channel(s) 0 with nnU-Net's CTNormalization" in note for note in notes), notes
    assert any("nnunetv2_dropgen plans --per-image-normalization" in note for note in notes)


def test_a_trainer_nnunet_cannot_find_is_reported_before_predicting(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = fake["model"].parent / MODEL_FOLDER.format("NoSuchTrainer")
    shutil.copytree(fake["model"], unknown)
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "NoSuchTrainer", "--out", str(fake["out"])) == 1
    error = error_of(capsys)
    assert f"nnU-Net cannot find the trainer class NoSuchTrainer that {unknown} was trained with" in error
    assert "nnUNet_extTrainer" not in os.environ or "NoSuchTrainer" not in os.environ["nnUNet_extTrainer"]
    assert not fake["out"].exists()


def test_predictions_of_cases_outside_the_test_set_are_not_scored_silently(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model_id = "nnUNetTrainer__nnUNetPlans__3d_fullres__fold_all__checkpoint_final"
    stray = fake["out"] / "predictions" / model_id / "source" / "old_case.nii.gz"
    stray.parent.mkdir(parents=True)
    stray.touch()
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"])) == 1
    assert "holds predictions of case(s) that are not in test set 'source' (old_case.nii.gz)" in error_of(capsys)
    assert sorted(p.name for p in stray.parent.iterdir()) == ["old_case.nii.gz"]


def test_predictions_of_a_retrained_model_are_not_reused(fake: dict[str, Path]) -> None:
    model = locate_model(fake["model"].parent, ModelSpec("nnUNetTrainer"))
    test_set = TestSet("source", fake["raw"] / "imagesTs_source", fake["raw"] / "labelsTs_source", ("a", "b"))
    folder, settings = fake["out"] / "predictions", PredictionSettings()
    folder.mkdir(parents=True)
    (folder / "a.nii.gz").touch()
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=False) == ["a", "b"]  # no record
    write_json_atomic(folder / SOURCE_FILE, prediction_source(model, settings, test_set))
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=False) == ["b"]
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=True) == ["a", "b"]
    other_settings = PredictionSettings(use_mirroring=False)
    assert cases_to_predict(folder, model, test_set, ".nii.gz", other_settings, overwrite=False) == ["a", "b"]
    checkpoint = model.checkpoints()[0]
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))  # trained again
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=False) == ["a", "b"]


def test_predictions_of_test_images_written_again_are_not_reused(fake: dict[str, Path]) -> None:
    """make-synthetic --overwrite, or a fixed image under the same case id: the old prediction must not be scored
    against the new labels."""
    model = locate_model(fake["model"].parent, ModelSpec("nnUNetTrainer"))
    images = fake["raw"] / "imagesTs_source"
    cases = tuple(sorted({p.name.rsplit("_", 1)[0] for p in images.iterdir()}))
    test_set = TestSet("source", images, fake["raw"] / "labelsTs_source", cases)
    folder, settings = fake["out"] / "predictions", PredictionSettings()
    folder.mkdir(parents=True)
    for case in cases:
        (folder / f"{case}.nii.gz").touch()
    write_json_atomic(folder / SOURCE_FILE, prediction_source(model, settings, test_set))
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=False) == []
    image = next(images.iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # written again
    assert cases_to_predict(folder, model, test_set, ".nii.gz", settings, overwrite=False) == list(cases)


def test_no_labelled_test_set_in_the_raw_dataset_asks_for_test_sets(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in fake["raw"].glob("labelsTs_*"):
        shutil.rmtree(folder)
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"])) == 1
    assert "--test-set NAME IMAGES_FOLDER LABELS_FOLDER" in error_of(capsys)


def reuse_training_case(fake: dict[str, Path], test_set: str = "source") -> Path:
    """Case case_000 of imagesTr/labelsTr copied into a test set (as a leave-one-site-out imagesTs_<site> would)."""
    raw = fake["raw"]
    shutil.copy(raw / "imagesTr" / "case_000_0000.nii.gz", raw / f"imagesTs_{test_set}" / "case_000_0000.nii.gz")
    shutil.copy(raw / "labelsTr" / "case_000.nii.gz", raw / f"labelsTs_{test_set}" / "case_000.nii.gz")
    return raw / f"imagesTs_{test_set}" / "case_000_0000.nii.gz"


def add_folds(fake: dict[str, Path], splits: list[dict[str, list[str]]] | None) -> Path:
    """Folds 0 and 1 'trained' (empty checkpoints), and nnU-Net's splits_final.json for them (None: no file)."""
    for fold in (0, 1):
        (fake["model"] / f"fold_{fold}").mkdir()
        (fake["model"] / f"fold_{fold}" / "checkpoint_final.pth").touch()
    splits_file = Path(os.environ["nnUNet_preprocessed"]) / fake["raw"].name / "splits_final.json"
    if splits is not None:
        splits_file.parent.mkdir(parents=True)
        splits_file.write_text(json.dumps(splits))
    return splits_file


def test_a_test_case_the_model_trained_on_is_refused_before_anything_runs(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Fold 'all' trained on every case of imagesTr; in-domain test sets are not exempt (unseen cases, too)."""
    reuse_training_case(fake)
    argv = ["-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--out", str(fake["out"]), "--in-domain", "source"]
    assert evaluate_cli(*argv) == 1
    error = error_of(capsys)
    assert "Test set 'source': case(s) 'case_000' are training cases of nnUNetTrainer (fold(s) all of all;" in error
    assert f"the same image as {fake['raw'] / 'imagesTr' / 'case_000_0000.nii.gz'}" in error
    assert "fold 'all' trains on every training case" in error and "move those cases out of the test set" in error
    assert not fake["out"].exists()


def test_a_test_case_is_compared_by_its_image_not_only_its_id(fake: dict[str, Path]) -> None:
    """Synthetic benchmarks reuse ids for other images; the same voxels written again are the same case."""
    image = reuse_training_case(fake, "inverted")
    shutil.copy(fake["raw"] / "imagesTs_inverted" / "test_000_0000.nii.gz", image)  # another image, same id
    request = EvaluationRequest(dataset=FAST_ID, models=[ModelSpec("nnUNetTrainer")], out=fake["out"])
    evaluate_module._plan(request, [])
    training = sitk.ReadImage(str(fake["raw"] / "imagesTr" / "case_000_0000.nii.gz"))
    training.SetOrigin((5.0, 5.0, 5.0))  # other bytes, the same voxel values
    sitk.WriteImage(training, str(image))
    with pytest.raises(evaluate_module.EvaluationError, match="Test set 'inverted': case.s. 'case_000' are training"):
        evaluate_module._plan(request, [])


def test_only_folds_that_trained_on_a_test_case_are_refused(fake: dict[str, Path]) -> None:
    """Leave-one-site-out: fold 1 validates on the test site, fold 0 trains on it (nnU-Net's splits_final.json)."""
    reuse_training_case(fake)
    splits_file = add_folds(fake, [{"train": ["case_000"], "val": []}, {"train": [], "val": ["case_000"]}])

    def plan(folds: tuple[int, ...] | None) -> None:
        model = ModelSpec("nnUNetTrainer", folds=folds)
        evaluate_module._plan(EvaluationRequest(dataset=FAST_ID, models=[model], out=fake["out"]), [])

    with pytest.raises(evaluate_module.EvaluationError) as refused:
        plan(None)  # the default: the ensemble of every trained fold
    assert "(fold(s) 0 of 0, 1;" in str(refused.value) and f"fold 0's train list in {splits_file}" in str(refused.value)
    assert "Evaluate only the fold(s) that did not train on them, -f 1" in str(refused.value)
    plan((1,))
    splits_file.unlink()  # nnU-Net's default split needs 5 cases: with 1, every training case counts
    with pytest.raises(evaluate_module.EvaluationError, match=f"{splits_file} is not there, so every training case"):
        plan((1,))


def test_without_splits_final_a_fold_trained_on_the_split_nnunet_writes(tmp_path: Path) -> None:
    """nnU-Net writes its 5-fold split (sorted ids, seed 12345) when it trains a fold without splits_final.json:
    fold k held out that split's validation cases, whether or not the file is still there."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from nnunetv2_dropgen.evaluation.held_out import fold_cases

    cases = [f"case_{i:03d}" for i in range(10)]
    expected = generate_crossval_split(cases, seed=12345, n_splits=5)[1]
    found = fold_cases(1, cases, tmp_path)
    assert found.cases == frozenset(expected["train"]) and not found.cases & set(expected["val"])
    assert "5-fold split nnU-Net writes" in found.source
    assert fold_cases(1, cases[:4], tmp_path).cases == frozenset(cases[:4]), "too few cases for nnU-Net's split"


def test_dice_statistics_are_mean_and_spread_of_the_same_per_case_values() -> None:
    """nnU-Net's foreground_mean (0.55: the mean of the label means 0.8 and 0.3) is no mean over cases once a case
    has no Dice for a label (NaN: in neither reference nor prediction); its spread was of the per-case values."""
    nan = math.nan
    cases = [{1: 0.8, 2: 0.4}, {1: 0.6, 2: nan}, {1: 1.0, 2: 0.2}, {1: nan, 2: nan}]
    summary = {
        "metric_per_case": [{"metrics": {k: {"Dice": v} for k, v in case.items()}} for case in cases],
        "mean": {1: {"Dice": 0.8}, 2: {"Dice": 0.3}},
        "foreground_mean": {"Dice": 0.55},
    }
    stats = dice_statistics(summary, {1: "liver", 2: "tumour"})
    assert stats["liver"] == DiceStats(pytest.approx(0.8), pytest.approx(np.std([0.8, 0.6, 1.0])), 3, 1)
    assert stats["tumour"] == DiceStats(pytest.approx(0.3), pytest.approx(0.1), 2, 2)
    assert stats[FOREGROUND] == DiceStats(pytest.approx(0.6), pytest.approx(0.0), 3, 1)  # per case 0.6, 0.6, 0.6
    nothing = dice_statistics({"metric_per_case": [{"metrics": {1: {"Dice": nan}}}]}, {1: "liver"})
    assert math.isnan(nothing["liver"].mean) and (nothing["liver"].num_cases, nothing["liver"].num_without_dice) == (
        0,
        1,
    )


def test_the_table_says_which_std_and_how_many_cases_have_a_dice() -> None:
    table = small_table()
    partly = DiceStats(0.5, 0.1, 3, 1)  # one of four cases without a Dice
    table.dice["siteB"]["dg"].update({"a": partly, FOREGROUND: partly})  # type: ignore[union-attr]
    lines = to_markdown(table).splitlines()
    assert "mean ± population std (ddof 0)" in lines[0] and "population std (ddof 0)" in lines[lines.index("", 2) + 1]
    row = next(line for line in lines if line.startswith("| siteB ") and "| a " not in line)
    assert [c.strip() for c in row.strip("|").split("|")][1:3] == ["4", "0.500 ± 0.100 (n=3)"]
    assert next(line for line in lines if line.startswith("| siteB ") and "| a " in line).count("(n=3)") == 1
    data = to_dict(table)
    assert "population std (ddof 0)" in data["statistics"]
    entry = data["dice"]["siteB"]["dg"]["labels"]["a"]
    assert (entry["std"], entry["num_cases"], entry["num_cases_without_dice"]) == (0.1, 3, 1)
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    row = next(r for r in rows if (r["test_set"], r["model"], r["label"]) == ("siteB", "dg", FOREGROUND))
    assert (row["num_cases"], row["num_cases_without_dice"]) == ("3", "1")


def test_the_figure_draws_no_bar_for_a_dice_that_is_nan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN drawn as a bar of 0 reads as a model that failed every case; it gets an 'n/a' mark instead."""
    from matplotlib.axes import Axes

    from nnunetv2_dropgen.evaluation.figure import save_figure

    heights: list[float] = []
    marks: list[str] = []
    bar, text = Axes.bar, Axes.text
    monkeypatch.setattr(
        Axes, "bar", lambda self, x, height, *a, **k: heights.extend(height) or bar(self, x, height, *a, **k)
    )
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: marks.append(s) or text(self, x, y, s, *a, **k))
    save_figure(tmp_path / "dice.png", [], small_table(), 1, "title")
    # dg on siteC and dg's held-out mean (over siteB and siteC) are NaN; the other 6 bars are drawn
    assert len(heights) == 6 and not any(math.isnan(h) or h == 0 for h in heights), heights
    assert marks.count("n/a") == 2


def _label_folders(root: Path, num_cases: int) -> tuple[Path, Path]:
    """References and imperfect predictions (labels 0-2, an ignore label 3 in the references)."""
    rng = np.random.default_rng(0)
    reference, predictions = root / "reference", root / "predictions"
    for folder in (reference, predictions):
        folder.mkdir()
    for index in range(num_cases):
        labels = rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint8)
        predicted = np.where(rng.random(labels.shape) < 0.3, rng.integers(0, 3, size=labels.shape), labels)
        labels[0] = 3
        for array, folder in ((labels, reference), (predicted.astype(np.uint8), predictions)):
            sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"case_{index}.nii.gz"))
    return reference, predictions


def test_few_cases_are_scored_in_process_exactly_as_nnunets_worker_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, predictions = _label_folders(tmp_path, 3)
    manager = LabelManager({"background": 0, "a": 1, "b": 2, "ignore": 3}, regions_class_order=None)
    ours = metrics.score_folder(reference, predictions, ".nii.gz", SimpleITKIO(), manager)
    ours_file = (predictions / metrics.SUMMARY_FILE).read_text()
    monkeypatch.setattr(metrics, "IN_PROCESS_MAX_CASES", 0)
    pooled = metrics.score_folder(reference, predictions, ".nii.gz", SimpleITKIO(), manager)
    assert ours == pooled and ours["metric_per_case"][0]["metrics"][1]["n_ref"] > 0
    assert ours_file == (predictions / metrics.SUMMARY_FILE).read_text()
    (predictions / "case_1.nii.gz").unlink()
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="lacks predictions of case_1.nii.gz"):
        metrics.score_folder(reference, predictions, ".nii.gz", SimpleITKIO(), manager)


def test_label_names_follow_dataset_json_for_labels_and_regions() -> None:
    labels = {"background": 0, "liver": 1, "tumour": 2}
    assert label_names({"labels": labels}, LabelManager(labels, None)) == {1: "liver", 2: "tumour"}
    regions = {"background": 0, "whole": [1, 2], "core": 2}
    assert label_names({"labels": regions}, LabelManager(regions, [1, 2])) == {(1, 2): "whole", 2: "core"}


def small_table() -> EvaluationTable:
    def stats(mean: float, std: float = 0.1) -> DiceStats:
        return DiceStats(mean, std, 4)

    dice = {
        "siteA": {"erm": {"a": stats(0.9), FOREGROUND: stats(0.9)}, "dg": {"a": stats(0.85), FOREGROUND: stats(0.8)}},
        "siteB": {"erm": {"a": stats(0.2), FOREGROUND: stats(0.3)}, "dg": {"a": stats(0.7), FOREGROUND: stats(0.6)}},
        "siteC": {
            "erm": {"a": stats(0.5), FOREGROUND: stats(0.5)},
            "dg": {"a": stats(math.nan, math.nan), FOREGROUND: stats(math.nan, math.nan)},
        },
    }
    return EvaluationTable(("dg", "erm"), "erm", ("siteA", "siteB", "siteC"), ("a",), dice, in_domain=("siteA",))


def test_the_table_gives_differences_to_the_baseline_and_a_held_out_mean() -> None:
    table = small_table()
    lines = to_markdown(table).splitlines()
    first_table = lines[: lines.index("", 2)]
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.strip("|").split("|")] for row in first_table[2:]}
    assert cells["test set"] == ["test set", "cases", "dg", "erm (baseline)", "Δ dg"]
    assert cells["siteA (in-domain)"] == ["siteA (in-domain)", "4", "0.800 ± 0.100", "0.900 ± 0.100", "-0.100"]
    assert cells["siteB"][2:] == ["0.600 ± 0.100", "0.300 ± 0.100", "+0.300"]
    assert cells["siteC"][2:] == ["n/a", "0.500 ± 0.100", "n/a"]
    assert cells[HELD_OUT_MEAN_ROW][2:] == ["n/a", "0.400", "n/a"]  # siteA left out; a NaN stays visible

    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    row = next(r for r in rows if (r["test_set"], r["model"], r["label"]) == ("siteB", "dg", "a"))
    assert float(row["dice_mean"]) == 0.7 and float(row["difference_to_baseline"]) == pytest.approx(0.5)
    assert (
        next(r for r in rows if r["test_set"] == HELD_OUT_MEAN_ROW and r["model"] == "erm")["dice_mean"] == "0.400000"
    )
    data = to_dict(table)
    assert data["summary"] == {"row": HELD_OUT_MEAN_ROW, "test_sets": ["siteB", "siteC"], "foreground_mean": {
        "dg": pytest.approx(math.nan, nan_ok=True), "erm": pytest.approx(0.4)}}  # fmt: skip
    assert data["dice"]["siteB"]["dg"]["foreground_mean"]["difference_to_baseline"] == pytest.approx(0.3)


# --- end to end: two trained models, two test sets -------------------------------------------------------------


def nnunet(*args: str, **env: str) -> None:
    command = [str(Path(sys.executable).parent / args[0]), *args[1:]]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{(done.stdout + done.stderr)[-4000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Dataset 961 planned, two demo-schedule models trained on it (fold all), evaluated once."""
    raw = generate_dataset(
        os.environ["nnUNet_raw"], dataset_id=E2E_ID, name="EvalEndToEnd", num_train=2, num_test_per_domain=2,
        shape=(32, 32, 32), domains=["inverted"],
    )  # fmt: skip
    nnunet("nnUNetv2_plan_and_preprocess", "-d", str(E2E_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    from nnunetv2_dropgen.ext_trainers import trainer_dir

    for trainer in (BASELINE, DROPGEN):  # DropGen with the embedded extractor: no download, no ../shared
        nnunet(
            "nnUNetv2_train", str(E2E_ID), "3d_fullres", "all", "-tr", trainer, "-device", "cpu",
            nnUNet_extTrainer=str(trainer_dir()),
        )  # fmt: skip
    out = tmp_path_factory.mktemp("evaluation")
    request = EvaluationRequest(E2E_ID, [ModelSpec(BASELINE), ModelSpec(DROPGEN)], out=out, in_domain=("source",))
    result = run_evaluation(request)
    return {"raw": raw, "out": out, "request": request, "result": result}


def to_csv_values(path: Path) -> dict[tuple[str, str, str], float]:
    return {(r["test_set"], r["model"], r["label"]): float(r["dice_mean"]) for r in csv.DictReader(path.open())}


def prediction_dir(trained: dict, trainer: str, test_set: str) -> Path:
    return trained["out"] / "predictions" / f"{MODEL_FOLDER.format(trainer)}__fold_all__checkpoint_final" / test_set


@pytest.mark.slow
def test_the_table_holds_nnunets_own_metrics(trained: dict) -> None:
    result = trained["result"]
    data = json.loads(result.files["json"].read_text())
    assert data["test_sets"] == ["inverted", "source"] and data["models"] == [BASELINE, DROPGEN]
    assert data["baseline"] == BASELINE and data["summary"]["test_sets"] == ["inverted"]
    labels = ["blob", "shell", "torus"]  # dataset.json names each label by its kind
    assert data["labels"] == labels
    for trainer in (BASELINE, DROPGEN):
        for test_set in ("inverted", "source"):
            predictions = prediction_dir(trained, trainer, test_set)
            independent = compute_metrics_on_folder(
                str(trained["raw"] / f"labelsTs_{test_set}"), str(predictions), None, SimpleITKIO(), ".nii.gz",
                [1, 2, 3], num_processes=1,
            )  # fmt: skip
            ours = data["dice"][test_set][trainer]
            per_case = [np.nanmean([m["Dice"] for m in c["metrics"].values()]) for c in independent["metric_per_case"]]
            assert ours["foreground_mean"]["mean"] == pytest.approx(np.mean(per_case))
            assert ours["foreground_mean"]["std"] == pytest.approx(np.std(per_case))
            assert (ours["foreground_mean"]["num_cases"], ours["foreground_mean"]["num_cases_without_dice"]) == (2, 0)
            for value, name in enumerate(labels, start=1):
                per_case = [case["metrics"][value]["Dice"] for case in independent["metric_per_case"]]
                assert ours["labels"][name]["mean"] == pytest.approx(independent["mean"][value]["Dice"])
                assert ours["labels"][name]["std"] == pytest.approx(np.nanstd(per_case))
            baseline = data["dice"][test_set][BASELINE]["foreground_mean"]["mean"]
            assert ours["foreground_mean"]["difference_to_baseline"] == pytest.approx(
                ours["foreground_mean"]["mean"] - baseline
            )
    rows = list(csv.DictReader(result.files["csv"].open()))
    row = next(r for r in rows if (r["test_set"], r["model"], r["label"]) == ("inverted", DROPGEN, FOREGROUND))
    expected = data["dice"]["inverted"][DROPGEN]["foreground_mean"]["mean"]
    assert float(row["dice_mean"]) == pytest.approx(expected, abs=1e-6)
    assert result.files["markdown"].read_text().strip() == result.markdown


@pytest.mark.slow
def test_the_figure_has_a_row_per_test_set_and_a_column_per_model(trained: dict) -> None:
    figure = trained["result"].files["figure"]
    pixels = matplotlib.image.imread(figure)
    width, height = figure_inches(2, 1 + 2 + 1)  # image, two predictions, ground truth; two test sets
    assert pixels.shape[:2] == (round(height * DPI), round(width * DPI))
    assert pixels[..., :3].std() > 0.05


@pytest.mark.slow
def test_a_rerun_after_an_interruption_predicts_only_the_missing_case(trained: dict) -> None:
    """As a kill leaves it: one prediction never finished, a truncated file in the partial folder."""
    first = to_csv_values(trained["result"].files["csv"])
    missing = prediction_dir(trained, DROPGEN, "inverted") / "test_001.nii.gz"
    missing.unlink()
    partial = missing.parent.parent / ".inverted.partial"
    partial.mkdir()
    partial.joinpath("test_001.nii.gz").write_bytes(b"\x1f\x8b truncated")
    kept = prediction_dir(trained, BASELINE, "inverted") / "test_001.nii.gz"
    kept_summary = kept.parent / "summary.json"
    before = (kept.stat().st_mtime_ns, kept_summary.stat().st_mtime_ns)

    result = run_evaluation(trained["request"])
    assert result.predicted == {
        (BASELINE, "inverted"): 0,
        (BASELINE, "source"): 0,
        (DROPGEN, "inverted"): 1,
        (DROPGEN, "source"): 0,
    }
    assert missing.is_file() and not partial.exists()
    assert (kept.stat().st_mtime_ns, kept_summary.stat().st_mtime_ns) == before  # neither predicted nor scored again
    assert to_csv_values(result.files["csv"]) == pytest.approx(first)


@pytest.mark.slow
def test_a_second_run_on_the_same_out_waits_for_the_first_and_reuses_its_predictions(
    trained: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As two benchmark runs sharing a --workdir: while one holds a prediction folder the other does not even
    look into it, and once it is released it finds the case the first predicted meanwhile."""
    folder = prediction_dir(trained, BASELINE, "inverted")  # the first (model, test set) a run evaluates
    case = folder / "test_000.nii.gz"
    first_runs_prediction = case.read_bytes()
    case.unlink()
    looked = threading.Event()

    def spy(checked: Path, *args: object, **kwargs: object) -> list[str]:
        if checked == folder:
            looked.set()
        return cases_to_predict(checked, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "cases_to_predict", spy)
    outcome: dict[str, object] = {}

    def second_run() -> None:
        try:
            outcome["result"] = run_evaluation(trained["request"])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    with prediction_lock(folder):
        worker = threading.Thread(target=second_run)
        worker.start()
        try:
            assert not looked.wait(timeout=5), "the second run looked into a folder the first one holds"
        finally:
            case.write_bytes(first_runs_prediction)  # the first run finishes its prediction, then releases
    worker.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert looked.is_set() and outcome["result"].predicted[(BASELINE, "inverted")] == 0


@pytest.mark.slow
def test_the_command_prints_the_table_and_reuses_everything(trained: dict, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-d", str(E2E_ID), "-tr", BASELINE, DROPGEN, "--out", str(trained["out"]), "--in-domain", "source"]
    assert evaluate_cli(*argv, "--device", "cpu") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    inverted = next(line for line in lines if line.startswith("| inverted ") and "structure" not in line)
    data = json.loads((trained["out"] / "dice.json").read_text())
    expected = [data["dice"]["inverted"][t]["foreground_mean"] for t in (BASELINE, DROPGEN)]
    cells = [c.strip() for c in inverted.strip("|").split("|")]
    assert cells[2] == f"{expected[0]['mean']:.3f} ± {expected[0]['std']:.3f}"
    assert cells[4] == f"{expected[1]['difference_to_baseline']:+.3f}"
    assert any(line.startswith(f"| {HELD_OUT_MEAN_ROW} ") for line in lines)
    assert f"Figure: {trained['out'] / 'dice.png'}" in out


@pytest.mark.slow
def test_worker_processes_predict_what_sequential_prediction_does(trained: dict, tmp_path: Path) -> None:
    images, labels = trained["raw"] / "imagesTs_inverted", trained["raw"] / "labelsTs_inverted"
    argv = ["-d", str(E2E_ID), "-tr", BASELINE, "--test-set", "inverted", str(images), str(labels)]
    assert evaluate_cli(*argv, "--out", str(tmp_path), "-npp", "1", "-nps", "1", "--device", "cpu") == 0
    ours = tmp_path / "predictions" / f"{MODEL_FOLDER.format(BASELINE)}__fold_all__checkpoint_final" / "inverted"
    sequential = prediction_dir(trained, BASELINE, "inverted")
    for case in ("test_000", "test_001"):
        read = [sitk.GetArrayFromImage(sitk.ReadImage(str(f / f"{case}.nii.gz"))) for f in (ours, sequential)]
        assert np.array_equal(*read)
    assert sorted(p.name for p in ours.parent.iterdir()) == ["inverted"]  # the partial folder is gone


# --- cascades -----------------------------------------------------------------------------------------------


def test_a_cascade_without_its_previous_stage_is_refused_before_anything_runs(
    fake: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cascade = fake["model"].with_name("nnUNetTrainer__nnUNetPlans__3d_cascade_fullres")
    shutil.copytree(fake["model"], cascade)
    cascade_plans = make_plans()
    assert cascade_plans["configurations"]["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    out = str(fake["out"])
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "-c", "3d_cascade_fullres", "--out", out) == 1
    error = error_of(capsys)
    assert "is a cascade" in error and "3d_lowres" in error and "--prev-stage-predictions" in error
    assert not fake["out"].exists(), "nothing may be written before the check"
    given = fake["tmp"] / "lowres_predictions"
    given.mkdir()
    args = ("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "-c", "3d_cascade_fullres", "--out", out)
    assert evaluate_cli(*args, "--prev-stage-predictions", "inverted", str(given)) == 1
    assert "lack case(s) test_000" in error_of(capsys)
    assert evaluate_cli("-d", str(FAST_ID), "-tr", "nnUNetTrainer", "--prev-stage-predictions", "source", out) == 1
    assert "none of the evaluated models is one" in error_of(capsys)
    assert not fake["out"].exists()


CASCADE_ID = 962


@pytest.mark.slow
def test_evaluate_scores_a_dropgen_cascade_predicting_its_previous_stage_itself(tmp_path: Path) -> None:
    """nnU-Net plans a cascade for these images with a small GPU-memory target; evaluate makes the 3d_lowres
    predictions the cascade needs (with the same trainer), then scores the cascade."""
    from nnunetv2_dropgen.ext_trainers import trainer_dir

    # small images for which nnU-Net still plans a cascade at this memory target (at 0.05 it plans none for
    # them): the cascade's validation and prediction slide a 16x24x24 window over each image, 64 windows
    raw = write_tiny_dataset(Path(os.environ["nnUNet_raw"]), CASCADE_ID, num_cases=2, shape=(40, 50, 50))
    shutil.copytree(raw / "imagesTs", raw / "imagesTs_site")
    labels = raw / "labelsTs_site"
    labels.mkdir()
    shutil.copy(next((raw / "labelsTr").iterdir()), labels / "case002.nii.gz")  # a label of the right shape
    nnunet("nnUNetv2_plan_and_preprocess", "-d", str(CASCADE_ID), "-gpu_memory_target", "0.03", "-np", "1",
           "-npfp", "1", "-c", "3d_lowres", "3d_fullres")  # fmt: skip
    env = {"nnUNet_extTrainer": str(trainer_dir())}
    # quick: the final validation writes the lowres predictions the cascade trains on; no mirroring keeps it short
    trainer = "nnUNetTrainerNoMirroring_DropGen_minimix_quick"
    for configuration in ("3d_lowres", "3d_cascade_fullres"):
        nnunet("nnUNetv2_train", str(CASCADE_ID), configuration, "all", "-tr", trainer, "-device", "cpu", **env)
    out = tmp_path / "cascade_evaluation"
    code = evaluate_cli("-d", str(CASCADE_ID), "-tr", trainer, "-c", "3d_cascade_fullres", "--out", str(out),
                        "--disable_tta")  # fmt: skip
    assert code == 0
    data = json.loads((out / "dice.json").read_text())
    assert data["test_sets"] == ["site"] and 0 <= data["dice"]["site"][trainer]["foreground_mean"]["mean"] <= 1
    lowres = out / "predictions" / f"{trainer}__nnUNetPlans__3d_lowres__fold_all__checkpoint_final" / "site"
    assert (lowres / "case002.nii.gz").is_file(), "the previous stage was predicted first"
    cascade = out / "predictions" / f"{trainer}__nnUNetPlans__3d_cascade_fullres__fold_all__checkpoint_final" / "site"
    assert json.loads((cascade / SOURCE_FILE).read_text())["previous_stage"] == str(lowres)


def test_the_figure_draws_unannotated_voxels_as_background() -> None:
    """With an ignore label (sparse annotations), the slice with the most unannotated voxels was picked and they
    were drawn in the colour of the highest label."""
    from nnunetv2_dropgen.evaluation.figure import annotated, best_slice

    reference = np.zeros((3, 4, 4), dtype=np.uint8)
    reference[0] = 3  # unannotated everywhere
    reference[2, :2, :2] = 1  # the annotated structure
    shown = annotated(reference, ignore_label=3)
    assert best_slice(shown) == 2 and int(shown.max()) == 1
    assert annotated(reference, None) is reference


def test_the_predictors_ct_statistics_warning_is_left_to_evaluates_notes() -> None:
    """A DropGen model under CT plans warns when nnU-Net's predictor builds it; evaluate says it once, in its notes
    (_ct_statistics_note), not again per model load."""
    import warnings

    from nnunetv2_dropgen.evaluation.predict import _quiet
    from nnunetv2_dropgen.plans import CTStatisticsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet(io.StringIO()):
            warnings.warn("built under CT plans", CTStatisticsWarning, stacklevel=1)
            warnings.warn("anything else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["anything else"]
