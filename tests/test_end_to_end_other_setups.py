"""DropGen through nnU-Net's commands beyond the plain trainer: nnU-Net's DA5 by name on ResEnc M plans, a
user's own trainer from an nnUNet_extTrainer folder, and an extractor pretrained with `nnunetv2_dropgen
pretrain` on the dataset's labelsTr (two image channels). Apart from test_end_to_end.py so that the two can
run side by side (pytest-xdist gives each test file to one worker). Needs neither ../shared nor a download.
"""

from __future__ import annotations

import os

import pytest
import torch
from _e2e_workspace import EMBEDDED, ONE_CH, TWO_CH, UNUSABLE, Workspace, check_predictions, make_workspace
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.weights import packaged_path, sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("e2e_other"), ONE_CH, TWO_CH)


def test_an_extractor_pretrained_on_labelsTr_trains_two_channels_and_predicts(workspace: Workspace) -> None:
    """`nnunetv2_dropgen pretrain` on the dataset's labelsTr, then nnUNetv2_train and nnUNetv2_predict with it."""
    labels = next(workspace.raw.glob(f"Dataset{TWO_CH}_*")) / "labelsTr"
    mine = workspace.root / "my_minimix.pth"
    pretrain = ["nnunetv2_dropgen", "pretrain", "--architecture", "minimix", "--labels", str(labels)]
    workspace.run(*pretrain, "--out", str(mine), "--steps", "2", "--patch-size", "32", "--device", "cpu")
    workspace.train(TWO_CH, weights=str(mine))
    fold = workspace.model_folder(TWO_CH) / "fold_0"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "your own extractor" in log and f"sha256 {sha256_file(mine)}" in log and "UNVERIFIED" not in log
    assert "DropGen: backbone input = 2 image + 32 feature + 0 extra (cascade) channels = 34" in log
    out = workspace.root / "pred_two_channels"
    images = workspace.predict(TWO_CH, out, "-f", "0")
    check_predictions(images, out)


USER_TRAINER = '''
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_dropgen.trainers import DropGen


class MyTrainer(nnUNetTrainer):
    """A user's own trainer: here, a short schedule."""

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1


class MyDropGen(DropGen, MyTrainer):
    extractor_name = "minimix"
'''


@pytest.mark.parametrize(
    "trainer, plans",
    [("nnUNetTrainerDA5_DropGen_minimix_demoTiny", "nnUNetResEncUNetMPlans"), ("MyDropGen", "nnUNetPlans")],
)
def test_dropgen_on_other_trainers_trains_continues_and_predicts(
    workspace: Workspace, trainer: str, plans: str
) -> None:
    """nnU-Net's DA5 by name on ResEnc M plans, and a user's trainer from an nnUNet_extTrainer folder."""
    folder = workspace.root / "my_trainers"
    folder.mkdir(exist_ok=True)
    (folder / "my_dropgen.py").write_text(USER_TRAINER)
    planned = next(workspace.preprocessed.glob(f"Dataset{ONE_CH}_*"))
    if plans != "nnUNetPlans" and not (planned / f"{plans}.json").exists():
        workspace.run("nnUNetv2_plan_experiment", "-d", str(ONE_CH), "-pl", "nnUNetPlannerResEncM")
        workspace.run("nnUNetv2_preprocess", "-d", str(ONE_CH), "-plans_name", plans, "-c", "3d_fullres", "-np", "1")
    extra = {"nnUNet_extTrainer": f"{trainer_dir()}{os.pathsep}{folder}"}
    train = ["nnUNetv2_train", str(ONE_CH), "3d_fullres", "0", "-tr", trainer, "-p", plans, "-device", "cpu"]
    workspace.run(*train, weights=None, extra_env=extra)
    identifier = convert_trainer_plans_config_to_identifier(trainer, plans, "3d_fullres")
    model = next(workspace.results.glob(f"Dataset{ONE_CH}_*")) / identifier
    fold = model / "fold_0"
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    embedded = torch.load(packaged_path(EMBEDDED), map_location="cpu", weights_only=True)
    for key, value in embedded.items():  # frozen: the extractor is the embedded one, bit for bit
        assert torch.equal(final["network_weights"][f"extractor.{key}"], value), key
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert f"DropGen: trainer {trainer}, extractor minimix" in log
    epochs = final["current_epoch"]
    # as if the last epoch had not run
    torch.save(dict(final, current_epoch=epochs - 1), fold / "checkpoint_latest.pth")
    (fold / "checkpoint_final.pth").unlink()
    workspace.run(*train, "--c", weights=UNUSABLE, extra_env=extra)
    resumed = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == epochs
    assert all(torch.equal(resumed["network_weights"][f"extractor.{k}"], v) for k, v in embedded.items())
    out = workspace.root / f"pred_{trainer}"
    images = next(workspace.raw.glob(f"Dataset{ONE_CH}_*")) / "imagesTs"
    predict = ["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(ONE_CH), "-c", "3d_fullres"]
    predict += ["-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"]
    workspace.run(*predict, extra_env=extra)
    check_predictions(images, out)
