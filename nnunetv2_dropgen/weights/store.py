"""Find, download, cache and install extractor weights, trusting each file as `verify.judge` decides.

A file is looked for in this order: a path passed in code, the environment variable
`DROPGEN_WEIGHTS_<NAME>`, then the extractor's source: the file shipped in the package
(`EmbeddedWeights`), or the cache (`$DROPGEN_CACHE_DIR`, default ~/.cache/nnunetv2_dropgen) and
finally a download (`PublishedWeights`: Hugging Face first, then the fallback URLs). Nothing is
written to the cache except by an atomic rename of a verified file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from importlib import resources
from pathlib import Path

from nnunetv2_dropgen.weights import remote
from nnunetv2_dropgen.weights.cache import (
    CacheNote,
    cache_path,
    env_var_for,
    read_note,
    requested_revision,
    serves_revision,
    write_note,
)
from nnunetv2_dropgen.weights.checksums import sha256_file
from nnunetv2_dropgen.weights.errors import (
    WeightsCacheUnwritable,
    WeightsDownloadFailed,
    WeightsMissing,
    WeightsUnreadable,
)
from nnunetv2_dropgen.weights.files import temporary_beside
from nnunetv2_dropgen.weights.resolved import ResolvedWeights
from nnunetv2_dropgen.weights.sources import EmbeddedWeights, PublishedWeights, WeightsSource
from nnunetv2_dropgen.weights.state_dict import short_error
from nnunetv2_dropgen.weights.verify import Place, how_to_provide, judge

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _writing_cache(source: PublishedWeights, target: Path) -> Iterator[None]:
    """A cache that cannot be written (read-only, a file in the way) is a sentence, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise WeightsCacheUnwritable(
            f"Cannot write {source.filename} into the weights cache {target.parent} ({short_error(exc)}). Set "
            f"DROPGEN_CACHE_DIR to a folder you can write, or set {env_var_for(source.name)}=/path/to/"
            f"{source.filename} to use a file where it is."
        ) from exc


def packaged_path(source: EmbeddedWeights) -> Path:
    """Where the installed package keeps the embedded file (whether or not it is there)."""
    try:
        return Path(str(resources.files(source.package).joinpath(source.filename)))
    except ModuleNotFoundError as exc:
        raise WeightsMissing(
            f"The {source.name} weights ship in the package {source.package}, which is not installed ({exc}). "
            "Reinstall nnunetv2_dropgen (pip install --force-reinstall nnunetv2_dropgen)."
        ) from exc


def _user_file(name: str, source: WeightsSource | None, path: Path, origin: str) -> ResolvedWeights:
    verdict = judge(name, source, path, Place.USER, origin=origin).enforce()
    return ResolvedWeights(name, path, origin, verdict.verified, verdict.detail, verdict.sha256, record=verdict.record)


def _packaged(name: str, source: EmbeddedWeights) -> ResolvedWeights:
    path = packaged_path(source)
    verdict = judge(name, source, path, Place.PACKAGE, origin="package").enforce()
    return ResolvedWeights(name, path, "package", verdict.verified, verdict.detail, verdict.sha256)


def cached_weights(source: PublishedWeights, revision: str | None = None) -> ResolvedWeights | None:
    """The cached file of `source` at `revision`, checked; None when the cache holds no file of that revision.

    A cached file that fails its check raises (it is reported, never deleted or silently replaced).
    """
    revision = requested_revision(source, revision)
    path = cache_path(source, revision)
    if not path.is_file():
        return None
    sha256 = sha256_file(path)
    note = read_note(path, sha256)
    if not serves_revision(source, path, note, revision):
        return None
    verdict = judge(source.name, source, path, Place.CACHE, origin="cache", revision=revision, sha256=sha256)
    verdict.enforce()
    known = (note.commit or note.revision) if note is not None else None
    return ResolvedWeights(source.name, path, "cache", verdict.verified, verdict.detail, sha256, revision=known)


def _from_hub(source: PublishedWeights, revision: str, workdir: Path) -> tuple[Path, str | None]:
    return remote.fetch_from_hub(source, revision, workdir)


def _from_url(url: str, filename: str, workdir: Path) -> tuple[Path, str | None]:
    return remote.fetch_from_url(url, filename, workdir), None


