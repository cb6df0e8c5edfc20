"""DropGenTrainer and its variants build the right network from the plans, for every configuration."""

from __future__ import annotations

import pickle

import pytest
import torch
from _plans import make_dataset_json, make_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import nnunetv2_dropgen.trainers as trainers
from nnunetv2_dropgen.network import DropGenNetwork
from nnunetv2_dropgen.trainers import DropGenTrainer

# anatomix-dev (94M parameters) is built once, in its own test, to keep the suite light
LIGHT_VARIANTS = [name for name in trainers.__all__ if name != "DropGenTrainer_anatomixDev"]


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


@pytest.mark.parametrize("name", LIGHT_VARIANTS)
def test_every_variant_builds_its_network(name: str) -> None:
    trainer_cls = getattr(trainers, name)
    network = build(trainer_cls)
    assert isinstance(network, DropGenNetwork)
    assert network.extractor_name == trainer_cls.extractor_name == "anatomix"
    assert network.feature_channels == 16
    assert stem_in_channels(network) == 1 + 16
    assert network.p == trainer_cls.dropout_p
    assert network.use_image == trainer_cls.use_image
    assert not any(p.requires_grad for p in network.extractor.parameters())


def test_variant_settings_match_their_names() -> None:
    assert DropGenTrainer.dropout_p == 0.75 and DropGenTrainer.use_image
    assert trainers.DropGenTrainer_p025.dropout_p == 0.25
    assert trainers.DropGenTrainer_p050.dropout_p == 0.5
    assert trainers.DropGenTrainer_p090.dropout_p == 0.9
    assert trainers.DropGenTrainer_noDropout.dropout_p == 0.0
    assert trainers.DropGenTrainer_featuresOnly.use_image is False
    assert trainers.DropGenTrainer_anatomixDev.extractor_name == "anatomix-dev"
    for epochs in (1, 5, 10, 50, 100, 250):
        suffix = "1epoch" if epochs == 1 else f"{epochs}epochs"
        assert getattr(trainers, f"DropGenTrainer_{suffix}").schedule.epochs == epochs


def test_features_only_zeroes_the_image_and_drops_nothing() -> None:
    network = build(trainers.DropGenTrainer_featuresOnly, deep_supervision=False).train()
    seen = {}
    network.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    network(torch.randn(2, 1, 32, 32, 32))
    assert torch.equal(seen["z"][:, :1], torch.zeros_like(seen["z"][:, :1]))
    assert (seen["z"][:, 1:].flatten(2).abs().amax(dim=2) > 0).all()


def test_anatomix_dev_variant_has_32_features() -> None:
    network = build(trainers.DropGenTrainer_anatomixDev)
    assert network.feature_channels == 32 and network.spatial_multiple == 32
    assert stem_in_channels(network) == 1 + 32


def test_multi_channel_gets_features_per_image_channel() -> None:
    network = build(DropGenTrainer, num_channels=2)
    assert (network.num_image_channels, network.num_extra_channels) == (2, 0)
    assert stem_in_channels(network) == 2 + 2 * 16
    assert len(network.dropout.channels) == 2 + 2 * 16


def test_cascade_one_hot_channels_are_neither_features_nor_dropped() -> None:
    network = build(DropGenTrainer, configuration="3d_cascade_fullres", deep_supervision=False)
    assert (network.num_image_channels, network.num_extra_channels) == (1, 2)  # 2 foreground labels
    assert stem_in_channels(network) == 1 + 16 + 2
    assert network.dropout.channels == tuple(range(17))
    network.train()
    seen = {}
    network.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    x = torch.randn(4, 3, 32, 32, 32)
    network(x)
    assert torch.equal(seen["z"][:, 17:], x[:, 1:])


def test_lowres_and_resenc_plans_build() -> None:
    lowres = build(DropGenTrainer, configuration="3d_lowres", deep_supervision=False).eval()
    assert lowres(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    resenc = build(DropGenTrainer, residual=True, deep_supervision=False).eval()
    assert type(resenc.backbone).__name__ == "ResidualEncoderUNet"
    assert stem_in_channels(resenc) == 17
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


@pytest.mark.parametrize("name", trainers.__all__)
def test_trainer_classes_pickle_by_reference(name: str) -> None:
    cls = getattr(trainers, name)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.__module__.startswith("nnunetv2_dropgen.trainers")
