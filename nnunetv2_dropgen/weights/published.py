"""Where each published extractor weight file lives and how to recognise it.

Only facts about the published files belong here; how to fetch, cache and check
them is in `store`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file.

    `git_blob_sha1` is the file's git blob id (what `git hash-object` prints), because
    that is the checksum the authors' repositories publish; None means no checksum is
    known, so the file can only be checked by loading it.
    """

    name: str
    filename: str
    hf_repo: str
    urls: tuple[str, ...] = ()
    git_blob_sha1: str | None = None


PUBLISHED: dict[str, PublishedWeights] = {
    "anatomix": PublishedWeights(
        name="anatomix",
        filename="anatomix.pth",
        hf_repo="neeldey/anatomix",
        urls=("https://raw.githubusercontent.com/neel-dey/anatomix/main/model-weights/anatomix.pth",),
        git_blob_sha1="d13b2f335850a0a3a9042dcaf9a7181631098b80",
    ),
    "anatomix-dev": PublishedWeights(
        name="anatomix-dev",
        filename="anatomix-dev.pth",
        hf_repo="neeldey/anatomix",
    ),
}
