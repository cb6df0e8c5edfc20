"""The ways a weight file can fail, as types: callers catch `WeightsError`, tests and tools tell them apart.

Every message is one or two sentences that name the file, say what is wrong and say what to do.
"""

from __future__ import annotations


class WeightsError(RuntimeError):
    """A weight file cannot be found, downloaded, verified or loaded; the message says what to do."""


class WeightsMissing(WeightsError):
    """No weight file exists where one was looked for, and none may be downloaded."""


class WeightsUnreadable(WeightsError):
    """The file exists but cannot be read as a state_dict: truncated, not a PyTorch file, or not a dict of tensors."""


class WeightsArchitectureMismatch(WeightsError):
    """The file is a state_dict, but its keys or shapes do not fit the extractor's architecture."""


class WeightsChecksumMismatch(WeightsError):
    """The file is not the one it must be: its checksum differs from the published, packaged or recorded one."""


class WeightsDownloadFailed(WeightsError):
    """No download source could deliver the file (offline, unreachable or refused)."""


class WeightsCacheUnwritable(WeightsError):
    """The weights cache cannot be written (read-only, or a file where a folder should be); nothing was replaced."""
