"""Build a DropGenNetwork from an extractor name and a backbone: the one place both are joined."""

from __future__ import annotations

from torch import nn

from nnunetv2_dropgen.feature_extractors import build_extractor, get_extractor_spec
from nnunetv2_dropgen.network.dropgen_network import DropGenNetwork


def build_dropgen_network(
    extractor_name: str,
    backbone: nn.Module,
    num_image_channels: int,
    p: float = 0.75,
    num_extra_channels: int = 0,
    *,
    pretrained: bool = False,
    use_image: bool = True,
) -> DropGenNetwork:
    """Wrap `backbone` with the registered extractor `extractor_name`.

    pretrained=False builds the extractor with random weights, as inference does before the checkpoint
    (which carries the extractor weights) is loaded; pretrained=True resolves and loads published weights.
    The sentence describing where the weights came from is kept in `network.extractor_weights`.
    """
    spec = get_extractor_spec(extractor_name)
    extractor, weights_sentence = build_extractor(extractor_name, pretrained=pretrained)
    network = DropGenNetwork(
        extractor,
        backbone,
        num_image_channels,
        p,
        num_extra_channels,
        feature_channels=spec.out_channels,
        spatial_multiple=spec.spatial_multiple,
        min_spatial_size=spec.min_size,
        use_image=use_image,
    )
    network.extractor_name = extractor_name
    network.extractor_weights = weights_sentence
    return network
