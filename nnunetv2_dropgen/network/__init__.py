"""The DropGen network wrapper: features, concatenation, channel dropout and backbone in one module."""

from nnunetv2_dropgen.network.dropgen_network import DropGenNetwork, centered_padding, scale_to_unit_range
from nnunetv2_dropgen.network.factory import build_dropgen_network

__all__ = ["DropGenNetwork", "build_dropgen_network", "centered_padding", "scale_to_unit_range"]
