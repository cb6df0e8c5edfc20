"""`nnunetv2_dropgen plans`: per-image normalization for CT-trained models that must segment MR, a CPU network.

The derivation is checked on nnU-Net's own plans of a tiny CT dataset, and its effect through nnU-Net's own
preprocessor: an MR-like image is saturated by the training set's CT statistics and is not with the derived
plans. The DropGen trainers' warning about CT plans is checked on a real training log (slow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _plans import make_plans
from _tiny_dataset import write_tiny_dataset

from nnunetv2_dropgen.cli import plans_command
from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.plans import (
    CTStatisticsWarning,
    PlansError,
    PlansVariant,
    derive_plans,
    read_fingerprint,
    read_plans,
)
from nnunetv2_dropgen.trainers.dropgen import ct_normalization_warning

WHOLE_IMAGE = {"median_relative_size_after_cropping": 1.0}
"""A fingerprint's one entry that per-image normalization reads: cropping to the non-zero mask kept everything."""

CT_DATASET = 981


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny dataset whose channel is named CT, fingerprinted and planned by nnU-Net (not preprocessed)."""
    root = tmp_path_factory.mktemp("plans")
    folders = {name: root / name for name in ("raw", "preprocessed", "results")}
    for folder in folders.values():
        folder.mkdir()
    dataset = write_tiny_dataset(folders["raw"], CT_DATASET, num_cases=3, channel_names=("CT",))
    env = {
        **os.environ,
        "nnUNet_raw": str(folders["raw"]),
        "nnUNet_preprocessed": str(folders["preprocessed"]),
        "nnUNet_results": str(folders["results"]),
    }
    command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(CT_DATASET)]
    done = subprocess.run([*command, "--no_pp", "-npfp", "1"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return {**folders, "dataset": dataset, "planned": folders["preprocessed"] / dataset.name, "env": env}


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict, *argv: str) -> int:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    parser = argparse.ArgumentParser()
    plans_command.register(parser.add_subparsers())
    args = parser.parse_args(["plans", *argv])
    return args.func(args)


def test_per_image_normalization_replaces_ct_statistics_and_preprocesses_anew(nnunet) -> None:
    source = read_plans(nnunet["planned"], "nnUNetPlans")
    assert source["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    derived = derive_plans(
        source, "MyPlans", PlansVariant(per_image_normalization=True), read_fingerprint(nnunet["planned"])
    )
    assert derived["plans_name"] == "MyPlans"
    for name, config in derived["configurations"].items():
        if "normalization_schemes" in config:
            assert config["normalization_schemes"] == ["ZScoreNormalization"], name
            assert config["data_identifier"] == f"MyPlans_{name}", "data normalized otherwise get their own folder"
        original = source["configurations"][name]
        assert config.get("architecture") == original.get("architecture"), "the network is unchanged"
    assert source["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"], "source untouched"


def test_cpu_plans_narrow_every_stage_and_share_the_data(nnunet) -> None:
    source = read_plans(nnunet["planned"], "nnUNetPlans")
    derived = derive_plans(source, "nnUNetPlansCPU", PlansVariant(first_stage_features=8))
    for name, config in derived["configurations"].items():
        if "architecture" not in config:
            continue
        widths = config["architecture"]["arch_kwargs"]["features_per_stage"]
        original = source["configurations"][name]["architecture"]["arch_kwargs"]["features_per_stage"]
        assert widths[0] == 8 and len(widths) == len(original)
        assert widths == [round(w * 8 / original[0]) for w in original], "the stages keep their ratios"
        assert config["data_identifier"] == source["configurations"][name]["data_identifier"], "data shared"
        assert config["patch_size"] == source["configurations"][name]["patch_size"]
    with pytest.raises(PlansError, match="nothing to change"):
        derive_plans(source, "Same", PlansVariant())


def ct_plans() -> dict:
    """Unit plans (2d, 3d_fullres, 3d_lowres, a cascade) whose one channel nnU-Net normalizes as CT, plus a
    custom configuration as nnU-Net documents them: it inherits 3d_fullres and has data of its own."""
    plans = make_plans()
    for config in plans["configurations"].values():
        if "normalization_schemes" in config:
            config["normalization_schemes"] = ["CTNormalization"]
    plans["configurations"]["3d_fullres_sp1"] = {
        "inherits_from": "3d_fullres",
        "data_identifier": "nnUNetPlans_3d_fullres_sp1",
        "spacing": [0.5, 0.5, 0.5],
    }
    return plans


def test_every_configuration_normalized_otherwise_gets_data_of_its_own() -> None:
    """A custom configuration inherits its normalization: keeping its old data identifier would train it on
    arrays normalized with the CT statistics. The cascade reads 3d_fullres's data, normalized as it is."""
    derived = derive_plans(ct_plans(), "Per", PlansVariant(per_image_normalization=True), WHOLE_IMAGE)
    identifiers = {name: config.get("data_identifier") for name, config in derived["configurations"].items()}
    assert identifiers == {
        "2d": "Per_2d",
        "3d_fullres": "Per_3d_fullres",
        "3d_lowres": "Per_3d_lowres",
        "3d_cascade_fullres": None,
        "3d_fullres_sp1": "Per_3d_fullres_sp1",
    }


