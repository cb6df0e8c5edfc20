"""DropGenTrainer and its variants build the right network from the plans, for every configuration."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from _plans import documented_trainer_names, make_dataset_json, make_plans
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import nnunetv2_dropgen.trainers as trainers
from nnunetv2_dropgen.network import DropGenNetwork
from nnunetv2_dropgen.trainers import DropGenTrainer, TrainerNameError, parse_dropgen_name
from nnunetv2_dropgen.trainers.schedule import NAMED_SCHEDULES

DOCUMENTED = documented_trainer_names()
# anatomix-dev (94M parameters) is built once, in its own test, to keep the suite light
LIGHT_DROPGEN = [n for n in DOCUMENTED if n.startswith("DropGenTrainer") and "anatomixDev" not in n]


def build(
    trainer_cls: type[DropGenTrainer],
    configuration: str = "3d_fullres",
    num_channels: int = 1,
    residual: bool = False,
    deep_supervision: bool = True,
) -> DropGenNetwork:
    """What nnU-Net's trainer and predictor do: plans -> num input channels -> build_network_architecture."""
    plans_manager = PlansManager(make_plans(num_channels, residual))
    configuration_manager = plans_manager.get_configuration(configuration)
    dataset_json = make_dataset_json(num_channels)
    return trainer_cls.build_network_architecture(
        plans_manager,
        configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        deep_supervision,
    )


def stem_in_channels(network: DropGenNetwork) -> int:
    first_conv = next(m for m in network.backbone.modules() if isinstance(m, torch.nn.Conv3d))
    return first_conv.in_channels


@pytest.mark.parametrize("name", LIGHT_DROPGEN)
def test_every_documented_dropgen_name_builds_its_network(name: str) -> None:
    trainer_cls = getattr(trainers, name)
    network = build(trainer_cls)
    spec = network.spec
    assert isinstance(network, DropGenNetwork)
    assert spec.name == trainer_cls.extractor_name
    assert stem_in_channels(network) == 1 + spec.feature_channels
    assert network.p == trainer_cls.dropout_p
    assert network.use_image == trainer_cls.use_image
    assert not any(p.requires_grad for p in network.extractor.parameters())


def test_documented_names_cover_every_part_of_the_grammar() -> None:
    joined = " ".join(DOCUMENTED)
    for part in ("anatomixDev", "minimix", "p025", "p050", "p090", "noDropout", "featuresOnly", "1epoch", "quick"):
        assert f"_{part}" in joined, f"README documents no trainer name with _{part}"
    assert any(n.startswith("nnUNetTrainer_") for n in DOCUMENTED)
    assert any(n.startswith("nnUNetTrainerDA5_") for n in DOCUMENTED)


@pytest.mark.parametrize(
    "name, extractor, p, use_image, schedule",
    [
        ("DropGenTrainer", "anatomix", 0.75, True, (None, None, None)),
        ("DropGenTrainer_p025", "anatomix", 0.25, True, (None, None, None)),
        ("DropGenTrainer_anatomixDev", "anatomix-dev", 0.75, True, (None, None, None)),
        ("DropGenTrainer_noDropout", "anatomix", 0.0, True, (None, None, None)),
        ("DropGenTrainer_featuresOnly", "anatomix", 0.0, False, (None, None, None)),
        ("DropGenTrainer_p050_featuresOnly", "anatomix", 0.5, False, (None, None, None)),
        ("DropGenTrainer_1epoch", "anatomix", 0.75, True, (1, None, None)),
        ("DropGenTrainer_anatomixDev_p090_250epochs", "anatomix-dev", 0.9, True, (250, None, None)),
        ("DropGenTrainer_quick", "anatomix", 0.75, True, (2, 4, 2)),
    ],
)
def test_names_stand_for_their_settings(name, extractor, p, use_image, schedule) -> None:
    variant = parse_dropgen_name(name)
    assert (variant.extractor_name, variant.dropout_p, variant.use_image) == (extractor, p, use_image)
    assert tuple(variant.schedule[:3]) == schedule
    cls = getattr(trainers, name)
    assert (cls.extractor_name, cls.dropout_p, cls.use_image, cls.schedule) == (
        extractor,
        p,
        use_image,
        variant.schedule,
    )
    assert issubclass(cls, DropGenTrainer) and cls.__name__ == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("DropGenTrainer_p07", "'p07' is unknown or out of order"),
        ("DropGenTrainer_p100", "'p100' is unknown"),
        ("DropGenTrainer_quick_p050", "'p050' is unknown or out of order"),
        ("DropGenTrainer_p050_noDropout", "noDropout at once"),
        ("DropGenTrainer_5epoch", "'5epoch' is unknown"),
        ("DropGenTrainer_nosuchExtractor", "extractor one of anatomix, anatomixDev"),
        ("nnUNetTrainer_fast", "not a schedule"),
    ],
)
def test_malformed_names_say_why_and_hasattr_says_no(name: str, reason: str) -> None:
    with pytest.raises(TrainerNameError, match=reason):
        getattr(trainers, name)
    assert not hasattr(trainers, name)  # nnU-Net's search goes on to the next module


