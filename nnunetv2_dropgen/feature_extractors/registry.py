"""Feature extractors by name: the published anatomix models, the embedded default and any a user registers.

The trainers look an extractor up by the name their class carries, so a registration must run on import
of the module that defines the trainer using it (see README, "Add a foundation model").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
    weights: where pretrained weights come from; None when they come only from DROPGEN_WEIGHTS_<NAME>
        (training then refuses to start without it) or from `build` itself.
    pretrained_by_build: True when `build` returns the pretrained model (it loads its own weights), so that
        weights=None and no DROPGEN_WEIGHTS_<NAME> is not a forgotten file but the extractor's own weights.
    superseded_by: the extractor to use instead for new models (this one is kept so that models trained with it
        predict as before); a new training says so in its log.
    """

    name: str
    build: Callable[[], nn.Module]
    feature_channels: int
    spatial_multiple: int
    min_spatial_size: int = field(default=0)
    preprocessing: InputPreprocessing = field(default_factory=MinMaxScaling)
    normalization: FeatureNormalization = field(default_factory=InstanceNormalization)
    weights: WeightsSource | None = None
    pretrained_by_build: bool = False
    superseded_by: str | None = None

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

    def identity(self) -> dict[str, Any]:
        """What makes two specs the same extractor, in comparable values (see `register_extractor`)."""
        return {
            "build": _callable_identity(self.build),
            "feature_channels": self.feature_channels,
            "spatial_multiple": self.spatial_multiple,
            "min_spatial_size": self.min_spatial_size,
            "preprocessing": self.preprocessing.identifier,
            "normalization": self.normalization.identifier,
            "weights": repr(self.weights),
            "pretrained_by_build": self.pretrained_by_build,
        }


def _callable_identity(build: Callable[..., Any]) -> str:
    """Where a build function is defined (module, qualified name, file) and, for a partial, its arguments.

    Not the object itself: nnU-Net executes an nnUNet_extTrainer module again at every trainer search, which
    makes new class objects from the same source.
    """
    if isinstance(build, functools.partial):
        return f"{_callable_identity(build.func)}(*{build.args!r}, **{build.keywords!r})"
    module = getattr(build, "__module__", None)
    qualname = getattr(build, "__qualname__", type(build).__qualname__)
    try:
        source = inspect.getsourcefile(build)
    except TypeError:
        source = None
    code = getattr(build, "__code__", None)  # two lambdas of one function differ by their line
    line = f":{code.co_firstlineno}" if code is not None else ""
    return f"{module}.{qualname}" + (f" in {source}{line}" if source else line)


_REGISTRY: dict[str, ExtractorSpec] = {}


def register_extractor(spec: ExtractorSpec, overwrite: bool = False) -> ExtractorSpec:
    """Make an extractor available by name to DropGenNetwork builders and trainers.

    Registering the same extractor again is a no-op that keeps the newer objects, so a module that registers
    at import may run any number of times (nnU-Net re-executes nnUNet_extTrainer modules at every trainer
    search). "The same" means equal `ExtractorSpec.identity()`: the build function's module, qualified name
    and source file (and a partial's arguments), the feature channels, spatial multiple and minimum size,
    the preprocessing and normalization identifiers and the weights source. A different extractor under a
    taken name raises ValueError naming what differs, unless `overwrite=True`.
    """
    current = _REGISTRY.get(spec.name)
    if current is not None and not overwrite and current != spec:
        old, new = current.identity(), spec.identity()
        differences = [f"{key} {old[key]!r} registered, {new[key]!r} now" for key in old if old[key] != new[key]]
        if differences:
            raise ValueError(
                f"an extractor named {spec.name!r} is already registered and this one differs ("
                + "; ".join(differences)
                + "); choose another name, or pass overwrite=True to replace it."
            )
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
