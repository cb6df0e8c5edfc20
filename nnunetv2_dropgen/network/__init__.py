"""The DropGen network wrapper: features, concatenation, channel dropout and backbone in one module."""

from nnunetv2_dropgen.network.dropgen_network import DropGenNetwork, centered_padding
from nnunetv2_dropgen.network.factory import build_dropgen_network, load_extractor_weights
from nnunetv2_dropgen.network.feature_record import FeaturePipelineMismatch, FeatureRecord

__all__ = [
    "DropGenNetwork",
    "FeaturePipelineMismatch",
    "FeatureRecord",
    "build_dropgen_network",
    "centered_padding",
    "load_extractor_weights",
]
