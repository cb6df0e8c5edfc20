"""Feature extractors by name: the published anatomix models, the embedded default and any a user registers.

The trainers look an extractor up by the name their class carries, so a registration must run on import
of the module that defines the trainer using it (see README, "Add a foundation model").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import nn

from nnunetv2_dropgen.feature_extractors.preprocessing import (
    FeatureNormalization,
    InputPreprocessing,
    InstanceNormalization,
    MinMaxScaling,
)
from nnunetv2_dropgen.weights.sources import WeightsSource

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class ExtractorSpec:
    """Everything DropGen needs to know about a feature extractor, in one place.

    build: returns the architecture, any (B, 1, *spatial) -> (B, feature_channels, *spatial) module.
    feature_channels: F, the number of feature channels per image channel.
    spatial_multiple: every spatial size of the extractor's input must be a multiple of this.
    min_spatial_size: smallest size per axis it accepts; defaults to spatial_multiple.
    preprocessing: turns one image channel into the extractor's input.
    normalization: applied to the extractor's output before the segmentation network sees it.
    weights: where pretrained weights come from; None when `build` returns a ready model (or the
        weights only come from DROPGEN_WEIGHTS_<NAME>).
    """

    name: str
    build: Callable[[], nn.Module]
    feature_channels: int
    spatial_multiple: int
    min_spatial_size: int = field(default=0)
    preprocessing: InputPreprocessing = field(default_factory=MinMaxScaling)
    normalization: FeatureNormalization = field(default_factory=InstanceNormalization)
    weights: WeightsSource | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"extractor name {self.name!r} must be lower-case letters and digits, words joined by '-' "
                "(e.g. 'my-extractor'), so that it maps to a trainer name."
            )
        if self.feature_channels < 1 or self.spatial_multiple < 1 or self.min_spatial_size < 0:
            raise ValueError(
                f"extractor {self.name!r}: feature_channels and spatial_multiple must be positive and "
                f"min_spatial_size non-negative; got {self.feature_channels}, {self.spatial_multiple}, "
                f"{self.min_spatial_size}."
            )
        object.__setattr__(self, "min_spatial_size", max(self.min_spatial_size, self.spatial_multiple))

    @property
    def trainer_token(self) -> str:
        """The extractor's part of a trainer name: 'anatomix-dev' -> 'anatomixDev' (one-to-one for valid names)."""
        first, *rest = self.name.split("-")
        return first + "".join(word[:1].upper() + word[1:] for word in rest)


_REGISTRY: dict[str, ExtractorSpec] = {}


def register_extractor(spec: ExtractorSpec, overwrite: bool = False) -> ExtractorSpec:
    """Make an extractor available by name to DropGenNetwork builders and trainers."""
    if spec.name in _REGISTRY and not overwrite and _REGISTRY[spec.name] != spec:
        raise ValueError(f"an extractor named {spec.name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[spec.name] = spec
    return spec


@contextlib.contextmanager
def registered_extractor(spec: ExtractorSpec) -> Iterator[ExtractorSpec]:
    """Register `spec` for the duration of a block (tests, notebooks), then remove it again."""
    if spec.name in _REGISTRY:
        raise ValueError(f"an extractor named {spec.name!r} is already registered.")
    register_extractor(spec)
    try:
        yield spec
    finally:
        _REGISTRY.pop(spec.name, None)


def get_extractor_spec(name: str) -> ExtractorSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown feature extractor {name!r}; registered: {sorted(_REGISTRY)}. "
            "Register your own with nnunetv2_dropgen.feature_extractors.register_extractor."
        ) from None


def available_extractors() -> list[str]:
    return sorted(_REGISTRY)
