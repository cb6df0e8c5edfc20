"""Which weights a pretraining run starts from, and the references its stability is judged against.

A stability number means little alone: it is printed beside the same architecture with random weights
and, when its weights are on this machine (cache, environment or package; never downloaded for this),
the published anatomix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnunetv2_dropgen.feature_extractors import ExtractorSpec, available_extractors, get_extractor_spec, load_pretrained
from nnunetv2_dropgen.pretraining.stability import StabilityBenchmark, StabilityMetrics, measure_stability
from nnunetv2_dropgen.weights import WeightsArchitectureMismatch, WeightsError, load_state_dict_file

PUBLISHED_REFERENCE = "anatomix"


def random_extractor(spec: ExtractorSpec, seed: int) -> nn.Module:
    """`spec`'s architecture with the random weights torch seed `seed` gives (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build()


def load_weights_file(module: nn.Module, path: str | os.PathLike, architecture: str) -> None:
    """Load a state_dict file strictly into `module`, or say that it does not fit the architecture."""
    advice = f"; give a file written for it (e.g. by `nnunetv2_dropgen pretrain --architecture {architecture}`)."
    _load_strictly(module, load_state_dict_file(path), architecture, str(path), advice)


def _load_strictly(module: nn.Module, state_dict: dict, architecture: str, what: str, advice: str) -> None:
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise WeightsArchitectureMismatch(
            f"{what} does not fit the {architecture!r} architecture ({first}){advice}"
        ) from None


def initialise_extractor(extractor: nn.Module, source: str, architecture: str) -> str:
    """Load the starting weights named by --init into `architecture`'s module: a registered extractor's
    pretrained weights (e.g. anatomix into the anatomix architecture), or a state_dict file.

    Returns a sentence saying where they came from.
    """
    if source in available_extractors():
        resolved = load_pretrained(source, extractor)
        if resolved is None:  # pretrained_by_build: its build function returns the pretrained model
            ready = get_extractor_spec(source).build().state_dict()
            _load_strictly(extractor, ready, architecture, f"the model of --init {source}", ".")
            return f"initialised from {source}: the model its build function returns"
        return f"initialised from {source}: {resolved.describe()}"
    if Path(source).is_file():
        load_weights_file(extractor, source, architecture)
        return f"initialised from the file {Path(source).resolve()}"
    raise WeightsError(
        f"--init {source!r} is neither a registered extractor ({', '.join(available_extractors())}) nor a weight "
        "file; name one of those extractors or give the path of a state_dict file."
    )


def published_reference(device: torch.device) -> tuple[nn.Module | None, str]:
    """The published anatomix when its weights are on this machine (no download), else None and why not."""
    spec = get_extractor_spec(PUBLISHED_REFERENCE)
    module = spec.build()
    try:
        resolved = load_pretrained(PUBLISHED_REFERENCE, module, download=False)
    except WeightsError as exc:
        return None, str(exc)
    if resolved is None:
        return None, f"{PUBLISHED_REFERENCE} has no weights source"
    return module.to(device), resolved.describe()


@dataclass(frozen=True)
class Row:
    """One line of a stability comparison: metrics, or the sentence saying why there are none."""

    name: str
    metrics: StabilityMetrics | None
    note: str = ""

    def describe(self) -> str:
        return f"{self.name}: {self.metrics.describe() if self.metrics else 'not measured: ' + self.note}"


def compare_stability(
    spec: ExtractorSpec, weights: str | os.PathLike, benchmark: StabilityBenchmark, device: torch.device, seed: int
) -> list[Row]:
    """Stability of `weights` in `spec`'s architecture, of random weights, and of the published anatomix."""
    trained = spec.build()
    load_weights_file(trained, weights, spec.name)
    rows = [
        Row(
            f"{weights} ({spec.name})",
            measure_stability(trained.to(device), benchmark, spec.preprocessing, spec.normalization),
        )
    ]
    random = random_extractor(spec, seed).to(device)
    rows.append(
        Row(
            f"random weights ({spec.name}, seed {seed})",
            measure_stability(random, benchmark, spec.preprocessing, spec.normalization),
        )
    )
    reference = get_extractor_spec(PUBLISHED_REFERENCE)
    spatial = benchmark.labels.shape[2:]
    if all(s % reference.spatial_multiple == 0 and s >= reference.min_spatial_size for s in spatial):
        published, note = published_reference(device)
    else:
        published, note = None, f"the benchmark patch {list(spatial)} does not fit {PUBLISHED_REFERENCE}'s input sizes"
    rows.append(
        Row(
            f"published {PUBLISHED_REFERENCE}",
            measure_stability(published, benchmark, reference.preprocessing, reference.normalization)
            if published
            else None,
            note,
        )
    )
    return rows
