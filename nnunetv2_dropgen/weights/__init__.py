"""Extractor weights: where they come from, how they are checked, and the record of a user's own pretrained file.

`resolve_weights(name, source)` finds the file to use (argument, DROPGEN_WEIGHTS_<NAME>, then the
extractor's `source`); `verify.judge` is the one policy deciding whether a file may be used.
"""

from nnunetv2_dropgen.weights.cache import (
    cache_dir,
    cache_path,
    env_var_for,
    other_weights_variables,
    requested_revision,
    revision_var_for,
)
from nnunetv2_dropgen.weights.checksums import git_blob_sha1, sha256_file
from nnunetv2_dropgen.weights.errors import (
    WeightsArchitectureMismatch,
    WeightsCacheUnwritable,
    WeightsChecksumMismatch,
    WeightsDownloadFailed,
    WeightsError,
    WeightsMissing,
    WeightsUnreadable,
)
from nnunetv2_dropgen.weights.record import RECORD_FORMAT, read_record, record_path, save_pretrained
from nnunetv2_dropgen.weights.report import Outlook, weights_outlook, weights_report
from nnunetv2_dropgen.weights.resolved import ResolvedWeights
from nnunetv2_dropgen.weights.sources import EmbeddedWeights, PublishedWeights, WeightsSource
from nnunetv2_dropgen.weights.state_dict import load_state_dict_file
from nnunetv2_dropgen.weights.store import (
    cached_weights,
    download_weights,
    fetch_weights,
    install_weights,
    packaged_path,
    resolve_weights,
)

__all__ = [
    "RECORD_FORMAT",
    "EmbeddedWeights",
    "Outlook",
    "PublishedWeights",
    "ResolvedWeights",
    "WeightsArchitectureMismatch",
    "WeightsCacheUnwritable",
    "WeightsChecksumMismatch",
    "WeightsDownloadFailed",
    "WeightsError",
    "WeightsMissing",
    "WeightsSource",
    "WeightsUnreadable",
    "cache_dir",
    "cache_path",
    "cached_weights",
    "download_weights",
    "env_var_for",
    "fetch_weights",
    "git_blob_sha1",
    "install_weights",
    "load_state_dict_file",
    "other_weights_variables",
    "packaged_path",
    "read_record",
    "record_path",
    "requested_revision",
    "resolve_weights",
    "revision_var_for",
    "save_pretrained",
    "sha256_file",
    "weights_outlook",
    "weights_report",
]
