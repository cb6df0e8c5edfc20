"""Synthetic domain-shift datasets: train on one imaging domain, test on held-out shifted ones.

The names below are imported on first use (PEP 562): the command line reads the domain names
(`synthetic.names`) without importing SimpleITK, scipy and nnU-Net.
"""

from nnunetv2_dropgen.lazy import lazy_exports

_EXPORTS = {
    "LABEL_KINDS": "dataset",
    "generate_dataset": "dataset",
    "read_generation": "dataset",
    "DEFAULT_DOMAINS": "domains",
    "Domain": "domains",
    "cross_modality_domains": "domains",
    "default_domains": "domains",
    "render": "domains",
    "CT_SOURCE": "names",
    "SOURCE_DOMAIN": "names",
    "list_domains": "names",
    "SHAPE_KINDS": "shapes",
    "random_label_map": "shapes",
    "structure_mask": "shapes",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
