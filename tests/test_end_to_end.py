"""nnU-Net's own command-line tools, in subprocesses, with -tr DropGenTrainer_minimix_quick on a tiny dataset.

Plan and preprocess, train, predict with every weights source made unusable, ensemble two folds with
checkpoint_best, continue with --c, --val, fine-tune, find_best_configuration, export and install from zip.
Other trainers and plans, and a user's own extractor: test_end_to_end_other_setups.py. Needs neither
../shared nor a download.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _e2e_workspace import EMBEDDED, ONE_CH, SHORT, TRAINER, UNUSABLE, Workspace, check_predictions, make_workspace

from nnunetv2_dropgen.weights import packaged_path, sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("e2e"), ONE_CH)


@pytest.fixture(scope="module")
def trained(workspace: Workspace) -> Path:
    workspace.train(ONE_CH)
    return workspace.model_folder(ONE_CH) / "fold_0"


def test_training_loads_the_embedded_weights_and_logs_the_dropgen_settings(trained: Path) -> None:
    log = "".join(p.read_text() for p in trained.glob("training_log_*.txt"))
    assert f"DropGen: trainer {TRAINER}, extractor minimix (16 features per image channel" in log
    assert f"DropGen: extractor weights: minimix weights {packaged_path(EMBEDDED)} (package;" in log
    assert f"sha256 {EMBEDDED.sha256}" in log
    assert "UNVERIFIED" not in log
    assert "DropGen: NOTE: extractor minimix is superseded by minimix2" in log, "dropping the 2 is not silent"
    assert "DropGen: channel dropout p=0.75 on image and feature channels, training only" in log
    assert "DropGen: backbone input = 1 image + 16 feature + 0 extra (cascade) channels = 17" in log
    checkpoint = torch.load(trained / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    embedded = torch.load(packaged_path(EMBEDDED), map_location="cpu", weights_only=True)
    for key, value in embedded.items():
        assert torch.equal(checkpoint["network_weights"][f"extractor.{key}"], value), key
    record = checkpoint["network_weights"]["_extra_state"]
    assert (record["extractor"], record["weights_sha256"]) == ("minimix", EMBEDDED.sha256)
    assert (trained / "validation" / "summary.json").is_file()


def test_predict_without_any_weights_file(workspace: Workspace, trained: Path) -> None:
    out = workspace.root / "pred_fold0"
    images = workspace.predict(ONE_CH, out, "-f", "0")
    check_predictions(images, out)


def test_predict_refuses_a_checkpoint_whose_features_were_computed_otherwise(
    workspace: Workspace, trained: Path
) -> None:
    """What a future change of preprocessing would meet: nnUNetv2_predict stops instead of predicting otherwise."""
    other_results = workspace.root / "results_other_pipeline"
    model = workspace.model_folder(ONE_CH)
    copy = other_results / model.parent.name / model.name
    shutil.copytree(model, copy)
    checkpoint_file = copy / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    checkpoint["network_weights"]["_extra_state"]["preprocessing"] = "percentile-0.5-99.5"
    torch.save(checkpoint, checkpoint_file)
    images = next(workspace.raw.glob(f"Dataset{ONE_CH}_*")) / "imagesTs"
    command = [str(Path(sys.executable).parent / "nnUNetv2_predict"), "-i", str(images), "-o"]
    command += [str(workspace.root / "pred_refused"), "-d", str(ONE_CH), "-c", "3d_fullres", "-tr", TRAINER]
    command += ["-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0"]
    done = subprocess.run(command, env=workspace.env(UNUSABLE, other_results), capture_output=True, text=True)
    assert done.returncode != 0
    assert "preprocessing 'percentile-0.5-99.5' in the checkpoint" in done.stderr
    assert not list((workspace.root / "pred_refused").glob("*.nii.gz"))


def test_predict_ensemble_of_two_folds_with_best_checkpoint(workspace: Workspace, trained: Path) -> None:
    fold_1 = trained.parent / "fold_1"
    shutil.copytree(trained, fold_1, dirs_exist_ok=True)
    checkpoint = torch.load(fold_1 / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    weights, generator = checkpoint["network_weights"], torch.Generator().manual_seed(0)
    for key, value in weights.items():
        if key.startswith("backbone.") and value.is_floating_point():
            value.add_(torch.randn(value.shape, generator=generator) * 0.05)
    # and +5 on the last label's output logit (+2.5 in the ensemble, which averages logits): the folds' softmax
    # outputs differ even where fold 0's saturates
    biases = [k for k in weights if ".seg_layers." in k and k.endswith(".bias")]
    output = max(biases, key=lambda k: int(k.split(".")[-2]))  # the full-resolution head
    weights[output][-1] += 5.0
    torch.save(checkpoint, fold_1 / "checkpoint_best.pth")

    single, ensemble = workspace.root / "pred_best_fold0", workspace.root / "pred_ensemble"
    workspace.predict(ONE_CH, single, "-f", "0", "-chk", "checkpoint_best.pth", "--save_probabilities")
    images = workspace.predict(ONE_CH, ensemble, "-f", "0", "1", "-chk", "checkpoint_best.pth", "--save_probabilities")
    check_predictions(images, ensemble)
    case = next(ensemble.glob("*.npz")).name
    # fold 1 differs from fold 0, so an ensemble that really averages both folds gives other probabilities
    assert not np.allclose(np.load(single / case)["probabilities"], np.load(ensemble / case)["probabilities"])


def test_continue_training_resumes_the_epoch_and_the_extractor(workspace: Workspace, trained: Path) -> None:
    final = torch.load(trained / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    interrupted = dict(final, current_epoch=1)
    torch.save(interrupted, trained / "checkpoint_latest.pth")
    (trained / "checkpoint_final.pth").rename(trained / "checkpoint_final.pth.bak")
    logs_before = set(trained.glob("training_log_*.txt"))
    try:
        workspace.train(ONE_CH, "--c", weights=UNUSABLE)
    finally:
        if not (trained / "checkpoint_final.pth").exists():
            (trained / "checkpoint_final.pth.bak").rename(trained / "checkpoint_final.pth")
    new_log = "".join(p.read_text() for p in set(trained.glob("training_log_*.txt")) - logs_before)
    resumed_from = "DropGen: extractor weights from the checkpoint; at the start of training: minimix weights"
    assert f"{resumed_from} {packaged_path(EMBEDDED)}" in new_log
    assert "Epoch 1" in new_log and "Epoch 0" not in new_log
    resumed = torch.load(trained / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 2
    for key, value in final["network_weights"].items():
        if key.startswith("extractor."):
            assert torch.equal(resumed["network_weights"][key], value), key


def test_validation_only_needs_no_weights(workspace: Workspace, trained: Path) -> None:
    summary = trained / "validation" / "summary.json"
    summary.unlink()
    workspace.train(ONE_CH, "--val", weights=UNUSABLE)
    assert "foreground_mean" in json.loads(summary.read_text())


def test_find_best_configuration_export_and_install(workspace: Workspace, trained: Path) -> None:
    output = workspace.run(
        "nnUNetv2_find_best_configuration", str(ONE_CH), "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-np", "1"
    )
    assert TRAINER in output
    assert (workspace.model_folder(ONE_CH).parent / "inference_information.json").is_file()
    archive = workspace.root / "model.zip"
    workspace.run(
        "nnUNetv2_export_model_to_zip",
        "-d",
        str(ONE_CH),
        "-o",
        str(archive),
        "-c",
        "3d_fullres",
        "-tr",
        TRAINER,
        "-f",
        "0",
    )
    with zipfile.ZipFile(archive) as exported:  # what a receiver without nnunetv2-dropgen can read
        debug = next(name for name in exported.namelist() if name.endswith("fold_0/debug.json"))
        note = json.loads(exported.read(debug))["to_predict_elsewhere"]
    assert "pip install 'nnunetv2-dropgen>=" in note and "nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)" in note
    other_results = workspace.root / "other_results"
    other_results.mkdir()
    workspace.run("nnUNetv2_install_pretrained_model_from_zip", str(archive), results=other_results)
    installed = workspace.model_folder(ONE_CH, other_results)
    assert (installed / "fold_0" / "checkpoint_final.pth").is_file()
    out, original = workspace.root / "pred_installed", workspace.root / "pred_before_export"
    images = workspace.predict(ONE_CH, out, "-f", "0", results=other_results)
    check_predictions(images, out)
    workspace.predict(ONE_CH, original, "-f", "0")
    for predicted in sorted(original.glob("*.nii.gz")):  # the installed model is the trained one, voxel for voxel
        installed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / predicted.name)))
        assert np.array_equal(installed_labels, sitk.GetArrayFromImage(sitk.ReadImage(str(predicted)))), predicted.name


def test_fine_tuning_with_pretrained_weights_keeps_the_checkpoints_extractor(
    workspace: Workspace, trained: Path
) -> None:
    """nnU-Net's -pretrained_weights with a DropGen checkpoint: the backbone and its extractor come along."""
    source = trained / "checkpoint_final.pth"
    workspace.run(
        "nnUNetv2_train", str(ONE_CH), "3d_fullres", "2", "-tr", SHORT, "-device", "cpu",
        "-pretrained_weights", str(source), weights=None,
    )  # fmt: skip
    fold = workspace.model_folder(ONE_CH, trainer=SHORT) / "fold_2"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert f"DropGen: extractor weights kept from the -pretrained_weights checkpoint {source}" in log
    pretrained = torch.load(source, map_location="cpu", weights_only=False)["network_weights"]
    tuned = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    extractor = [k for k in pretrained if k.startswith("extractor.")]
    assert extractor and all(torch.equal(tuned[k], pretrained[k]) for k in extractor)
    assert tuned["_extra_state"]["weights_sha256"] == pretrained["_extra_state"]["weights_sha256"]


