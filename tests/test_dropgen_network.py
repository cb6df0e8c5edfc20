"""DropGenNetwork: shapes, [0,1] scaling, padding/cropping, channel layout, dropout, frozen extractor, DDP."""

from __future__ import annotations

import dataclasses
import itertools
import socket

import pytest
import torch
import torch.nn.functional as F
from _core_helpers import (
    ANATOMIX_FEATURES,
    ddp_worker,
    mini_anatomix_spec,
    randomize_batchnorm_stats,
    repeat_spec,
    tiny_backbone,
)
from torch import nn

from nnunetv2_dropgen.feature_extractors import InstanceNormalization, registered_extractor, scale_to_unit_range
from nnunetv2_dropgen.network import DropGenNetwork, FeaturePipelineMismatch, build_dropgen_network, centered_padding
from nnunetv2_dropgen.trainers.sibling_folds import mixed_weights_warning


def _repeat_net(
    num_image_channels: int = 1,
    feature_channels: int = 3,
    num_extra_channels: int = 0,
    p: float = 0.75,
    use_image: bool = True,
    multiple: int = 16,
    min_size: int = 32,
    deep_supervision: bool = False,
) -> DropGenNetwork:
    in_ch = DropGenNetwork.backbone_input_channels(num_image_channels, feature_channels, num_extra_channels)
    return DropGenNetwork(
        repeat_spec(feature_channels, multiple, min_size),
        tiny_backbone(max(in_ch, 1), deep_supervision=deep_supervision),
        num_image_channels=num_image_channels,
        p=p,
        num_extra_channels=num_extra_channels,
        use_image=use_image,
    )


def _anatomix_net(num_image_channels: int = 1, p: float = 0.75, **kwargs) -> DropGenNetwork:
    backbone = tiny_backbone(num_image_channels * (1 + ANATOMIX_FEATURES), **kwargs)
    return build_dropgen_network("anatomix", backbone, num_image_channels=num_image_channels, p=p)


class _BackboneInput:
    """Forward pre-hook recording what the backbone receives."""

    def __init__(self, net: DropGenNetwork) -> None:
        self.inputs: list[torch.Tensor] = []
        net.backbone.register_forward_pre_hook(lambda module, args: self.inputs.append(args[0].detach().clone()))


def _expected_features(images: torch.Tensor, powers: int) -> torch.Tensor:
    """What compute_features must return for RepeatExtractor: per image channel, instance-normed unit**k."""
    unit = scale_to_unit_range(images.float())
    chans = [unit[:, c : c + 1] ** (k + 1) for c in range(images.shape[1]) for k in range(powers)]
    return F.instance_norm(torch.cat(chans, dim=1), eps=InstanceNormalization().eps)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("patch", [(20, 320, 256), (56, 40, 40), (20, 40, 36), (32, 32, 32)])
def test_output_and_feature_shapes_for_any_3d_patch(patch):
    """Anatomix-architecture extractor (stride 16, min 32, reflect padding) on awkward and anisotropic patches."""
    torch.manual_seed(0)
    with registered_extractor(mini_anatomix_spec()) as spec:
        net = build_dropgen_network(spec.name, tiny_backbone(1 + spec.feature_channels, num_classes=3)).eval()
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        features = net.compute_features(x)
        out = net(x)
    assert features.shape == (1, spec.feature_channels, *patch)
    assert out.shape == (1, 3, *patch)
    assert torch.isfinite(out).all() and torch.isfinite(features).all()


@pytest.mark.parametrize("patch", [(56, 40, 40), (20, 40, 36)])
def test_anatomix_network_output_shapes(patch):
    torch.manual_seed(0)
    net = _anatomix_net(num_classes=2).eval()
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        assert net.compute_features(x).shape == (1, ANATOMIX_FEATURES, *patch)
        assert net(x).shape == (1, 2, *patch)


# ---------------------------------------------------------------- [0, 1] scaling


