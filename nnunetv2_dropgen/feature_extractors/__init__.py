"""Frozen 3D foundation models that turn an image into feature channels, one module per model."""

from nnunetv2_dropgen.feature_extractors.anatomix import (
    ANATOMIX,
    ANATOMIX_DEV,
    AnatomixConfig,
    AnatomixUNet,
    anatomix_spec,
)
from nnunetv2_dropgen.feature_extractors.loading import load_pretrained
from nnunetv2_dropgen.feature_extractors.minimix import EMBEDDED_DEFAULT, MINIMIX
from nnunetv2_dropgen.feature_extractors.preprocessing import (
    FeatureNormalization,
    InputPreprocessing,
    InstanceNormalization,
    MinMaxScaling,
    scale_to_unit_range,
)
from nnunetv2_dropgen.feature_extractors.registry import (
    ExtractorSpec,
    available_extractors,
    get_extractor_spec,
    register_extractor,
    registered_extractor,
)

__all__ = [
    "ANATOMIX",
    "ANATOMIX_DEV",
    "EMBEDDED_DEFAULT",
    "AnatomixConfig",
    "AnatomixUNet",
    "ExtractorSpec",
    "FeatureNormalization",
    "InputPreprocessing",
    "InstanceNormalization",
    "MINIMIX",
    "MinMaxScaling",
    "anatomix_spec",
    "available_extractors",
    "get_extractor_spec",
    "load_pretrained",
    "register_extractor",
    "registered_extractor",
    "scale_to_unit_range",
]