def test_fine_tuning_with_other_extractor_weights_says_the_features_changed(
    workspace: Workspace, trained: Path
) -> None:
    other = workspace.root / "other_minimix.pth"
    state = torch.load(packaged_path(EMBEDDED), map_location="cpu", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    source = trained / "checkpoint_final.pth"
    sibling = workspace.model_folder(ONE_CH, trainer=SHORT) / "fold_0"  # a fold of this model on the shipped weights
    sibling.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, sibling / "checkpoint_final.pth")
    workspace.run(
        "nnUNetv2_train", str(ONE_CH), "3d_fullres", "3", "-tr", SHORT, "-device", "cpu",
        "-pretrained_weights", str(source), weights=str(other),
    )  # fmt: skip
    fold = workspace.model_folder(ONE_CH, trainer=SHORT) / "fold_3"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert f"DropGen: NOTE: the backbone of {source} was trained on the features of other extractor weights" in log
    assert f"DROPGEN_WEIGHTS_MINIMIX now gives sha256 {sha256_file(other)}" in log
    # the ensemble of this model's folds would mix two feature sets: said, with the sibling's weights
    assert "DropGen: WARNING: this fold's extractor weights" in log
    assert f"fold_0: sha256 {sha256_file(packaged_path(EMBEDDED))}" in log


