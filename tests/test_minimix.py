"""The embedded extractors: each shipped file is the recorded one, small, and its features are stable.

Nothing here needs ../shared or a download: this is what lets a fresh clone train DropGen offline. minimix2 is
the default embedded extractor; minimix, the first one, stays so that models trained with it predict as before.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nnunetv2_dropgen.feature_extractors import EMBEDDED_DEFAULT, MINIMIX, get_extractor_spec, load_pretrained
from nnunetv2_dropgen.pretraining import StabilityBenchmark, held_out_pool, measure_stability
from nnunetv2_dropgen.pretraining.stability import StabilitySettings
from nnunetv2_dropgen.synthetic import SHAPE_KINDS
from nnunetv2_dropgen.synthetic.families import PRETRAINING_FAMILIES
from nnunetv2_dropgen.weights import WeightsChecksumMismatch, packaged_path, read_record, resolve_weights

EMBEDDED = ("minimix", "minimix2")
HELD_OUT_SEED = 12345
"""Not the pretraining seed (0): these label maps and appearances were never seen in pretraining."""


@pytest.fixture(scope="module")
def benchmark() -> StabilityBenchmark:
    return StabilityBenchmark.build(held_out_pool(HELD_OUT_SEED), HELD_OUT_SEED, StabilitySettings(maps=4))


def loaded(name: str) -> torch.nn.Module:
    module = get_extractor_spec(name).build()
    resolved = load_pretrained(name, module)
    assert resolved is not None and resolved.verified and resolved.origin == "package"
    return module.eval()


@pytest.mark.parametrize("name", EMBEDDED)
def test_the_shipped_file_is_the_one_the_spec_names_and_loads_strictly(name: str) -> None:
    spec = get_extractor_spec(name)
    path = packaged_path(spec.weights)
    assert path.is_file(), "the embedded weights are missing from the installed package"
    resolved = resolve_weights(name, spec.weights)
    assert (resolved.path, resolved.sha256, resolved.verified) == (path, spec.weights.sha256, True)
    spec.build().load_state_dict(torch.load(path, weights_only=True), strict=True)
    with pytest.raises(WeightsChecksumMismatch):  # a damaged installation is never used silently
        resolve_weights(name, replace(spec.weights, sha256="0" * 64))


@pytest.mark.parametrize("name", EMBEDDED)
def test_it_is_small_and_has_anatomix_layout(name: str) -> None:
    spec = get_extractor_spec(name)
    assert loaded(name).config == MINIMIX
    assert sum(p.numel() for p in spec.build().parameters()) <= 2_000_000
    assert packaged_path(spec.weights).stat().st_size < 8 * 2**20
    assert (spec.feature_channels, spec.spatial_multiple) == (16, 16)


def test_the_default_is_minimix2_and_its_record_says_what_it_saw() -> None:
    """Pretrained on the pretraining shape families only, never on the benchmark's kinds; chosen by the held-out
    probe Dice on those kinds, which it beat random weights on by far."""
    assert EMBEDDED_DEFAULT == "minimix2"
    spec = get_extractor_spec("minimix2")
    record = read_record(packaged_path(spec.weights))
    assert record is not None and record["sha256"] == spec.weights.sha256
    (source,) = record["data"]["sources"]  # "2000 synthetic structures (noise_blob, tube, ...; longest side ...)"
    families = set(source.split("(", 1)[1].split(";")[0].split(", "))
    assert families == set(PRETRAINING_FAMILIES)
    assert not families & set(SHAPE_KINDS), "the benchmark's kinds were never pretrained on"
    assert record["metrics"]["selection"] == "probe_dice_other" and "benchmark's kinds" in record["metrics"]["held_out"]
    best = record["metrics"]["best"]
    assert best["step"] == record["steps"] and best["probe_dice_other"] == max(
        h["probe_dice_other"] for h in record["metrics"]["history"]
    )


@pytest.mark.parametrize("name", EMBEDDED)
def test_its_features_are_more_stable_across_appearance_than_random_weights(
    name: str, benchmark: StabilityBenchmark
) -> None:
    """Can fail: on held-out label maps of the benchmark's structure kinds in new appearances, the pretrained
    features must keep voxels of one structure together across appearances, and a linear probe fitted on one
    appearance must segment the others, both clearly better than the same architecture with random weights."""
    spec = get_extractor_spec(name)
    torch.manual_seed(0)
    random = spec.build()
    trained = measure_stability(loaded(name), benchmark, spec.preprocessing, spec.normalization)
    baseline = measure_stability(random, benchmark, spec.preprocessing, spec.normalization)
    assert trained.gap > baseline.gap + 0.2, f"{name} {trained.describe()}; random {baseline.describe()}"
    assert trained.probe_dice_other > baseline.probe_dice_other + 0.1, (trained.describe(), baseline.describe())


def test_minimix2_is_more_stable_than_the_first_minimix_on_shapes_it_never_saw(benchmark: StabilityBenchmark) -> None:
    """Can fail: the new pretraining must beat the old on held-out kinds (which the old one had even seen)."""
    spec = get_extractor_spec("minimix2")
    new = measure_stability(loaded("minimix2"), benchmark, spec.preprocessing, spec.normalization)
    old = measure_stability(loaded("minimix"), benchmark, spec.preprocessing, spec.normalization)
    assert new.gap > old.gap + 0.1 and new.probe_dice_other > old.probe_dice_other + 0.05, (new, old)