def test_a_channel_z_scored_per_image_uses_the_non_zero_mask_as_nnunets_planner_would() -> None:
    """nnU-Net never masks CTNormalization, but masks a z-scored channel when cropping to the non-zero region
    leaves under 3/4 of the images (zero padding outside a field of view); the derived plans decide the same."""
    plans = ct_plans()
    fullres = plans["configurations"]["3d_fullres"]
    fullres["normalization_schemes"], fullres["use_mask_for_norm"] = (
        ["CTNormalization", "ZScoreNormalization"],
        [
            False,
            False,
        ],
    )
    variant = PlansVariant(per_image_normalization=True)
    cropped = derive_plans(plans, "Per", variant, {"median_relative_size_after_cropping": 0.6})
    assert cropped["configurations"]["3d_fullres"]["use_mask_for_norm"] == [True, False], "the user's channel kept"
    assert cropped["configurations"]["3d_fullres"]["normalization_schemes"] == ["ZScoreNormalization"] * 2
    whole = derive_plans(plans, "Per", variant, WHOLE_IMAGE)
    assert whole["configurations"]["3d_fullres"]["use_mask_for_norm"] == [False, False]
    with pytest.raises(PlansError, match="needs the dataset fingerprint"):
        derive_plans(plans, "Per", variant)


def test_a_dropgen_model_built_for_prediction_under_ct_plans_says_what_that_does_to_mr() -> None:
    """nnUNetv2_predict builds the network from the plans without a trainer: the CT statistics are said there;
    per-image plans build silently."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_dropgen.ext_trainers.dropgen_trainers import DropGenTrainer_minimix_demoTiny as Trainer

    said = {}
    for name, plans in (("ct", ct_plans()), ("per-image", make_plans())):
        manager = PlansManager(plans)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 3, False)
        said[name] = [str(w.message) for w in caught if issubclass(w.category, CTStatisticsWarning)]
    assert said["per-image"] == [] and len(said["ct"]) == 1
    assert "channel(s) 0 with its training set's CT statistics" in said["ct"][0]
    assert "an image of another modality (MR) is saturated" in said["ct"][0]
    assert "nnunetv2_dropgen plans --per-image-normalization" in said["ct"][0]


def test_per_image_normalization_of_plans_without_ct_statistics_is_refused() -> None:
    """It would write a copy that changes nothing, under a name that says it fixed something."""
    with pytest.raises(PlansError, match="already normalize each image on its own.*drop it"):
        derive_plans(make_plans(), "Per", PlansVariant(per_image_normalization=True), WHOLE_IMAGE)
    with pytest.raises(PlansError, match="would change nothing"):
        derive_plans(
            make_plans(), "PerCPU", PlansVariant(per_image_normalization=True, first_stage_features=8), WHOLE_IMAGE
        )


def test_the_ct_warning_names_commands_that_run_for_the_configuration_trained() -> None:
    """nnUNetv2_preprocess takes dataset ids only; a cascade needs 3d_lowres's data and model first."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(ct_plans())
    fullres = ct_normalization_warning(manager, "3d_fullres", "DropGenTrainer")
    assert "nnunetv2_dropgen plans -d 999 --per-image-normalization -p nnUNetPlans;" in fullres
    assert "nnUNetv2_preprocess -d 999 -plans_name nnUNetPlansPerImageNorm -c 3d_fullres;" in fullres
    assert "nnUNetv2_train 999 3d_fullres FOLD -tr DropGenTrainer -p nnUNetPlansPerImageNorm." in fullres
    cascade = ct_normalization_warning(manager, "3d_cascade_fullres", "DropGenTrainer")
    assert "-c 3d_fullres 3d_lowres; train 3d_lowres with -p nnUNetPlansPerImageNorm first, every fold" in cascade
    assert ct_normalization_warning(PlansManager(make_plans()), "3d_fullres", "DropGenTrainer") is None


