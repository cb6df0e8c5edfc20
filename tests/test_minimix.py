"""The embedded extractor: its shipped file is the recorded one, it is small, and its features are stable.

Nothing here needs ../shared or a download: this is what lets a fresh clone train DropGen offline.
"""

from __future__ import annotations

import pytest
import torch

from nnunetv2_dropgen.feature_extractors import MINIMIX, AnatomixUNet, get_extractor_spec, load_pretrained
from nnunetv2_dropgen.pretraining import StabilityBenchmark, held_out_pool, measure_stability
from nnunetv2_dropgen.pretraining.stability import StabilitySettings
from nnunetv2_dropgen.weights import packaged_path, read_record, resolve_weights, sha256_file

SPEC = get_extractor_spec("minimix")
HELD_OUT_SEED = 12345
"""Not the pretraining seed (0): these label maps and appearances were never seen in pretraining."""


@pytest.fixture(scope="module")
def minimix() -> AnatomixUNet:
    module = SPEC.build()
    resolved = load_pretrained("minimix", module)
    assert resolved is not None and resolved.verified and resolved.origin == "package"
    return module.eval()


def test_the_shipped_file_is_the_one_the_spec_names() -> None:
    path = packaged_path(SPEC.weights)
    assert path.is_file(), "the embedded weights are missing from the installed package"
    assert sha256_file(path) == SPEC.weights.sha256
    resolved = resolve_weights("minimix", SPEC.weights)
    assert (resolved.path, resolved.sha256, resolved.verified) == (path, SPEC.weights.sha256, True)


def test_the_shipped_record_describes_the_file() -> None:
    record = read_record(packaged_path(SPEC.weights))
    assert record is not None and record["architecture"] == "minimix" and record["sha256"] == SPEC.weights.sha256
    trained, random = record["metrics"]["trained"], record["metrics"]["random_weights"]
    assert trained["gap"] > random["gap"]


def test_it_is_small_and_has_anatomix_layout(minimix: AnatomixUNet) -> None:
    assert minimix.config == MINIMIX
    assert sum(p.numel() for p in minimix.parameters()) <= 2_000_000
    assert packaged_path(SPEC.weights).stat().st_size < 8 * 2**20
    assert (SPEC.feature_channels, SPEC.spatial_multiple) == (16, 16)


def test_a_damaged_installation_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """An embedded file whose sha256 differs from the spec's must never be used silently."""
    from dataclasses import replace

    from nnunetv2_dropgen.weights import WeightsChecksumMismatch

    with pytest.raises(WeightsChecksumMismatch):
        resolve_weights("minimix", replace(SPEC.weights, sha256="0" * 64))


def test_its_features_are_more_stable_across_appearance_than_random_weights(minimix: AnatomixUNet) -> None:
    """Can fail: on held-out synthetic label maps rendered in new appearances, the pretrained features must
    keep voxels of one structure together across appearances, and a linear probe fitted on one appearance
    must segment the others, both clearly better than the same architecture with random weights."""
    benchmark = StabilityBenchmark.build(held_out_pool(HELD_OUT_SEED), HELD_OUT_SEED, StabilitySettings(maps=4))
    torch.manual_seed(0)
    random = SPEC.build()
    trained = measure_stability(minimix, benchmark, SPEC.preprocessing, SPEC.normalization)
    baseline = measure_stability(random, benchmark, SPEC.preprocessing, SPEC.normalization)
    assert trained.gap > baseline.gap + 0.2, f"minimix {trained.describe()}; random {baseline.describe()}"
    assert trained.probe_dice_other > baseline.probe_dice_other + 0.1, (trained.describe(), baseline.describe())
