"""Where an extractor's pretrained weights come from: a published file, or a file shipped in this package.

These are plain descriptions; each extractor's module declares its own (beside its architecture, as
timm keeps a model's pretrained configuration), and `store` knows how to fetch, cache and check them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedWeights:
    """A weight file published by a model's authors on the Hugging Face Hub (and possibly elsewhere).

    `git_blob_sha1` is the file's git blob id (what `git hash-object` prints), because that is the
    checksum the authors' repositories publish; None means no checksum is known, so the file can
    only be checked by loading it. `revision` is the Hub revision (branch, tag or commit) fetched by
    default. `history` is a sentence about earlier files published under the same name, shown when
    a file does not fit the architecture.
    """

    name: str
    filename: str
    hf_repo: str
    urls: tuple[str, ...] = ()
    git_blob_sha1: str | None = None
    revision: str = "main"
    history: str | None = None


@dataclass(frozen=True)
class EmbeddedWeights:
    """A weight file shipped inside an installed package, checked by its sha256 every time it is loaded."""

    name: str
    package: str
    filename: str
    sha256: str


WeightsSource = PublishedWeights | EmbeddedWeights
