"""The DropGen authors' behaviours as named options: each does what it says, is in the trainer name and the
checkpoint's record, and a checkpoint never loads into a network built with other options."""

from __future__ import annotations

import pytest
import torch
from _core_helpers import randomize_batchnorm_stats, tiny_backbone

import nnunetv2_dropgen.trainers as trainers
from nnunetv2_dropgen.network import DropGenNetwork, FeaturePipelineMismatch, build_dropgen_network
from nnunetv2_dropgen.network.options import OPTIONS

FEATURES = 16


def network(*options: str, seed: int = 0) -> DropGenNetwork:
    torch.manual_seed(seed)
    net = build_dropgen_network("minimix", tiny_backbone(1 + FEATURES), p=0.5, options=options)
    randomize_batchnorm_stats(net.extractor)
    return net.eval()


def test_options_are_trainer_name_parts_and_reach_the_network() -> None:
    trainer = trainers.DropGenTrainer_minimix_bnBatch_volumeScaling_unitImage_quick
    assert trainer.extractor_options == ("bnBatch", "volumeScaling", "unitImage")
    assert trainers.nnUNetTrainerDA5_DropGen_minimix_voxelNorm.extractor_options == ("voxelNorm",)
    with pytest.raises(trainers.TrainerNameError, match="'bnBatch' is unknown or out of order"):
        trainers.build_trainer_class("DropGenTrainer_unitImage_bnBatch")
    assert set(OPTIONS) == {"bnBatch", "volumeScaling", "unitImage", "voxelNorm"}


def test_checkpoints_refuse_networks_with_other_options_and_old_ones_load_as_before() -> None:
    default, batch = network(), network("bnBatch")
    assert default.record.options == () and batch.record.options == ("bnBatch",)
    assert "options" not in default.get_extra_state(), "records without options stay as they were written before"
    with pytest.raises(FeaturePipelineMismatch, match=r"options \('bnBatch',\) in the checkpoint, \(\) now"):
        default.load_state_dict(batch.state_dict())
    with pytest.raises(FeaturePipelineMismatch, match="options"):
        batch.load_state_dict(default.state_dict())
    network(seed=1).load_state_dict(default.state_dict())  # same options: loads


def test_bn_batch_uses_the_batch_statistics_and_never_moves_the_buffers() -> None:
    net = network("bnBatch")
    buffers = {k: v.clone() for k, v in net.extractor.state_dict().items()}
    x = torch.rand(2, 1, 32, 32, 32)
    together = net.compute_features(x)
    alone = net.compute_features(x[:1])
    assert not torch.allclose(together[:1], alone, atol=1e-4), "statistics of the batch, not running ones"
    net.train()
    net(x)
    for key, value in net.extractor.state_dict().items():
        assert torch.equal(value, buffers[key]), f"{key} moved"
    default = network()
    assert torch.allclose(default.compute_features(x)[:1], default.compute_features(x[:1]), atol=1e-4)


def test_bn_batch_keeps_each_image_channels_statistics_to_itself() -> None:
    """With two modalities, bnBatch's statistics are each channel's own: changing the second channel must leave the
    first one's features as they are (pooled over channels, the first changed by up to 0.5)."""
    torch.manual_seed(0)
    net = build_dropgen_network(
        "minimix", tiny_backbone(2 * (1 + FEATURES)), p=0.5, options=("bnBatch",), num_image_channels=2
    )
    randomize_batchnorm_stats(net.extractor)
    net.eval()
    first, second = torch.rand(2, 1, 32, 32, 32), torch.rand(2, 1, 32, 32, 32)
    with_second = net.compute_features(torch.cat([first, second], dim=1))
    with_other = net.compute_features(torch.cat([first, second**3], dim=1))
    torch.testing.assert_close(with_second[:, :FEATURES], with_other[:, :FEATURES], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_second[:, :FEATURES], net.compute_features(first), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_second[:, FEATURES:], with_other[:, FEATURES:], atol=1e-3)