def test_python_predictor_and_nnunet_ensemble_use_dropgen_checkpoints(workspace: Workspace, trained: Path) -> None:
    """nnU-Net's Python predictor (initialize_from_trained_model_folder) and nnUNetv2_ensemble of two folders."""
    out = workspace.root / "pred_python_api"
    code = (
        "import sys, torch\n"
        "from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor\n"
        "predictor = nnUNetPredictor(device=torch.device('cpu'), use_mirroring=False)\n"
        "predictor.initialize_from_trained_model_folder(sys.argv[1], (0,), 'checkpoint_final.pth')\n"
        "predictor.predict_from_files(sys.argv[2], sys.argv[3], save_probabilities=True, num_processes_preprocessing=1,"
        " num_processes_segmentation_export=1)\n"
    )
    images = next(workspace.raw.glob(f"Dataset{ONE_CH}_*")) / "imagesTs"
    done = subprocess.run(
        [sys.executable, "-c", code, str(workspace.model_folder(ONE_CH)), str(images), str(out)],
        env=workspace.env(UNUSABLE), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check_predictions(images, out)
    other = workspace.root / "pred_fold0"
    if not list(other.glob("*.npz")):
        workspace.predict(ONE_CH, other, "-f", "0", "--save_probabilities")
    ensembled = workspace.root / "pred_nnunet_ensemble"
    workspace.run("nnUNetv2_ensemble", "-i", str(out), str(other), "-o", str(ensembled), "-np", "1")
    check_predictions(images, ensembled)
