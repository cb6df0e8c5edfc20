"""anatomix parity with the published architecture, and the extractor registry."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _core_helpers import (
    ANATOMIX_FEATURES,
    FIXTURES,
    FIXTURES_MISSING,
    relative_error,
    requires_fixtures,
    tiny_backbone,
)
from torch import nn

from nnunetv2_dropgen.feature_extractors import (
    ANATOMIX,
    ANATOMIX_DEV,
    AnatomixConfig,
    AnatomixUNet,
    ExtractorSpec,
    available_extractors,
    get_extractor_spec,
    load_pretrained,
    register_extractor,
    registered_extractor,
)
from nnunetv2_dropgen.network import build_dropgen_network
from nnunetv2_dropgen.network.factory import state_dict_sha256
from nnunetv2_dropgen.weights import WeightsArchitectureMismatch, WeightsMissing, sha256_file

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
        pytest.skip(FIXTURES_MISSING)
    with np.load(FIXTURES / "anatomix_reference_io.npz") as data:
        return {key: torch.from_numpy(data[key]) for key in data.files}


@pytest.fixture(scope="module")
def anatomix_model():
    if not FIXTURES.is_dir():
        pytest.skip(FIXTURES_MISSING)
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
    spec = get_extractor_spec("anatomix")
    assert (
        (spec.feature_channels, spec.spatial_multiple) == (16, 16) == (ANATOMIX_FEATURES, model.config.spatial_multiple)
    )


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
    normed = F.instance_norm(raw, eps=get_extractor_spec("anatomix").normalization.eps)
    assert relative_error(normed, anatomix_io["instance_normed_output_float64"]) <= FLOAT64_TOLERANCE


@requires_fixtures
def test_anatomix_in_float32_stays_close_to_the_float64_reference(anatomix_model, anatomix_io):
    with torch.no_grad():
        raw = anatomix_model(anatomix_io["input"])
    assert raw.dtype == torch.float32
    assert relative_error(raw, anatomix_io["raw_output_float64"]) <= FLOAT32_TOLERANCE
    normed = F.instance_norm(raw, eps=get_extractor_spec("anatomix").normalization.eps)
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
    spec = get_extractor_spec("anatomix-dev")
    assert (spec.feature_channels, spec.spatial_multiple) == (32, 32) == (32, model.config.spatial_multiple)


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


def test_published_extractors_are_registered_with_their_facts():
    anatomix, dev = get_extractor_spec("anatomix"), get_extractor_spec("anatomix-dev")
    assert {"anatomix", "anatomix-dev"} <= set(available_extractors())
    assert (anatomix.feature_channels, anatomix.spatial_multiple, anatomix.min_spatial_size) == (16, 16, 32)
    assert (dev.feature_channels, dev.spatial_multiple, dev.min_spatial_size) == (32, 32, 64)
    assert anatomix.preprocessing.identifier == "minmax-per-patch(eps=1e-08)"
    assert anatomix.normalization.identifier == "instance-norm(eps=1e-05)"
    assert anatomix.weights.filename == "anatomix.pth" and anatomix.weights.git_blob_sha1
    assert "36M" in dev.weights.history
    assert (anatomix.trainer_token, dev.trainer_token) == ("anatomix", "anatomixDev")
    module = anatomix.build()
    assert isinstance(module, AnatomixUNet) and module.config == ANATOMIX


def test_min_spatial_size_defaults_to_the_spatial_multiple_once():
    spec = ExtractorSpec(name="test-default-min", build=nn.Identity, feature_channels=1, spatial_multiple=8)
    assert spec.min_spatial_size == 8
    bigger = ExtractorSpec(
        name="test-min", build=nn.Identity, feature_channels=1, spatial_multiple=8, min_spatial_size=24
    )
    assert bigger.min_spatial_size == 24


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
    spec = ExtractorSpec(
        name="test-user-conv", build=lambda: conv, feature_channels=3, spatial_multiple=4, pretrained_by_build=True
    )
    with registered_extractor(spec):
        assert "test-user-conv" in available_extractors()
        backbone = tiny_backbone(1 * (1 + 3), num_classes=3)
        net = build_dropgen_network("test-user-conv", backbone, pretrained=True)
        assert net.extractor is conv
        assert net.feature_channels == 3 and net.spec is spec
        assert net.record.weights_sha256 == state_dict_sha256(conv)
        assert (
            net.record.weights_origin
            == f"provided by the extractor's build function (sha256 {state_dict_sha256(conv)})"
        )
        net.eval()
        with torch.no_grad():
            out = net(torch.randn(2, 1, 10, 12, 6))
        assert out.shape == (2, 3, 10, 12, 6)
        assert calls == [(2, 1, 12, 12, 8)]  # padded to multiples of 4
    assert "test-user-conv" not in available_extractors()


def test_an_extractor_without_weights_is_refused_unless_its_build_is_pretrained(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """weights=None and no DROPGEN_WEIGHTS_<NAME>: training would freeze random features, so it must not start."""
    spec = ExtractorSpec(
        name="test-no-weights", build=lambda: nn.Conv3d(1, 2, 1), feature_channels=2, spatial_multiple=4
    )
    monkeypatch.delenv("DROPGEN_WEIGHTS_TEST_NO_WEIGHTS", raising=False)
    with registered_extractor(spec):
        with pytest.raises(WeightsMissing, match=r"random weights of its build function\. Set DROPGEN_WEIGHTS_TEST"):
            build_dropgen_network("test-no-weights", tiny_backbone(3), pretrained=True)
        assert build_dropgen_network("test-no-weights", tiny_backbone(3)).record.weights_sha256 is None
        file = tmp_path / "weights.pth"
        torch.save(nn.Conv3d(1, 2, 1).state_dict(), file)
        monkeypatch.setenv("DROPGEN_WEIGHTS_TEST_NO_WEIGHTS", str(file))
        loaded = build_dropgen_network("test-no-weights", tiny_backbone(3), pretrained=True)
        assert loaded.record.weights_sha256 == sha256_file(file)


def test_weights_without_pretrained_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="only loaded with pretrained=True"):
        build_dropgen_network("minimix2", tiny_backbone(17), weights=tmp_path / "weights.pth")


def test_the_same_extractor_registered_again_is_a_no_op_even_from_a_reexecuted_module(tmp_path):
    """nnU-Net executes an nnUNet_extTrainer module at every trainer search: new class objects, same extractor."""
    module = tmp_path / "reexecuted_extractor.py"
    module.write_text(
        "from torch import nn\n"
        "from nnunetv2_dropgen.feature_extractors import ExtractorSpec, register_extractor\n"
        "class Reexecuted(nn.Conv3d):\n"
        "    def __init__(self):\n"
        "        super().__init__(1, 2, 1)\n"
        "register_extractor(ExtractorSpec(name='test-reexecuted', build=Reexecuted, feature_channels=2, "
        "spatial_multiple=1))\n"
    )
    code = compile(module.read_text(), str(module), "exec")
    try:
        for _ in range(3):
            exec(code, {"__name__": "reexecuted_extractor"})
        assert get_extractor_spec("test-reexecuted").build().out_channels == 2
    finally:
        from nnunetv2_dropgen.feature_extractors import registry

        registry._REGISTRY.pop("test-reexecuted", None)


def test_registering_a_different_spec_under_a_taken_name_fails():
    spec = ExtractorSpec(name="test-taken", build=lambda: nn.Conv3d(1, 2, 1), feature_channels=2, spatial_multiple=1)
    with registered_extractor(spec):
        register_extractor(spec)  # the same spec again is harmless (module re-import)
        other = ExtractorSpec(name="test-taken", build=spec.build, feature_channels=5, spatial_multiple=1)
        with pytest.raises(
            ValueError, match="already registered.*feature_channels 2 registered, 5 now.*overwrite=True"
        ):
            register_extractor(other)
        elsewhere = dataclasses.replace(spec, build=lambda: nn.Conv3d(1, 2, 1))  # same name, another function
        with pytest.raises(ValueError, match="differs \\(build .*<lambda>.*:\\d+"):
            register_extractor(elsewhere)
        assert get_extractor_spec("test-taken") is spec
        register_extractor(other, overwrite=True)
        assert get_extractor_spec("test-taken") is other
        with pytest.raises(ValueError, match="already registered"):
            with registered_extractor(spec):
                pass
    anatomix_clash = ExtractorSpec(name="anatomix", build=spec.build, feature_channels=16, spatial_multiple=16)
    with pytest.raises(ValueError, match="already registered"):
        register_extractor(anatomix_clash)
    assert get_extractor_spec("anatomix").build is not spec.build


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"feature_channels": 0}, "positive"),
        ({"spatial_multiple": 0}, "positive"),
        ({"name": "My_Extractor"}, "lower-case"),
    ],
)
def test_spec_rejects_bad_values(fields, message):
    values = {"name": "test-bad", "build": nn.Identity, "feature_channels": 3, "spatial_multiple": 4} | fields
    with pytest.raises(ValueError, match=message):
        ExtractorSpec(**values)


@requires_fixtures
def test_weights_of_another_architecture_are_refused_with_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = FIXTURES / "mini_dev_random_weights.pth"
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(wrong))
    with pytest.warns(UserWarning, match="UNVERIFIED"), pytest.raises(WeightsArchitectureMismatch) as refused:
        build_dropgen_network("anatomix", tiny_backbone(1 + ANATOMIX_FEATURES), pretrained=True)
    message = str(refused.value)
    assert str(wrong) in message and "does not fit the 'anatomix' architecture" in message
    assert "5.9M" in message and "DROPGEN_WEIGHTS_ANATOMIX" in message


@requires_fixtures
def test_an_old_anatomix_dev_layout_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A 16-channel file where anatomix-dev now has 32: the sentence tells the Hub history and how to pin."""
    old_layout = AnatomixUNet(AnatomixConfig(output_nc=16, num_downs=5, ngf=4, norm="instance", pooling="Avg"))
    path = tmp_path / "anatomix-dev.pth"
    torch.save(old_layout.state_dict(), path)
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX_DEV", str(path))
    with torch.device("meta"):
        dev = AnatomixUNet(ANATOMIX_DEV)
    with pytest.raises(WeightsArchitectureMismatch) as refused:  # no published checksum: no UNVERIFIED warning
        load_pretrained("anatomix-dev", dev)
    assert "36M parameters, 16 feature channels" in str(refused.value)
    assert "DROPGEN_REVISION_ANATOMIX_DEV" in str(refused.value)


@requires_fixtures
def test_pretrained_build_loads_the_named_file_and_records_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(FIXTURES / "anatomix_random_weights.pth"))
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        net = build_dropgen_network("anatomix", tiny_backbone(1 + ANATOMIX_FEATURES), pretrained=True)
    published = torch.load(FIXTURES / "anatomix_random_weights.pth", weights_only=True)
    assert all(torch.equal(net.extractor.state_dict()[k], v) for k, v in published.items())
    assert net.record.weights_sha256 == sha256_file(FIXTURES / "anatomix_random_weights.pth")
    assert "DROPGEN_WEIGHTS_ANATOMIX" in net.record.weights_origin and "UNVERIFIED" in net.record.weights_origin


@requires_fixtures
def test_weights_saved_from_a_compiled_model_load(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    published = torch.load(FIXTURES / "anatomix_random_weights.pth", weights_only=True)
    path = tmp_path / "compiled.pth"
    torch.save({f"_orig_mod.{key}": value for key, value in published.items()}, path)
    module = AnatomixUNet(ANATOMIX)
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        load_pretrained("anatomix", module, path)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in published.items())