def test_scale_to_unit_range_per_sample_and_channel():
    torch.manual_seed(0)
    scale = torch.tensor([1.0, 100.0]).view(1, 2, 1, 1, 1)
    x = torch.randn(3, 2, 5, 6, 7) * scale + torch.arange(3.0).view(3, 1, 1, 1, 1)
    unit = scale_to_unit_range(x)
    flat = unit.flatten(2)
    assert torch.allclose(flat.amin(2), torch.zeros(3, 2), atol=0, rtol=0)
    assert torch.allclose(flat.amax(2), torch.ones(3, 2), atol=1e-6, rtol=0)
    # affine in each (sample, channel): the ordering of voxels is kept
    assert torch.equal(flat.argsort(dim=2), x.flatten(2).argsort(dim=2))


def test_scale_to_unit_range_constant_patch_is_zero():
    unit = scale_to_unit_range(torch.full((2, 1, 4, 4, 4), 3.5))
    assert torch.isfinite(unit).all() and torch.equal(unit, torch.zeros_like(unit))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_constant_patch_gives_finite_output(mode):
    torch.manual_seed(0)
    net = _anatomix_net(p=0.5)
    net.train(mode == "train")
    x = torch.full((2, 1, 32, 32, 32), -7.25)
    with torch.no_grad():
        features = net.compute_features(x)
        out = net(x)
    assert torch.isfinite(features).all()
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- padding and cropping


@pytest.mark.parametrize(
    "shape, multiple, min_size",
    [((20, 320, 256), 16, 32), ((17, 40, 36), 16, 32), ((64, 64, 64), 16, 32), ((1, 5, 33), 8, 8), ((7, 9, 11), 4, 1)],
)
def test_centered_padding_properties(shape, multiple, min_size):
    pad = centered_padding(shape, multiple, min_size)
    assert len(pad) == 2 * len(shape)
    per_axis = list(zip(pad[0::2], pad[1::2], strict=True))[::-1]  # F.pad lists the last axis first
    for size, (before, after) in zip(shape, per_axis, strict=True):
        total = size + before + after
        assert total % multiple == 0 and total >= min_size
        assert total - multiple < max(size, min_size)  # smallest such size
        assert 0 <= before <= after <= before + 1  # centered


def test_centered_padding_lists_last_axis_first():
    assert centered_padding((17, 40, 36), 16, 32) == [6, 6, 4, 4, 7, 8]
    assert centered_padding((32, 48, 64), 16, 32) == [0] * 6


@pytest.mark.parametrize("patch", [(20, 40, 36), (17, 33, 48), (32, 32, 32)])
def test_compute_features_crops_back_exactly(patch):
    torch.manual_seed(0)
    net = _repeat_net(num_image_channels=1, feature_channels=3)
    x = torch.randn(2, 1, *patch) * 50 + 3
    features = net.compute_features(x)
    assert features.shape == (2, 3, *patch)
    torch.testing.assert_close(features, _expected_features(x, 3), rtol=0, atol=1e-6)
    # the extractor saw the padded patch, with the original voxels in its centre
    (seen,) = net.extractor.seen
    pad = centered_padding(patch, 16, 32)
    assert seen.shape == F.pad(x, pad).shape[:1] + (1,) + F.pad(x, pad).shape[2:]
    assert torch.equal(seen, F.pad(scale_to_unit_range(x), pad, mode="replicate"))


# ---------------------------------------------------------------- channel layout


def test_features_per_image_channel_in_order():
    """2 image channels -> 2F feature channels; the first F belong to image channel 0."""
    torch.manual_seed(0)
    f = 3
    net = _repeat_net(num_image_channels=2, feature_channels=f).eval()
    x = torch.stack([torch.zeros(2, 32, 32, 32), torch.randn(2, 32, 32, 32)], dim=1)
    features = net.compute_features(x)
    assert features.shape == (2, 2 * f, 32, 32, 32)
    assert torch.equal(features[:, :f], torch.zeros_like(features[:, :f]))  # constant channel 0
    assert (features[:, f:].std(dim=(2, 3, 4)) > 0.5).all()
    torch.testing.assert_close(features, _expected_features(x, f), rtol=0, atol=1e-6)


