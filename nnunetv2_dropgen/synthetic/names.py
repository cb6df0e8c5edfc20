"""The names of the synthetic domains, in a module that imports nothing (the command line lists them)."""

SOURCE_DOMAIN = "source"
"""The training domain; every other default domain is a held-out target."""
TARGET_DOMAINS = ("inverted", "noisy", "bias", "lowres", "scaled", "remapped")
"""The default held-out domains, in the order of `default_domains`."""
CT_SOURCE = "ct"
"""The training domain of the cross-modality data: a CT in Hounsfield-like units."""
MR_TARGETS = ("mr_t1", "mr_t2")
"""The MR-like held-out domains of the cross-modality data."""


def list_domains() -> list[str]:
    """Names of the built-in domains, the source (training) domain first."""
    return [SOURCE_DOMAIN, *TARGET_DOMAINS]
