"""Getting a published file onto this machine: the Hugging Face Hub first, then the fallback URLs.

Offline must be cheap: with HF_HUB_OFFLINE set nothing is attempted, and otherwise each source gets
one short attempt (no retry loop), so a machine without internet hears within seconds which file
to place where instead of waiting through huggingface_hub's retries.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from tqdm import tqdm

from nnunetv2_dropgen.weights.sources import PublishedWeights

TIMEOUT_S = 5.0
"""Seconds any one network operation may take before the source counts as unreachable."""

_CHUNK = 1 << 20


def hub_offline() -> bool:
    """Whether offline mode is on (HF_HUB_OFFLINE, read now as well as when huggingface_hub was imported)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.is_offline_mode() or flag in {"1", "ON", "YES", "TRUE"}


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def hub_commit(source: PublishedWeights, revision: str) -> str:
    """The Hub commit `revision` of `source` points at, from one short request without retries."""
    url = hf_hub_url(source.hf_repo, source.filename, revision=revision, endpoint=_endpoint())
    metadata = get_hf_file_metadata(url, timeout=TIMEOUT_S, endpoint=_endpoint(), retry_on_errors=False)
    if not metadata.commit_hash:
        raise OSError(f"{url} did not say which commit it serves; it does not look like a Hugging Face Hub")
    return metadata.commit_hash


def fetch_from_hub(source: PublishedWeights, revision: str, workdir: Path) -> tuple[Path, str]:
    """Download `source` at `revision` into `workdir`; returns (file, commit). Pinned to the commit first asked."""
    commit = hub_commit(source, revision)
    path = hf_hub_download(
        source.hf_repo,
        source.filename,
        revision=commit,
        local_dir=workdir,
        etag_timeout=TIMEOUT_S,
        endpoint=_endpoint(),
    )
    return Path(path), commit


def fetch_from_url(url: str, filename: str, workdir: Path) -> Path:
    """Download `url` into `workdir/filename`; a connection closed early is an error, not a short file."""
    destination = workdir / filename
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=None) as progress:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
    received = destination.stat().st_size
    if total is not None and received != total:
        raise OSError(f"the connection closed after {received} of {total} bytes")
    return destination


def url_answers(url: str) -> None:
    """Raise unless `url` answers a HEAD request within the timeout (what `doctor` uses to predict a download)."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=TIMEOUT_S):
        pass
