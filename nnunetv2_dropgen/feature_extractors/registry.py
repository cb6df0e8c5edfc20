"""Feature extractors by name: the published anatomix models and any a user registers.

An extractor is any `nn.Module` mapping (B, 1, *spatial) in [0, 1] to (B, F, *spatial), declared
with F (`out_channels`) and the spatial multiple its input must have. The trainers look an
extractor up by the name stored in their class, so a registration must run on import of the
module that defines the trainer using it (see README, "Your own extractor").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from nnunetv2_dropgen.feature_extractors.anatomix import ANATOMIX, ANATOMIX_DEV, AnatomixConfig, AnatomixUNet


@dataclass(frozen=True)
class ExtractorSpec:
    """What DropGen needs to know about a feature extractor.

    build: returns the architecture (weights need not be loaded).
    out_channels: F, the number of feature channels per image channel.
    spatial_multiple: every spatial size of the extractor's input must be a multiple of this.
    min_spatial_size: smallest size per axis the extractor accepts (defaults to spatial_multiple).
    load_pretrained: loads pretrained weights into a built module (at the start of training only)
        and returns one sentence saying where they came from and whether they were verified.
    """

    name: str
    build: Callable[[], nn.Module]
    out_channels: int
    spatial_multiple: int
    min_spatial_size: int | None = None
    load_pretrained: Callable[[nn.Module], str] | None = None

    @property
    def min_size(self) -> int:
        return self.min_spatial_size or self.spatial_multiple


_REGISTRY: dict[str, ExtractorSpec] = {}


def register_extractor(spec: ExtractorSpec, overwrite: bool = False) -> ExtractorSpec:
    """Make an extractor available by name to DropGenNetwork builders and trainers."""
    if spec.out_channels < 1 or spec.spatial_multiple < 1:
        raise ValueError(f"extractor {spec.name!r}: out_channels and spatial_multiple must be positive.")
    if spec.name in _REGISTRY and not overwrite and _REGISTRY[spec.name] != spec:
        raise ValueError(f"an extractor named {spec.name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[spec.name] = spec
    return spec


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


def build_extractor(name: str, pretrained: bool = False) -> tuple[nn.Module, str]:
    """Build extractor `name`; with pretrained=True also load its weights. Returns (module, weights sentence)."""
    module = get_extractor_spec(name).build()
    if not pretrained:
        return module, "not loaded (random initialisation; weights come from the checkpoint)"
    return module, load_pretrained_weights(name, module)


def load_pretrained_weights(name: str, module: nn.Module) -> str:
    """Load extractor `name`'s pretrained weights into `module`; returns where they came from."""
    spec = get_extractor_spec(name)
    if spec.load_pretrained is None:
        return "provided by the extractor's own build function"
    return spec.load_pretrained(module)


def load_published_anatomix(weights_name: str, module: nn.Module) -> str:
    """Resolve the published weights file (argument/env/cache/download), load it strictly, describe it."""
    from nnunetv2_dropgen.weights import WeightsError, load_state_dict_file, resolve_weights

    resolved = resolve_weights(weights_name)
    state_dict = load_state_dict_file(resolved.path)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"{resolved.path} is not an {weights_name} weights file: its keys or shapes do not match the "
            f"{weights_name} architecture ({err}). Install the published file with "
            f"`nnunetv2_dropgen weights fetch {weights_name} --force`."
        ) from None
    return f"{resolved.path} ({resolved.source}; {resolved.detail})"


def _anatomix_spec(name: str, config: AnatomixConfig) -> ExtractorSpec:
    return ExtractorSpec(
        name=name,
        build=partial(AnatomixUNet, config),
        out_channels=config.output_nc,
        spatial_multiple=config.spatial_multiple,
        # reflect padding needs at least 2 voxels at the coarsest level
        min_spatial_size=2 * config.spatial_multiple,
        load_pretrained=partial(load_published_anatomix, name),
    )


register_extractor(_anatomix_spec("anatomix", ANATOMIX))
register_extractor(_anatomix_spec("anatomix-dev", ANATOMIX_DEV))
