"""Synthetic domain-shift datasets: train on one imaging domain, test on held-out shifted ones.

The names below are imported on first use (PEP 562): the command line reads the domain names
(`synthetic.names`) without importing SimpleITK, scipy and nnU-Net.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LABEL_KINDS": "dataset",
    "generate_dataset": "dataset",
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
