"""anatomix parity with the published architecture, and the extractor registry."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _core_helpers import FIXTURES, registered, relative_error, requires_fixtures, tiny_backbone
from torch import nn

from nnunetv2_dropgen.feature_extractors import (
    ANATOMIX,
    ANATOMIX_DEV,
    AnatomixConfig,
    AnatomixUNet,
    ExtractorSpec,
    available_extractors,
    build_extractor,
    get_extractor_spec,
    register_extractor,
)
from nnunetv2_dropgen.network import build_dropgen_network
from nnunetv2_dropgen.network.dropgen_network import FEATURE_INSTANCE_NORM_EPS

MINI_DEV = AnatomixConfig(output_nc=8, num_downs=3, ngf=4, norm="instance", pooling="Avg", interp="trilinear")
FLOAT64_TOLERANCE = 1e-9
"""Exact parity: the model in float64 against the float64 references (independent of CPU, build, threads)."""
FLOAT32_TOLERANCE = 1e-4
"""float32 against the float64 references: float32 rounding and instance-norm cancellation stay below this."""


def _shapes(module: nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def _load(config: AnatomixConfig, weights_file: str) -> AnatomixUNet:
    model = AnatomixUNet(config)
    state_dict = torch.load(FIXTURES / weights_file, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def anatomix_io():
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/anatomix not found: parity fixtures ship only beside the CI checkout")
    with np.load(FIXTURES / "anatomix_reference_io.npz") as data:
        return {key: torch.from_numpy(data[key]) for key in data.files}


@pytest.fixture(scope="module")
def anatomix_model():
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/anatomix not found: parity fixtures ship only beside the CI checkout")
    return _load(ANATOMIX, "anatomix_random_weights.pth")


# ---------------------------------------------------------------- anatomix layout and parity


@requires_fixtures
def test_anatomix_state_dict_layout_matches_published():
    expected = json.loads((FIXTURES / "anatomix_state_dict_shapes.json").read_text())
    model = AnatomixUNet(ANATOMIX)
    assert len(expected) == 115
    assert _shapes(model) == expected
    assert list(model.state_dict()) == list(expected)  # same order as the published file
    assert sum(p.numel() for p in model.parameters()) == 5_899_344
    assert model.out_channels == 16 and model.spatial_multiple == 16


@requires_fixtures
def test_anatomix_fixture_weights_have_published_layout():
    expected = json.loads((FIXTURES / "anatomix_state_dict_shapes.json").read_text())
    state_dict = torch.load(FIXTURES / "anatomix_random_weights.pth", map_location="cpu", weights_only=True)
    assert {key: list(value.shape) for key, value in state_dict.items()} == expected


@requires_fixtures
def test_anatomix_in_float64_reproduces_the_float64_reference(anatomix_model, anatomix_io):
    model = copy.deepcopy(anatomix_model).double()
    assert not model.training
    with torch.no_grad():
        raw = model(anatomix_io["input"].double())
    assert raw.shape == anatomix_io["raw_output_float64"].shape == (1, 16, 48, 64, 32)
    assert relative_error(raw, anatomix_io["raw_output_float64"]) <= FLOAT64_TOLERANCE
    normed = F.instance_norm(raw, eps=FEATURE_INSTANCE_NORM_EPS)
    assert relative_error(normed, anatomix_io["instance_normed_output_float64"]) <= FLOAT64_TOLERANCE


@requires_fixtures
def test_anatomix_in_float32_stays_close_to_the_float64_reference(anatomix_model, anatomix_io):
    with torch.no_grad():
        raw = anatomix_model(anatomix_io["input"])
    assert raw.dtype == torch.float32
    assert relative_error(raw, anatomix_io["raw_output_float64"]) <= FLOAT32_TOLERANCE
    normed = F.instance_norm(raw, eps=FEATURE_INSTANCE_NORM_EPS)
    assert relative_error(normed, anatomix_io["instance_normed_output_float64"]) <= FLOAT32_TOLERANCE


@requires_fixtures
def test_anatomix_in_train_mode_differs_from_reference(anatomix_io):
    """The fixture's BatchNorm statistics are random: only eval mode reproduces the reference."""
    model = _load(ANATOMIX, "anatomix_random_weights.pth").train()
    with torch.no_grad():
        raw = model(anatomix_io["input"])
    assert relative_error(raw, anatomix_io["raw_output_float64"]) > 1e-2


@requires_fixtures
def test_anatomix_dev_state_dict_layout_matches_published():
    expected = json.loads((FIXTURES / "anatomix_dev_state_dict_shapes.json").read_text())
    with torch.device("meta"):  # 94M parameters: shapes only, no memory
        model = AnatomixUNet(ANATOMIX_DEV)
    assert _shapes(model) == expected
    assert list(model.state_dict()) == list(expected)
    assert model.out_channels == 32 and model.spatial_multiple == 32


@requires_fixtures
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, FLOAT32_TOLERANCE)])
def test_mini_dev_reproduces_the_float64_reference(dtype, tolerance):
    model = _load(MINI_DEV, "mini_dev_random_weights.pth").to(dtype)
    with np.load(FIXTURES / "mini_dev_reference_io.npz") as data:
        x, ref = torch.from_numpy(data["input"]), torch.from_numpy(data["raw_output_float64"])
    with torch.no_grad():
        out = model(x.to(dtype))
    assert out.dtype == dtype
    assert out.shape == ref.shape == (1, 8, 32, 24, 40)
    assert relative_error(out, ref) <= tolerance