def test_concat_order_images_features_extras():
    torch.manual_seed(0)
    f, c_img, c_extra = 2, 2, 3
    net = _repeat_net(num_image_channels=c_img, feature_channels=f, num_extra_channels=c_extra).eval()
    spy = _BackboneInput(net)
    images = torch.randn(2, c_img, 20, 24, 28)
    extras = (torch.rand(2, c_extra, 20, 24, 28) > 0.5).float() * 7  # distinctive values
    with torch.no_grad():
        net(torch.cat([images, extras], dim=1))
    (z,) = spy.inputs
    assert z.shape == (2, c_img * (1 + f) + c_extra, 20, 24, 28)
    assert torch.equal(z[:, :c_img], images)
    torch.testing.assert_close(z[:, c_img : c_img * (1 + f)], _expected_features(images, f), rtol=0, atol=1e-6)
    assert torch.equal(z[:, c_img * (1 + f) :], extras)


def test_extras_never_fed_to_extractor():
    torch.manual_seed(0)
    net = _repeat_net(num_image_channels=1, feature_channels=2, num_extra_channels=2).eval()
    images = torch.randn(3, 1, 32, 32, 32)
    extras = torch.full((3, 2, 32, 32, 32), 123.0)
    with torch.no_grad():
        net(torch.cat([images, extras], dim=1))
    (seen,) = net.extractor.seen
    assert seen.shape == (3, 1, 32, 32, 32)  # B * num_image_channels single-channel volumes
    assert torch.equal(seen, scale_to_unit_range(images))


def test_dropout_spares_extras_and_drops_whole_scaled_channels():
    torch.manual_seed(0)
    f, c_img, c_extra, p = 3, 2, 2, 0.5
    net = _repeat_net(num_image_channels=c_img, feature_channels=f, num_extra_channels=c_extra, p=p)
    spy = _BackboneInput(net)
    images = torch.randn(16, c_img, 20, 24, 28)
    extras = (torch.rand(16, c_extra, 20, 24, 28) > 0.5).float()
    x = torch.cat([images, extras], dim=1)
    with torch.no_grad():
        net.eval()(x)
        net.train()(x)
    reference, z = spy.inputs
    n_drop = c_img * (1 + f)
    assert torch.equal(z[:, n_drop:], extras)  # never dropped, never scaled
    dropped = kept = 0
    for b, c in itertools.product(range(z.shape[0]), range(n_drop)):
        ref = reference[b, c]
        assert ref.abs().sum() > 0  # so "all zero" below can only mean dropped
        if torch.equal(z[b, c], torch.zeros_like(ref)):
            dropped += 1
        else:
            kept += 1
            torch.testing.assert_close(z[b, c], ref / (1 - p), rtol=1e-6, atol=0)
    assert dropped > 0 and kept > 0


def test_dropout_in_network_drops_at_rate_p():
    torch.manual_seed(0)
    p = 0.75
    net = _repeat_net(num_image_channels=1, feature_channels=7, p=p, min_size=16).train()
    spy = _BackboneInput(net)
    with torch.no_grad():
        net(torch.randn(400, 1, 8, 8, 8))
    (z,) = spy.inputs
    kept = z.flatten(2).ne(0).any(dim=2).float().mean().item()
    assert abs(kept - (1 - p)) < 0.03, f"kept fraction {kept:.3f}, expected {1 - p}"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_use_image_false_zeroes_images_keeps_features(mode):
    torch.manual_seed(0)
    f = 4
    net = _repeat_net(num_image_channels=1, feature_channels=f, p=0.5, use_image=False)
    net.train(mode == "train")
    spy = _BackboneInput(net)
    x = torch.randn(4, 1, 20, 24, 28) + 5
    with torch.no_grad():
        net(x)
    (z,) = spy.inputs
    assert torch.equal(z[:, :1], torch.zeros_like(z[:, :1]))
    assert z[:, 1 : 1 + f].abs().sum() > 0
    if mode == "eval":
        torch.testing.assert_close(z[:, 1:], _expected_features(x, f), rtol=0, atol=1e-6)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    net = _repeat_net(num_image_channels=1, feature_channels=4, p=0.5)
    spy = _BackboneInput(net)
    x = torch.randn(8, 1, 20, 24, 28)
    with torch.no_grad():
        net.eval()
        out1, out2 = net(x), net(x)
        net.train()
        net(x)
        net(x)
    assert torch.equal(spy.inputs[0], spy.inputs[1])
    assert torch.equal(out1, out2)
    assert not torch.equal(spy.inputs[2], spy.inputs[3])


# ---------------------------------------------------------------- frozen extractor