@pytest.mark.parametrize(
    "name, shown",
    [
        ("DropGenTrainer_p75", "'p75' is unknown or out of order"),
        ("nnUNetTrainerDA5_DropGen_p07", "'nnUNetTrainerDA5_DropGen_p07' is not a DropGen trainer name"),
        ("NoSuchTrainer_DropGen", "'NoSuchTrainer' is not one of nnU-Net's trainers"),
        ("nnUNetTrainerDA5_qiuck", "'qiuck' is not a schedule"),  # a baseline's mistyped schedule
        ("nnUNetTrainer_80epoch", "'80epoch' is not a schedule"),
        ("MyOwnTrainer", None),  # not meant for DropGen: nnU-Net's search goes on to the next folder, silently
        ("nnUNetTrainer_MyLoss", None),  # a user's own variant, perhaps in a later folder: silent too
    ],
)
def test_nnunets_trainer_search_shows_why_a_dropgen_name_is_not_found(
    name: str, shown: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nnU-Net asks with hasattr, which swallows the reason; the user must still see it above nnU-Net's error."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_dropgen.ext_trainers import trainer_dir

    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    with pytest.raises(RuntimeError, match=f"Could not find requested nnunet trainer {name}"):
        recursive_find_trainer_class_by_name(name)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nnunetv2_dropgen: ")]
    if shown is None:
        assert notes == []
    else:
        assert len(notes) == 1 and shown in notes[0], notes


def test_the_same_name_is_the_same_class() -> None:
    assert trainers.DropGenTrainer_p050_quick is trainers.DropGenTrainer_p050_quick


def test_baselines_with_a_schedule_train_exactly_as_long() -> None:
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

    for schedule in ("demo", "quick"):
        baseline = getattr(trainers, f"nnUNetTrainerDA5_{schedule}")
        assert issubclass(baseline, nnUNetTrainerDA5) and baseline.schedule == NAMED_SCHEDULES[schedule]
        assert getattr(trainers, f"DropGenTrainer_{schedule}").schedule == baseline.schedule


def test_features_only_zeroes_the_image_and_drops_nothing() -> None:
    network = build(trainers.DropGenTrainer_featuresOnly, deep_supervision=False).train()
    seen = {}
    network.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    network(torch.randn(2, 1, 32, 32, 32))
    assert torch.equal(seen["z"][:, :1], torch.zeros_like(seen["z"][:, :1]))
    assert (seen["z"][:, 1:].flatten(2).abs().amax(dim=2) > 0).all()


def test_anatomix_dev_variant_has_32_features() -> None:
    network = build(trainers.DropGenTrainer_anatomixDev)
    assert network.feature_channels == 32 and network.spec.spatial_multiple == 32
    assert stem_in_channels(network) == 1 + 32


def test_multi_channel_gets_features_per_image_channel() -> None:
    network = build(DropGenTrainer, num_channels=2)
    assert (network.num_image_channels, network.num_extra_channels) == (2, 0)
    features = network.feature_channels
    assert stem_in_channels(network) == 2 + 2 * features
    assert len(network.dropout.channels) == 2 + 2 * features


def test_cascade_one_hot_channels_are_neither_features_nor_dropped() -> None:
    network = build(DropGenTrainer, configuration="3d_cascade_fullres", deep_supervision=False)
    assert (network.num_image_channels, network.num_extra_channels) == (1, 2)  # 2 foreground labels
    dropped = 1 + network.feature_channels
    assert stem_in_channels(network) == dropped + 2
    assert network.dropout.channels == tuple(range(dropped))
    network.train()
    seen = {}
    network.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    x = torch.randn(4, 3, 32, 32, 32)
    network(x)
    assert torch.equal(seen["z"][:, dropped:], x[:, 1:])


def test_lowres_and_resenc_plans_build() -> None:
    lowres = build(DropGenTrainer, configuration="3d_lowres", deep_supervision=False).eval()
    assert lowres(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    resenc = build(DropGenTrainer, residual=True, deep_supervision=False).eval()
    assert type(resenc.backbone).__name__ == "ResidualEncoderUNet"
    assert stem_in_channels(resenc) == 1 + resenc.feature_channels
    assert resenc(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_2d_configuration_fails_at_trainer_init_before_touching_anything(tmp_path, monkeypatch) -> None:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module

    monkeypatch.setattr(nnunet_trainer_module, "nnUNet_results", str(tmp_path / "results"))
    plans = make_plans() | {"continue_training": False}
    with pytest.raises(RuntimeError, match=r"DropGen needs a 3D configuration.*3d_fullres"):
        DropGenTrainer(plans, "2d", 0, make_dataset_json(), torch.device("cpu"))
    assert not (tmp_path / "results").exists()
    with pytest.raises(RuntimeError, match="3D configuration"):
        build(DropGenTrainer, configuration="2d")


def test_training_before_preprocessing_names_the_preprocess_command(tmp_path, monkeypatch) -> None:
    """Plans written by `nnunetv2_dropgen plans --per-image-normalization` need their own preprocessing; training
    before it stops with the command, not with nnU-Net's bare file error from deep in its dataset loader."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    for configuration, preprocessed_as in (("3d_fullres", "3d_fullres"), ("3d_cascade_fullres", "3d_fullres")):
        plans = make_plans() | {"continue_training": False}  # nnU-Net pops that key
        trainer = DropGenTrainer(plans, configuration, 0, make_dataset_json(), torch.device("cpu"))
        command = f"nnUNetv2_preprocess -d 999 -plans_name nnUNetPlans -c {preprocessed_as}"
        with pytest.raises(FileNotFoundError, match=command):
            trainer.initialize()
        assert not trainer.was_initialized and getattr(trainer, "network", None) is None
    folder = tmp_path / "preprocessed" / "Dataset999_Unit" / "nnUNetPlans_3d"
    folder.mkdir(parents=True)
    assert trainers.dropgen.missing_preprocessed_data_error(folder, PlansManager(plans), "3d_fullres") is not None
    (folder / "case_000.b2nd").touch()
    assert trainers.dropgen.missing_preprocessed_data_error(folder, PlansManager(plans), "3d_fullres") is None


def test_channel_mismatch_outside_a_cascade_is_refused() -> None:
    plans_manager = PlansManager(make_plans(1))
    with pytest.raises(RuntimeError, match="plans and dataset.json do not agree"):
        DropGenTrainer.build_network_architecture(plans_manager, plans_manager.get_configuration("3d_fullres"), 3, 3)


def test_network_is_the_same_for_training_and_inference_builds() -> None:
    torch.manual_seed(0)
    trained = build(DropGenTrainer, deep_supervision=True)
    rebuilt = build(DropGenTrainer, deep_supervision=False)
    rebuilt.load_state_dict(trained.state_dict())
    trained.decoder.deep_supervision = False
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.equal(trained.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize("name", DOCUMENTED)
def test_trainer_classes_pickle_by_reference(name: str) -> None:
    cls = getattr(trainers, name)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.__module__.startswith("nnunetv2_dropgen.trainers")


# ---------------------------------------------------------------------------------------------------------
# DropGen on other bases: nnU-Net's variants by name, a user's trainer as a mixin


def test_dropgen_on_nnunet_variants_by_name_keeps_the_base_and_its_dropgen_parts() -> None:
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    da5 = trainers.nnUNetTrainerDA5_DropGen_minimix_p050_quick
    assert issubclass(da5, nnUNetTrainerDA5) and issubclass(da5, trainers.DropGen)
    assert (da5.extractor_name, da5.dropout_p, da5.schedule.epochs) == ("minimix", 0.5, 2)
    assert da5.get_training_transforms is nnUNetTrainerDA5.get_training_transforms, "DA5's augmentation is kept"
    assert issubclass(trainers.nnUNetTrainerNoMirroring_DropGen, nnUNetTrainerNoMirroring)
    loss_variant = trainers.nnUNetTrainerDiceCELoss_noSmooth_DropGen_featuresOnly
    assert loss_variant.__mro__[3].__name__ == "nnUNetTrainerDiceCELoss_noSmooth" and not loss_variant.use_image
    network = build(da5)
    assert isinstance(network, DropGenNetwork) and stem_in_channels(network) == 1 + network.feature_channels
    assert pickle.loads(pickle.dumps(da5)) is da5
    with pytest.raises(TrainerNameError, match="'NoSuchTrainer' is not one of nnU-Net's trainers"):
        trainers.build_trainer_class("NoSuchTrainer_DropGen")
    with pytest.raises(TrainerNameError, match="'nnUNetTrainerDA5_DropGen_p07' is not a DropGen trainer name"):
        trainers.build_trainer_class("nnUNetTrainerDA5_DropGen_p07")
    with pytest.raises(TrainerNameError, match="the schedule goes last.*e.g. nnUNetTrainerDA5_DropGen_80epochs"):
        trainers.build_trainer_class("nnUNetTrainerDA5_80epochs_DropGen")  # ours, not one of nnU-Net's trainers


class _FixedInput(nnUNetTrainer):
    """A base whose network ignores the input channels it is asked for."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, *args, **kwargs):
        return torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1))


class _UserTrainer(nnUNetTrainer):
    """A user's trainer with its own network (a BatchNorm variant of the plans' one) and its own optimizer."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_outputs, ds=True):
        stem = torch.nn.Conv3d(num_input_channels, 4, 3, padding=1)
        return torch.nn.Sequential(stem, torch.nn.BatchNorm3d(4), torch.nn.ReLU(), torch.nn.Conv3d(4, num_outputs, 1))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=1e-3)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


class _UserDropGen(trainers.DropGen, _UserTrainer):
    extractor_name = "minimix"


def _initialized(trainer_cls: type, tmp_path, monkeypatch):
    """A trainer with its network and optimizer built as nnU-Net's initialize() builds them (no dataset needed)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = make_plans() | {"continue_training": False}
    trainer = trainer_cls(plans, "3d_fullres", 0, make_dataset_json(), torch.device("cpu"))
    trainer.network = build(trainer_cls, deep_supervision=False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


def test_a_users_trainer_gets_dropgen_with_its_own_network_and_optimizer(tmp_path, monkeypatch) -> None:
    trainer = _initialized(_UserDropGen, tmp_path, monkeypatch)
    network = trainer.dropgen_network
    assert isinstance(network, DropGenNetwork) and isinstance(network.backbone, torch.nn.Sequential)
    assert network.backbone[0].in_channels == 1 + network.feature_channels
    assert isinstance(trainer.optimizer, torch.optim.AdamW), "the base's optimizer is kept"
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in network.extractor.parameters()}, "the frozen extractor is not optimized"
    assert {id(p) for p in network.backbone.parameters()} <= optimized
    trainer.on_train_epoch_start()
    assert network.backbone.training and not network.extractor.training


def test_nnunets_warmup_trainer_as_base_gets_its_stages_without_the_extractor(tmp_path, monkeypatch) -> None:
    """nnUNetTrainer_warmup calls configure_optimizers(stage) at epoch 0 and at the end of its warm-up."""
    warmup = trainers.build_trainer_class("nnUNetTrainer_warmup_DropGen_minimix")
    trainer = _initialized(warmup, tmp_path, monkeypatch)
    extractor = {id(p) for p in trainer.dropgen_network.extractor.parameters()}
    for stage in ("warmup_all", "train"):
        optimizer, _ = trainer.configure_optimizers(stage)
        assert trainer.training_stage == stage
        assert not extractor & {id(p) for group in optimizer.param_groups for p in group["params"]}


def test_a_fold_that_ends_beside_siblings_from_other_extractor_weights_says_so(tmp_path, monkeypatch) -> None:
    """Folds started side by side (one per GPU) have no sibling checkpoint to compare with when they start."""
    trainer = _initialized(_UserDropGen, tmp_path, monkeypatch)
    network = trainer.dropgen_network
    network.record = network.record.with_weights("a" * 64, "the embedded file")
    sibling = Path(trainer.output_folder).parent / "fold_1"
    sibling.mkdir(parents=True)
    other = build(_UserDropGen, deep_supervision=False)
    other.record = other.record.with_weights("b" * 64, "environment (DROPGEN_WEIGHTS_MINIMIX)")
    torch.save({"network_weights": other.state_dict()}, sibling / "checkpoint_latest.pth")
    with pytest.warns(UserWarning, match="differ from those other folds of this model started from"):
        trainer.on_train_end()
    assert (Path(trainer.output_folder) / "checkpoint_final.pth").is_file()
    log = next(Path(trainer.output_folder).glob("training_log_*.txt")).read_text()
    assert f"fold_1: sha256 {'b' * 64}" in log


def test_demo_schedules_skip_the_final_validation_and_say_what_a_numbered_fold_loses(tmp_path, monkeypatch) -> None:
    """--val and the end of training write no validation/ folder under them: loud on a cross-validation fold."""
    trainer = _initialized(trainers.DropGenTrainer_minimix_demoTiny, tmp_path, monkeypatch)
    trainer.perform_actual_validation()
    log = next(Path(trainer.output_folder).glob("training_log_*.txt")).read_text()
    assert "WARNING: fold 0 gets no validation/ folder" in log and "_250epochs" in log
    assert not (Path(trainer.output_folder) / "validation").exists()
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "all"))
    plans = make_plans() | {"continue_training": False}
    on_all = trainers.DropGenTrainer_minimix_demoTiny(
        plans, "3d_fullres", "all", make_dataset_json(), torch.device("cpu")
    )
    on_all.perform_actual_validation()
    log = next(Path(on_all.output_folder).glob("training_log_*.txt")).read_text()
    assert "Schedule without final validation" in log and "WARNING" not in log


