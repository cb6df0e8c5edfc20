"""Frozen 3D foundation models that turn an image in [0, 1] into feature channels."""

from nnunetv2_dropgen.feature_extractors.anatomix import ANATOMIX, ANATOMIX_DEV, AnatomixConfig, AnatomixUNet
from nnunetv2_dropgen.feature_extractors.registry import (
    ExtractorSpec,
    available_extractors,
    build_extractor,
    get_extractor_spec,
    load_pretrained_weights,
    register_extractor,
)

__all__ = [
    "ANATOMIX",
    "ANATOMIX_DEV",
    "AnatomixConfig",
    "AnatomixUNet",
    "ExtractorSpec",
    "available_extractors",
    "build_extractor",
    "get_extractor_spec",
    "load_pretrained_weights",
    "register_extractor",
]