def test_extractor_is_frozen_and_batchnorm_stats_never_move():
    torch.manual_seed(0)
    net = _anatomix_net(p=0.5)
    randomize_batchnorm_stats(net.extractor)
    extractor_ids = {id(p) for p in net.extractor.parameters()}
    assert extractor_ids and all(not p.requires_grad for p in net.extractor.parameters())
    n_bn = sum(isinstance(m, nn.BatchNorm3d) for m in net.extractor.modules())
    assert n_bn > 0

    net.train()
    assert net.training and net.backbone.training
    assert net.extractor.training is False
    assert all(not m.training for m in net.extractor.modules())

    extractor_before = {k: v.clone() for k, v in net.extractor.state_dict().items()}
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert trainable and not extractor_ids & {id(p) for p in trainable}
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        loss = net(torch.randn(2, 1, 32, 32, 32)).mean()
        loss.backward()
        optimizer.step()
        net.train()  # as nnU-Net does every epoch

    for key, value in net.extractor.state_dict().items():
        assert torch.equal(value, extractor_before[key]), f"extractor {key} changed"
    assert all(p.grad is None for p in net.extractor.parameters())
    changed = [k for k, v in net.backbone.state_dict().items() if not torch.equal(v, backbone_before[k])]
    assert changed, "no backbone parameter changed: the test would not see a moving extractor either"


def test_state_dict_is_self_contained():
    torch.manual_seed(0)
    net = _anatomix_net(p=0.5)
    randomize_batchnorm_stats(net.extractor, seed=3)
    state = net.state_dict()
    extractor_keys = [k for k in state if k.startswith("extractor.model.")]
    assert len(extractor_keys) == 115
    assert any(k.startswith("backbone.") for k in state)

    torch.manual_seed(1)
    fresh = _anatomix_net(p=0.5)
    x = torch.randn(1, 1, 32, 32, 32)
    net.eval()
    fresh.eval()
    with torch.no_grad():
        reference = net(x)
        assert not torch.allclose(fresh(x), reference)
        fresh.load_state_dict(state, strict=True)
        assert fresh.extractor.training is False
        assert torch.equal(fresh(x), reference)


# ---------------------------------------------------------------- nnU-Net integration details


def test_decoder_is_backbones_and_deep_supervision_toggles():
    torch.manual_seed(0)
    backbone = tiny_backbone(1 + 2, features=(4, 8, 16), deep_supervision=True)
    net = DropGenNetwork(repeat_spec(2, 16, 16), backbone).eval()
    assert net.decoder is backbone.decoder
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
        assert isinstance(out, (list, tuple)) and len(out) > 1
        net.decoder.deep_supervision = False
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 16, 16, 16)


def test_2d_input_is_rejected_with_a_reason():
    net = _repeat_net()
    with pytest.raises(ValueError, match="3D"):
        net(torch.randn(1, 1, 32, 32))


def test_wrong_channel_count_is_rejected():
    net = _repeat_net(num_image_channels=1, num_extra_channels=1)
    with pytest.raises(ValueError, match="2"):
        net(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 1, 16, 16, 16))


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError):
        _repeat_net(num_image_channels=0)
    with pytest.raises(ValueError):
        _repeat_net(num_extra_channels=-1)
    with pytest.raises(ValueError):
        _repeat_net(p=1.0)