def test_anatomix_rejects_non_3d_input():
    model = AnatomixUNet(AnatomixConfig(output_nc=2, num_downs=2, ngf=2))
    with pytest.raises(ValueError, match=r"3D.*\(B, 1, Z, Y, X\)"):
        model(torch.zeros(1, 1, 16, 16))


def test_anatomix_rejects_spatial_size_not_divisible():
    model = AnatomixUNet(ANATOMIX)
    with pytest.raises(ValueError, match=r"divisible by 16.*\(32, 40, 32\).*Pad the input"):
        model(torch.zeros(1, 1, 32, 40, 32))


# ---------------------------------------------------------------- registry


def test_published_extractors_are_registered():
    names = available_extractors()
    assert "anatomix" in names and "anatomix-dev" in names
    spec = get_extractor_spec("anatomix")
    assert (spec.out_channels, spec.spatial_multiple) == (16, 16)
    assert spec.min_size >= spec.spatial_multiple
    dev = get_extractor_spec("anatomix-dev")
    assert (dev.out_channels, dev.spatial_multiple) == (32, 32)


def test_built_anatomix_matches_its_spec():
    module, sentence = build_extractor("anatomix", pretrained=False)
    assert isinstance(module, AnatomixUNet) and module.config == ANATOMIX
    assert "random" in sentence


def test_unknown_extractor_raises_helpful_key_error():
    with pytest.raises(KeyError) as info:
        get_extractor_spec("nope")
    message = str(info.value)
    assert "nope" in message and "anatomix" in message and "register_extractor" in message


def test_user_extractor_is_used_by_build_dropgen_network():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 3, 1)
    calls: list[tuple[int, ...]] = []
    conv.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
    spec = ExtractorSpec(name="test-user-conv", build=lambda: conv, out_channels=3, spatial_multiple=4)
    with registered(spec):
        assert "test-user-conv" in available_extractors()
        backbone = tiny_backbone(1 * (1 + 3), num_classes=3)
        net = build_dropgen_network("test-user-conv", backbone, 1)
        assert net.extractor is conv
        assert net.feature_channels == 3 and net.spatial_multiple == 4
        net.eval()
        with torch.no_grad():
            out = net(torch.randn(2, 1, 10, 12, 6))
        assert out.shape == (2, 3, 10, 12, 6)
        assert calls == [(2, 1, 12, 12, 8)]  # padded to multiples of 4
        module, sentence = build_extractor("test-user-conv", pretrained=True)
        assert module is conv and "own build function" in sentence
    assert "test-user-conv" not in available_extractors()


def test_registering_a_different_spec_under_a_taken_name_fails():
    spec = ExtractorSpec(name="test-taken", build=lambda: nn.Conv3d(1, 2, 1), out_channels=2, spatial_multiple=1)
    with registered(spec):
        register_extractor(spec)  # the same spec again is harmless (module re-import)
        other = ExtractorSpec(name="test-taken", build=spec.build, out_channels=5, spatial_multiple=1)
        with pytest.raises(ValueError, match="already registered.*overwrite=True"):
            register_extractor(other)
        assert get_extractor_spec("test-taken") is spec
        register_extractor(other, overwrite=True)
        assert get_extractor_spec("test-taken") is other
    anatomix_clash = ExtractorSpec(name="anatomix", build=spec.build, out_channels=16, spatial_multiple=16)
    with pytest.raises(ValueError, match="already registered"):
        register_extractor(anatomix_clash)
    assert get_extractor_spec("anatomix").build is not spec.build


@pytest.mark.parametrize("out_channels, multiple", [(0, 4), (3, 0)])
def test_register_rejects_non_positive_sizes(out_channels, multiple):
    spec = ExtractorSpec(name="test-bad", build=nn.Identity, out_channels=out_channels, spatial_multiple=multiple)
    with pytest.raises(ValueError, match="positive"):
        register_extractor(spec)
    assert "test-bad" not in available_extractors()


@requires_fixtures
def test_weights_of_another_architecture_are_refused_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2_dropgen.weights import WeightsError

    wrong = FIXTURES / "mini_dev_random_weights.pth"
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(wrong))
    with pytest.warns(UserWarning, match="UNVERIFIED"), pytest.raises(WeightsError) as refused:
        build_dropgen_network("anatomix", tiny_backbone(17), 1, pretrained=True)
    assert str(wrong) in str(refused.value) and "weights fetch anatomix --force" in str(refused.value)


@requires_fixtures
def test_pretrained_build_loads_the_named_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(FIXTURES / "anatomix_random_weights.pth"))
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        net = build_dropgen_network("anatomix", tiny_backbone(17), 1, pretrained=True)
    published = torch.load(FIXTURES / "anatomix_random_weights.pth", weights_only=True)
    assert all(torch.equal(net.extractor.state_dict()[k], v) for k, v in published.items())
    assert "DROPGEN_WEIGHTS_ANATOMIX" in net.extractor_weights and "UNVERIFIED" in net.extractor_weights
