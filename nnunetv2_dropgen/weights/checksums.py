"""Checksums of weight files: sha256 (what we record) and the git blob id (what published repositories record)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256, recorded with every resolved file so a log or checkpoint names exactly which file it was."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The file's git blob id (`git hash-object`), the checksum the published repositories record."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