def test_features_under_bfloat16_autocast_are_float32_and_normalized():
    torch.manual_seed(0)
    net = _anatomix_net(p=0.5).eval()
    with torch.no_grad():  # randomly initialised features vary by ~1e-7, below the norm's eps: widen them
        net.extractor.model[-1].weight.mul_(1e4)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = net.compute_features(x)
        out = net(x)
    assert features.dtype == torch.float32
    assert features.shape == (2, ANATOMIX_FEATURES, 32, 32, 32)
    mean = features.mean(dim=(2, 3, 4))
    std = features.std(dim=(2, 3, 4), unbiased=False)
    assert mean.abs().max() < 1e-3
    assert (std - 1).abs().max() < 1e-2
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("trainer_name", [None, "nnUNetTrainerDA5_DropGen_minimix"])
def test_ddp_with_sync_batchnorm_keeps_extractor_frozen(tmp_path, trainer_name):
    """A DropGen network alone, and the one DropGen on nnU-Net's DA5 builds from ResEnc plans (-num_gpus 2)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    assert dist.is_available() and dist.is_gloo_available(), "nnU-Net's -num_gpus path needs torch.distributed"
    world_size = 2
    mp.spawn(ddp_worker, args=(world_size, _free_port(), str(tmp_path), trainer_name), nprocs=world_size, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    for rank, run in itertools.product(range(world_size), ("syncbn", "ddp")):
        res = results[rank][run]
        before, after = res["before"], res["after"]
        where = f"rank {rank}, {run}"
        if run == "syncbn":
            assert res["n_sync"] > 0, "convert_sync_batchnorm found no BatchNorm in the extractor"
        assert after["net_training"] is True
        assert not any(after["extractor_training"]), f"{where}: extractor left eval mode"
        assert after["extractor_requires_grad"] and not any(after["extractor_requires_grad"])
        assert before["extractor"].keys() == after["extractor"].keys()
        for key, value in before["extractor"].items():
            assert torch.equal(after["extractor"][key], value), f"{where}: extractor {key} changed"
        changed = [k for k, v in before["backbone"].items() if not torch.equal(after["backbone"][k], v)]
        assert changed, f"{where}: backbone did not train"
        # gradients were averaged across ranks: the replicas stay identical
        other = results[1 - rank][run]["after"]["backbone"]
        for key, value in after["backbone"].items():
            assert torch.equal(other[key], value), f"{where}: replicas differ in {key}"


# ---------------------------------------------------------------- the feature record in every state_dict


@dataclasses.dataclass(frozen=True)
class _ClippedScaling:
    """A different input preprocessing, standing in for a future change of the default."""

    @property
    def identifier(self) -> str:
        return "clip-0-1"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.clamp(0, 1)


def _trained_state(spec, seed: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A network's state_dict (with weights sha256 set as at the start of training), an input and its output."""
    torch.manual_seed(seed)
    net = DropGenNetwork(spec, tiny_backbone(1 + spec.feature_channels)).eval()
    net.record = net.record.with_weights("ab" * 32, "a test file")
    x = torch.randn(1, 1, 16, 16, 16) * 3
    with torch.no_grad():
        return net.state_dict(), x, net(x)


def test_state_dict_records_what_shapes_the_features():
    spec = repeat_spec(3, 16, 16)
    state, _, _ = _trained_state(spec)
    record = state["_extra_state"]
    assert record["extractor"] == spec.name and record["feature_channels"] == 3
    assert record["preprocessing"] == spec.preprocessing.identifier == "minmax-per-patch(eps=1e-08)"
    assert record["normalization"] == spec.normalization.identifier == "instance-norm(eps=1e-05)"
    assert (record["weights_sha256"], record["weights_origin"]) == ("ab" * 32, "a test file")


def test_loading_adopts_the_recorded_weights_and_reproduces_the_output():
    spec = repeat_spec(3, 16, 16)
    state, x, reference = _trained_state(spec)
    torch.manual_seed(1)
    rebuilt = DropGenNetwork(spec, tiny_backbone(4)).eval()
    assert rebuilt.record.weights_sha256 is None
    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.record.weights_sha256 == "ab" * 32
    with torch.no_grad():
        assert torch.equal(rebuilt(x), reference)


def test_a_future_change_of_preprocessing_refuses_old_checkpoints_instead_of_changing_predictions():
    trained_with = repeat_spec(3, 16, 16)
    state, x, reference = _trained_state(trained_with)
    future = dataclasses.replace(trained_with, preprocessing=_ClippedScaling())
    rebuilt = DropGenNetwork(future, tiny_backbone(4)).eval()
    with pytest.raises(FeaturePipelineMismatch) as refused:
        rebuilt.load_state_dict(state, strict=True)
    message = str(refused.value)
    assert "preprocessing 'minmax-per-patch(eps=1e-08)' in the checkpoint, 'clip-0-1' now" in message
    assert "silently change" in message
    # had it loaded, its predictions would have changed: that is what the refusal prevents
    rebuilt.load_state_dict(
        {k: v for k, v in state.items() if k != "_extra_state"} | {"_extra_state": rebuilt.get_extra_state()}
    )
    with torch.no_grad():
        assert not torch.allclose(rebuilt(x), reference)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"normalization": InstanceNormalization(eps=1e-3)}, "normalization"),
        ({"name": "test-other"}, "extractor"),
    ],
)
def test_every_shaping_difference_is_named(change, field):
    trained_with = repeat_spec(3, 16, 16)
    state, _, _ = _trained_state(trained_with)
    rebuilt = DropGenNetwork(dataclasses.replace(trained_with, **change), tiny_backbone(4))
    with pytest.raises(FeaturePipelineMismatch, match=f"{field} .* in the checkpoint"):
        rebuilt.load_state_dict(state)