def test_a_base_that_ignores_the_input_channels_is_refused_with_a_sentence() -> None:
    class Fixed(trainers.DropGen, _FixedInput):
        extractor_name = "minimix"

    with pytest.raises(trainers.TrainerConflict, match="first layer takes 1 input channels although it was asked"):
        build(Fixed)


def test_a_base_that_unfreezes_or_trains_the_extractor_is_refused(tmp_path, monkeypatch) -> None:
    class Unfreezing(_UserDropGen):
        def configure_optimizers(self):
            self.network.extractor.requires_grad_(True)
            return super().configure_optimizers()

    with pytest.raises(trainers.TrainerConflict, match="made the frozen extractor trainable"):
        _initialized(Unfreezing, tmp_path / "a", monkeypatch)

    trainer = _initialized(_UserDropGen, tmp_path / "b", monkeypatch)
    network = trainer.dropgen_network  # as if a base's network.train() reached the extractor
    network.train = lambda mode=True: torch.nn.Module.train(network, mode)
    with pytest.raises(trainers.TrainerConflict, match="put DropGen's extractor in training mode"):
        trainer.on_train_epoch_start()


def test_a_weights_variable_this_extractor_does_not_read_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """DROPGEN_WEIGHTS_MINIMIX with a minimix2 trainer: the file would go unused, so the training log says so."""
    from _core_helpers import tiny_backbone

    from nnunetv2_dropgen.network import build_dropgen_network
    from nnunetv2_dropgen.trainers.dropgen import unread_weights_variables_warning

    for key in [k for k in os.environ if k.startswith("DROPGEN_WEIGHTS_")]:
        monkeypatch.delenv(key)
    network = build_dropgen_network("minimix2", tiny_backbone(17), pretrained=True)
    assert unread_weights_variables_warning(network) is None
    monkeypatch.setenv("DROPGEN_WEIGHTS_MINIMIX", str(tmp_path / "mine.pth"))
    sentence = unread_weights_variables_warning(network)
    assert sentence is not None
    assert sentence.startswith("DROPGEN_WEIGHTS_MINIMIX is set, but this trainer's extractor minimix2 reads only ")
    assert "DROPGEN_WEIGHTS_MINIMIX2, which is not: its weights are " + network.record.weights_origin in sentence
    monkeypatch.setenv("DROPGEN_WEIGHTS_MINIMIX2", str(tmp_path / "mine.pth"))
    assert unread_weights_variables_warning(network) is None, "its own variable is set: the others do not matter"