def download_weights(
    source: PublishedWeights, revision: str | None = None, *, urls: Sequence[str] | None = None, use_hub: bool = True
) -> ResolvedWeights:
    """Download into the cache (Hugging Face, then each URL), verify, and only then rename into place.

    `urls` replaces the source's fallback URLs (tests use a local server); they serve the default
    revision only. A source that cannot be reached is skipped after one short attempt; a file that
    arrives but fails verification stops everything, because a wrong published file should be
    noticed, not worked around.
    """
    revision = requested_revision(source, revision)
    target = cache_path(source, revision)
    browse = f"https://huggingface.co/{source.hf_repo}/resolve/{revision}/{source.filename}"
    if remote.hub_offline():
        raise WeightsDownloadFailed(
            f"Could not download {source.filename}: offline mode is on (HF_HUB_OFFLINE is set), so nothing was "
            f"tried. {how_to_provide(source, revision)} On a machine with internet it can be downloaded from "
            f"{browse}."
        )
    attempts: list[tuple[str, Callable[[Path], tuple[Path, str | None]]]] = []
    if use_hub:
        attempts.append((f"Hugging Face {source.hf_repo}", partial(_from_hub, source, revision)))
    if revision == source.revision:
        for url in source.urls if urls is None else urls:
            attempts.append((url, partial(_from_url, url, source.filename)))

    failures: list[str] = []
    with _writing_cache(source, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{source.filename}.", suffix=".download", dir=target.parent))
    try:
        for label, fetch in attempts:
            logger.info("Downloading %s (revision %s) from %s", source.filename, revision, label)
            try:
                downloaded, commit = fetch(Path(tempfile.mkdtemp(dir=workdir)))
            except Exception as exc:
                logger.info("Could not download %s from %s: %s", source.filename, label, short_error(exc))
                failures.append(f"{label}: {short_error(exc)}")
                continue
            verdict = judge(source.name, source, downloaded, Place.DOWNLOAD, origin=label, revision=revision)
            verdict.enforce()
            with _writing_cache(source, target):
                os.replace(downloaded, target)
                write_note(target, CacheNote(revision, commit, verdict.sha256, f"download ({label})"))
            resolved = ResolvedWeights(
                source.name,
                target,
                f"download ({label})",
                verdict.verified,
                verdict.detail,
                verdict.sha256,
                revision=commit or revision,
            )
            logger.info("Saved %s", resolved.describe())
            return resolved
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tried = "; ".join(failures) if failures else "no download source was given"
    raise WeightsDownloadFailed(
        f"Could not download {source.filename} ({tried}). {how_to_provide(source, revision)} On a machine with "
        f"internet it can be downloaded from {browse}."
    )


def resolve_weights(
    name: str,
    source: WeightsSource | None,
    explicit: str | os.PathLike | None = None,
    *,
    download: bool = True,
    revision: str | None = None,
) -> ResolvedWeights:
    """The weight file to use for extractor `name`: argument, environment variable, then `source`.

    `revision` (else DROPGEN_REVISION_<NAME>, else the source's default) pins the Hub revision of
    published weights; `download=False` never touches the network.
    """
    env_var = env_var_for(name)
    env_value = os.environ.get(env_var)
    if explicit is not None:
        resolved = _user_file(name, source, Path(explicit).expanduser(), "argument")
    elif env_value:
        resolved = _user_file(name, source, Path(env_value).expanduser(), f"environment ({env_var})")
    elif source is None:
        raise WeightsMissing(
            f"{name} has no published or packaged weights and none were given: set {env_var}=/path/to/weights.pth "
            "or pass the file's path."
        )
    elif isinstance(source, EmbeddedWeights):
        resolved = _packaged(name, source)
    else:
        resolved = cached_weights(source, revision)
        if resolved is None and download:
            resolved = download_weights(source, revision)
        elif resolved is None:
            wanted = requested_revision(source, revision)
            raise WeightsMissing(
                f"{source.filename} (revision {wanted}) is not in the cache and downloading is turned off. "
                f"{how_to_provide(source, wanted)}"
            )
    logger.info("Using %s", resolved.describe())
    return resolved


def fetch_weights(source: PublishedWeights, force: bool = False, revision: str | None = None) -> ResolvedWeights:
    """Make sure the cache holds the published file at `revision`; with `force`, download again even if it does."""
    if not force:
        cached = cached_weights(source, revision)
        if cached is not None:
            return cached
    return download_weights(source, revision)


def install_weights(
    source: PublishedWeights,
    path: str | os.PathLike,
    revision: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> ResolvedWeights:
    """Copy a copy of the published file into the cache (for offline machines): copy, verify, then rename.

    The cache holds published files only, so a file that does not match the published checksum is refused,
    with the sentence that says how to use it instead (DROPGEN_WEIGHTS_<NAME>): what is installed is what
    training then uses, never a file the next load would refuse. Where no checksum is published (anatomix-dev,
    a revision other than the default) any file that reads as a state_dict is installed, unverified (training
    then loads it strictly into the architecture). `check` (a WeightsError when the file does not fit the
    extractor's architecture) runs on the copy before it is renamed into the cache.
    """
    revision = requested_revision(source, revision)
    given = Path(path).expanduser()
    target = cache_path(source, revision)
    try:
        if not given.is_file():
            raise WeightsMissing(
                f"Cannot install {source.filename}: {given} does not exist or is not a file. Give the path of a copy "
                f"of {source.filename}."
            )
        with open(given, "rb") as reading:  # read whole before the cache guard: a read error is not the cache's
            content = reading.read()
    except OSError as exc:
        raise WeightsUnreadable(
            f"Cannot install {source.filename}: {given} cannot be read ({short_error(exc)}). Make it readable, or "
            f"give the path of another copy of {source.filename}."
        ) from exc
    origin = f"cache (installed from {given})"
    with _writing_cache(source, target), temporary_beside(target) as temporary:
        temporary.write_bytes(content)
        verdict = judge(source.name, source, temporary, Place.INSTALL, origin=str(given), revision=revision)
        verdict.enforce()
        if check is not None:
            check(temporary)
        os.replace(temporary, target)
        write_note(target, CacheNote(revision, None, verdict.sha256, origin))
    resolved = ResolvedWeights(source.name, target, origin, verdict.verified, verdict.detail, verdict.sha256, revision)
    logger.info("Installed %s", resolved.describe())
    return resolved
