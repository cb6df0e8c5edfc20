"""Published extractor weights: where they live, how they are checked, where a user's offline copy is."""

from nnunetv2_dropgen.weights.published import PUBLISHED, PublishedWeights
from nnunetv2_dropgen.weights.store import (
    ResolvedWeights,
    WeightsError,
    cache_dir,
    cache_path,
    download_weights,
    env_var_for,
    fetch_weights,
    git_blob_sha1,
    install_weights,
    load_state_dict_file,
    resolve_weights,
    weights_report,
)

__all__ = [
    "PUBLISHED",
    "PublishedWeights",
    "ResolvedWeights",
    "WeightsError",
    "cache_dir",
    "cache_path",
    "download_weights",
    "env_var_for",
    "fetch_weights",
    "git_blob_sha1",
    "install_weights",
    "load_state_dict_file",
    "resolve_weights",
    "weights_report",
]