def test_bn_batch_survives_nnunets_multi_gpu_conversion_to_sync_batchnorm() -> None:
    """nnU-Net's DDP training converts every _BatchNorm of the network into a SyncBatchNorm, which in the frozen
    extractor's eval mode would use the running statistics: bnBatch's layers must come through unchanged."""
    net = network("bnBatch")
    x = torch.rand(2, 1, 32, 32, 32)
    before = net.compute_features(x)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.extractor.modules())
    assert torch.equal(converted.compute_features(x), before)
    assert converted.state_dict().keys() == network("bnBatch").state_dict().keys() == network().state_dict().keys()


def test_bn_batch_is_refused_for_an_extractor_without_batchnorm() -> None:
    """anatomix-dev normalizes with InstanceNorm: bnBatch would be the default model under another name. A new
    training is refused; a network built so (to predict with a model trained before) still builds."""
    from _core_helpers import repeat_spec

    from nnunetv2_dropgen.trainers.dropgen import ineffective_option

    without = DropGenNetwork(repeat_spec(2), tiny_backbone(3), options=("bnBatch",))
    assert without.batch_statistics_layers == 0
    assert "'test-repeat' has no BatchNorm layer, so the option would change nothing" in ineffective_option(without)
    assert network("bnBatch").batch_statistics_layers > 0 and ineffective_option(network("bnBatch")) is None
    assert ineffective_option(network()) is None


def test_unit_image_gives_the_backbone_the_image_the_extractor_saw() -> None:
    seen = {}
    net = network("unitImage")
    net.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    x = torch.randn(2, 1, 20, 24, 28) * 5 + 3
    net(x)
    image = seen["z"][:, :1]
    assert float(image.min()) == pytest.approx(0.0, abs=1e-6) and float(image.max()) == pytest.approx(1.0, abs=1e-6)
    seen.clear()
    default = network()
    default.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("z", args[0].clone()))
    default(x)
    assert torch.allclose(seen["z"][:, :1], x), "by default the backbone gets nnU-Net's normalized image"


def test_voxel_norm_standardizes_each_voxel_across_channels() -> None:
    net = network("voxelNorm")
    features = net.compute_features(torch.rand(1, 1, 32, 32, 32))
    torch.testing.assert_close(features.mean(dim=1), torch.zeros_like(features[:, 0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(dim=1, unbiased=False), torch.ones_like(features[:, 0]), atol=1e-2, rtol=0)
    assert net.record.normalization == "voxelwise-norm(eps=1e-05)" and net.record.options == ("voxelNorm",)


def test_volume_scaling_scales_each_window_with_the_whole_volume_through_nnunets_predictor() -> None:
    """A window of background alone is stretched to [0, 1] by per-window scaling; with the whole volume's range
    it stays dark. nnU-Net's own sliding window sets the range for the call and clears it afterwards."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    inputs = []
    volume = torch.zeros(1, 32, 32, 64)
    volume[:, 8:24, 8:24, 40:56] = 10.0  # a bright structure in the second half only
    volume += 0.1 * torch.rand(volume.shape, generator=torch.Generator().manual_seed(0))
    for options in ((), ("volumeScaling",)):
        net = network(*options)
        handle = net.extractor.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
        predictor = nnUNetPredictor(tile_step_size=1.0, use_gaussian=False, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"))  # fmt: skip
        predictor.network = net
        predictor.configuration_manager = type("C", (), {"patch_size": [32, 32, 32]})()
        predictor.label_manager = type("L", (), {"num_segmentation_heads": 2})()
        predictor.allowed_mirroring_axes = None
        predictor.list_of_parameters = [net.state_dict()]
        predictor.predict_sliding_window_return_logits(volume)
        handle.remove()
        assert net.volume_range is None, "the range lives only for the call"
    per_window, per_volume = inputs[:2], inputs[2:]
    assert float(per_window[0].max()) == pytest.approx(1.0), "a background window, stretched"
    assert float(per_volume[0].max()) < 0.05, "the same window, scaled with the volume: dark"
    assert float(per_volume[1].max()) == pytest.approx(1.0, abs=1e-5)