def _preprocess_mr_like(nnunet, plans_name: str, tmp_path: Path) -> np.ndarray:
    """nnU-Net's own preprocessing of an MR-like image (positive, another scale, other contrast order)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    rng = np.random.default_rng(0)
    mr = (800 + 300 * rng.random((24, 40, 40))).astype(np.float32)
    mr[8:16, 12:28, 12:28] = 2500  # a bright structure, far above any CT value of the training set
    path = tmp_path / f"mr_{plans_name}_0000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(path))
    plans = PlansManager(read_plans(nnunet["planned"], plans_name))
    dataset_json = json.loads((nnunet["dataset"] / "dataset.json").read_text())
    data, _, _ = DefaultPreprocessor(verbose=False).run_case(
        [str(path)], None, plans, plans.get_configuration("3d_fullres"), dataset_json
    )
    return data[0]


def test_an_mr_image_is_saturated_by_ct_plans_and_kept_by_per_image_plans(nnunet, tmp_path, monkeypatch) -> None:
    assert run_cli(monkeypatch, nnunet["env"], "-d", str(CT_DATASET), "--per-image-normalization") == 0
    saturated = _preprocess_mr_like(nnunet, "nnUNetPlans", tmp_path)
    kept = _preprocess_mr_like(nnunet, "nnUNetPlansPerImageNorm", tmp_path)
    # CTNormalization clips to the CT training set's foreground range: every MR value lies above it
    assert np.unique(saturated).size == 1, "the MR image became one constant value: nothing left to see"
    structure = np.zeros(kept.shape, dtype=bool)
    structure[8:16, 12:28, 12:28] = True
    assert kept[structure].mean() > kept[~structure].mean() + 2, "per image, the structure stands out"


def test_the_command_says_what_to_run_next_and_refuses_to_overwrite(nnunet, monkeypatch, capsys) -> None:
    assert run_cli(monkeypatch, nnunet["env"], "-d", str(CT_DATASET), "--per-image-normalization", "--cpu") == 0
    out = capsys.readouterr().out
    written = nnunet["planned"] / "nnUNetPlansPerImageNormCPU.json"
    assert f"Wrote {written}" in out
    assert f"nnUNetv2_preprocess -d {CT_DATASET} -plans_name nnUNetPlansPerImageNormCPU -c " in out, "ids only"
    assert "-p nnUNetPlansPerImageNormCPU" in out
    plans = json.loads(written.read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 99  # a user's edit
    written.write_text(json.dumps(plans))
    args = ("-d", str(CT_DATASET), "--per-image-normalization", "--cpu")
    assert run_cli(monkeypatch, nnunet["env"], *args) == 1
    assert "exists and differs" in capsys.readouterr().err
    assert json.loads(written.read_text())["configurations"]["3d_fullres"]["batch_size"] == 99, "nothing replaced"
    assert run_cli(monkeypatch, nnunet["env"], *args, "--force") == 0
    assert "preprocess again" not in capsys.readouterr().out, "nothing was preprocessed for the replaced plans"
    data = nnunet["planned"] / "nnUNetPlansPerImageNormCPU_3d_fullres"
    data.mkdir()
    (data / "case_000.b2nd").write_bytes(b"made with the replaced plans")
    plans["configurations"]["3d_fullres"]["batch_size"] = 98  # not what preprocessing reads: data still valid
    written.write_text(json.dumps(plans))
    assert run_cli(monkeypatch, nnunet["env"], *args, "--force") == 0
    out = capsys.readouterr().out
    assert "in place of the plans there" in out and "preprocess again" not in out
    plans["configurations"]["3d_fullres"]["spacing"] = [2.0, 2.0, 2.0]  # what preprocessing reads
    written.write_text(json.dumps(plans))
    assert run_cli(monkeypatch, nnunet["env"], *args, "--force") == 0
    replaced = capsys.readouterr().out
    assert "in place of the plans there" in replaced and "(3d_fullres) were made with them" in replaced
    assert "preprocess again before training" in replaced
    (data / "case_000.b2nd").unlink()
    data.rmdir()
    assert run_cli(monkeypatch, nnunet["env"], "-d", str(CT_DATASET), "-p", "NoSuchPlans", "--cpu") == 1
    assert "there is no plans file" in capsys.readouterr().err
    before = sorted(p.relative_to(nnunet["preprocessed"].parent) for p in nnunet["preprocessed"].parent.rglob("*"))
    for name in ("../../escaped", "sub/dir", ".hidden"):
        assert run_cli(monkeypatch, nnunet["env"], "-d", str(CT_DATASET), "--cpu", "--name", name) == 1
        assert "must be a plain plans name" in capsys.readouterr().err
    after = sorted(p.relative_to(nnunet["preprocessed"].parent) for p in nnunet["preprocessed"].parent.rglob("*"))
    assert after == before, "a refused --name wrote nothing"


def test_plans_that_would_replace_their_source_or_share_its_data_are_refused(nnunet, monkeypatch, capsys) -> None:
    """--name equal to the source, or a name whose data folder other plans fill with differently normalized
    arrays: nnU-Net would train on the wrong arrays without a word, so nothing is written."""
    planned = nnunet["planned"]
    resenc_like = json.loads((planned / "nnUNetPlans.json").read_text())
    resenc_like["plans_name"] = "ResEncLikePlans"  # as nnU-Net's ResEnc presets: their data are nnUNetPlans_3d_*
    (planned / "ResEncLikePlans.json").write_text(json.dumps(resenc_like))
    before = {p.name: p.read_bytes() for p in planned.glob("*.json")}
    per_image = ("-d", str(CT_DATASET), "--per-image-normalization", "--force")
    assert run_cli(monkeypatch, nnunet["env"], *per_image, "--name", "nnUNetPlans") == 1
    assert "--name nnUNetPlans is the plans this derives from" in capsys.readouterr().err
    assert run_cli(monkeypatch, nnunet["env"], *per_image, "-p", "ResEncLikePlans", "--name", "nnUNetPlans") == 1
    error = capsys.readouterr().err
    assert "would share the preprocessed data 'nnUNetPlans_2d' with ResEncLikePlans.json" in error
    assert "Choose another --name" in error
    assert {p.name: p.read_bytes() for p in planned.glob("*.json")} == before, "nothing written"
    (planned / "ResEncLikePlans.json").unlink()


@pytest.mark.slow
def test_dropgen_warns_about_ct_plans_and_trains_with_per_image_plans(nnunet, monkeypatch) -> None:
    """Through nnU-Net's commands: CT plans train with a warning naming the fix; the derived plans train without."""
    env = {**nnunet["env"], "nnUNet_extTrainer": str(trainer_dir()), "nnUNet_compile": "false"}
    bin_dir = Path(sys.executable).parent
    assert run_cli(monkeypatch, nnunet["env"], "-d", str(CT_DATASET), "--per-image-normalization", "--force") == 0

    def run(*command: str) -> str:
        done = subprocess.run([str(bin_dir / command[0]), *command[1:]], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    for plans in ("nnUNetPlans", "nnUNetPlansPerImageNorm"):
        run("nnUNetv2_preprocess", "-d", str(CT_DATASET), "-plans_name", plans, "-c", "3d_fullres", "-np", "1")
        trainer = "DropGenTrainer_minimix_demoTiny"
        said = run(
            "nnUNetv2_train", str(CT_DATASET), "3d_fullres", "all", "-tr", trainer, "-p", plans, "-device", "cpu"
        )
        assert "CTStatisticsWarning" not in said, "training says it in its log, with the commands, not twice"
    model = nnunet["results"] / nnunet["dataset"].name
    log_of = {
        plans: "".join(
            p.read_text()
            for p in (model / f"DropGenTrainer_minimix_demoTiny__{plans}__3d_fullres").rglob("training_log_*")
        )
        for plans in ("nnUNetPlans", "nnUNetPlansPerImageNorm")
    }
    warning = "DropGen: WARNING: image channel(s) 0 use nnU-Net's CTNormalization"
    assert warning in log_of["nnUNetPlans"]
    assert "nnunetv2_dropgen plans -d" in log_of["nnUNetPlans"] and "--per-image-normalization" in log_of["nnUNetPlans"]
    assert warning not in log_of["nnUNetPlansPerImageNorm"]
