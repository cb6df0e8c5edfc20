"""Synthetic domain-shift datasets: train on one imaging domain, test on held-out shifted ones."""

from nnunetv2_dropgen.synthetic.dataset import LABEL_KINDS, generate_dataset, list_domains
from nnunetv2_dropgen.synthetic.domains import (
    DEFAULT_DOMAINS,
    SOURCE_DOMAIN,
    Domain,
    default_domains,
    render,
)
from nnunetv2_dropgen.synthetic.shapes import SHAPE_KINDS, random_label_map, structure_mask

__all__ = [
    "DEFAULT_DOMAINS",
    "LABEL_KINDS",
    "SHAPE_KINDS",
    "SOURCE_DOMAIN",
    "Domain",
    "default_domains",
    "generate_dataset",
    "list_domains",
    "random_label_map",
    "render",
    "structure_mask",
]