def test_a_checkpoint_from_before_records_is_checked_against_what_that_version_computed():
    legacy_pipeline = repeat_spec(3, 16, 16)
    state, x, reference = _trained_state(legacy_pipeline)
    del state["_extra_state"]
    rebuilt = DropGenNetwork(legacy_pipeline, tiny_backbone(4)).eval()
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), reference)
    changed = DropGenNetwork(dataclasses.replace(legacy_pipeline, preprocessing=_ClippedScaling()), tiny_backbone(4))
    with pytest.raises(FeaturePipelineMismatch, match="preprocessing"):
        changed.load_state_dict(state)


def test_an_unknown_record_format_is_refused():
    spec = repeat_spec(3, 16, 16)
    state, _, _ = _trained_state(spec)
    state["_extra_state"] = {"format": "something-else/9"}
    with pytest.raises(FeaturePipelineMismatch, match="another nnunetv2-dropgen version"):
        DropGenNetwork(spec, tiny_backbone(4)).load_state_dict(state)


def test_an_ensemble_of_folds_started_from_other_extractor_weights_is_named_at_prediction() -> None:
    """nnU-Net's predictor loads every fold's checkpoint into one network: folds trained side by side, one of
    them without DROPGEN_WEIGHTS_<NAME>, were never compared while training."""
    import warnings

    states = []
    for sha in ("a" * 64, "b" * 64):
        net = _repeat_net()
        net.record = net.record.with_weights(sha, "a file")
        states.append(net.state_dict())
    predictor_network = _repeat_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):  # one fold, loaded for every case
            predictor_network.load_state_dict(states[0])
    with pytest.warns(UserWarning, match=f"different test-repeat weights \\(sha256 {'a' * 64} and {'b' * 64}\\)"):
        predictor_network.load_state_dict(states[1])


def test_a_fold_started_from_other_extractor_weights_than_its_siblings_is_named(tmp_path) -> None:
    """Folds of one model are ensembled; DROPGEN_WEIGHTS_<NAME> is not in the trainer name, so a fold trained
    without it (or with another file) must be said, from the sha256 each checkpoint records."""
    model = tmp_path / "DropGenTrainer__nnUNetPlans__3d_fullres"
    for fold, sha in (("fold_0", "a" * 64), ("fold_1", "b" * 64)):
        net = _repeat_net()
        net.record = net.record.with_weights(sha, f"origin of {fold}")
        (model / fold).mkdir(parents=True)
        torch.save({"network_weights": net.state_dict()}, model / fold / "checkpoint_final.pth")
    (model / "fold_3").mkdir()  # a fold without a checkpoint yet says nothing
    (model / "fold_4").mkdir()  # nor one whose checkpoint a parallel training is writing
    written = (model / "fold_1" / "checkpoint_final.pth").read_bytes()
    (model / "fold_4" / "checkpoint_final.pth").write_bytes(written[: len(written) // 2])
    this = _repeat_net().record.with_weights("a" * 64, "environment (DROPGEN_WEIGHTS_X)")

    warning = mixed_weights_warning(model / "fold_2", this, "DROPGEN_WEIGHTS_X")
    assert warning is not None and "fold_1: sha256 " + "b" * 64 in warning and "origin of fold_1" in warning
    assert "fold_0" not in warning, "a sibling with the same weights is not listed"
    assert "DROPGEN_WEIGHTS_X" in warning and "nnUNetv2_predict ensembles the folds" in warning
    same = this.with_weights("b" * 64, "x")
    assert "fold_0" in mixed_weights_warning(model / "fold_1", same, "DROPGEN_WEIGHTS_X"), "fold_1 itself is skipped"
    (model / "fold_1" / "checkpoint_final.pth").unlink()
    assert mixed_weights_warning(model / "fold_2", this, "DROPGEN_WEIGHTS_X") is None
