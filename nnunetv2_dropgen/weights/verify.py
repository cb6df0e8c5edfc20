"""The one policy for trusting a weight file: check the checksum, then refuse or warn, then load to check.

How strict depends on where the file is (`Place`): a file the user names is theirs to choose, so a
mismatch is allowed but loudly reported; a file this package put in the cache, downloaded or
shipped must be exactly the expected one, because a mismatch there means a broken copy. A file
whose checksum proves it is the expected one is not loaded here; any other file must at least load
as a state_dict. `judge` returns a `Verdict`; callers raise or warn with `Verdict.enforce`.
"""

from __future__ import annotations

import enum
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunetv2_dropgen.weights.cache import cache_path, env_var_for, requested_revision
from nnunetv2_dropgen.weights.checksums import git_blob_sha1, sha256_file
from nnunetv2_dropgen.weights.errors import (
    WeightsArchitectureMismatch,
    WeightsChecksumMismatch,
    WeightsError,
    WeightsMissing,
    WeightsUnreadable,
)
from nnunetv2_dropgen.weights.record import found_record_path, read_record
from nnunetv2_dropgen.weights.sources import EmbeddedWeights, PublishedWeights, WeightsSource
from nnunetv2_dropgen.weights.state_dict import NotAStateDict, read_state_dict


class Place(enum.Enum):
    """Where a file to judge is, which decides what a checksum mismatch means."""

    USER = "named by the user"  # argument or environment variable: a mismatch is warned about
    PACKAGE = "shipped in the package"  # a mismatch means a damaged installation
    CACHE = "in the cache"  # a mismatch means a broken copy
    DOWNLOAD = "just downloaded"  # a mismatch means a broken or different download
    INSTALL = "to be installed"  # the cache holds published files only: a mismatch is refused


_WARN_ON_MISMATCH = {Place.USER}
_REINSTALL = "Reinstall nnunetv2_dropgen (pip install --force-reinstall nnunetv2_dropgen)."


@dataclass(frozen=True)
class Verdict:
    """What `judge` found: whether the file is the expected one, a sentence saying so, and what to raise or warn."""

    verified: bool
    detail: str
    sha256: str | None
    record: dict[str, Any] | None = None
    warning: str | None = None
    error: WeightsError | None = None

    @property
    def usable(self) -> bool:
        return self.error is None

    def enforce(self) -> Verdict:
        """Raise the error, or emit the warning; returns the verdict for chaining."""
        if self.error is not None:
            raise self.error
        if self.warning is not None:
            warnings.warn(self.warning, UserWarning, stacklevel=3)
        return self


def how_to_provide(source: PublishedWeights, revision: str | None = None) -> str:
    """The sentence telling a user without internet which file to place where."""
    revision = requested_revision(source, revision)
    placeholder = f"/path/to/{source.filename}"
    pin = "" if revision == source.revision else f" --revision {revision}"
    return (
        f"Place {source.filename} at {cache_path(source, revision)}, or run "
        f"`nnunetv2_dropgen weights install {source.name} {placeholder}{pin}`, or set "
        f"{env_var_for(source.name)}={placeholder}."
    )


@dataclass(frozen=True)
class _Reference:
    kind: str  # "git blob id" or "sha256"
    expected: str
    what: str  # "the published anatomix.pth"
    model: str  # "published" or "packaged"


def _reference(source: WeightsSource | None, revision: str | None) -> _Reference | None:
    """The checksum a file must have, when one is known (a published checksum holds for the default revision)."""
    if isinstance(source, EmbeddedWeights):
        return _Reference("sha256", source.sha256, f"the {source.filename} shipped in {source.package}", "packaged")
    if isinstance(source, PublishedWeights) and source.git_blob_sha1 and revision in (None, source.revision):
        return _Reference("git blob id", source.git_blob_sha1, f"the published {source.filename}", "published")
    return None


def _unchecked_detail(name: str, source: WeightsSource | None, revision: str | None) -> str:
    if isinstance(source, PublishedWeights):
        at = "" if revision in (None, source.revision) else f" at revision {revision}"
        return f"unverified: no published checksum for {source.filename}{at} (it was only checked to load)"
    return f"unverified: {name} has no published weights to compare it with (it was only checked to load)"


def _fallback(source: WeightsSource | None, revision: str | None) -> str:
    if isinstance(source, PublishedWeights):
        return f"the cache at {cache_path(source, revision)}"
    if isinstance(source, EmbeddedWeights):
        return "the weights shipped in the package"
    return "what the extractor's build function provides (it has no published weights)"


@dataclass(frozen=True)
class _Case:
    """The file being judged and its context, to word each refusal for where the file is."""

    name: str
    source: WeightsSource | None
    path: Path
    place: Place
    origin: str
    revision: str | None

    @property
    def filename(self) -> str:
        """The file's proper name (an install or download judges a temporary copy)."""
        return self.source.filename if isinstance(self.source, PublishedWeights) else self.path.name

    def _instead(self) -> str:
        """How a user drops the file they named, to fall back on the source."""
        fallback = _fallback(self.source, self.revision)
        if self.origin == "argument":
            return f"Pass a good file instead, or none to use {fallback}."
        return f"Point {env_var_for(self.name)} at a good file instead, or unset it to use {fallback}."

    def _provide(self) -> str:
        return how_to_provide(self.source, self.revision) if isinstance(self.source, PublishedWeights) else ""

    def missing(self) -> WeightsMissing:
        if self.place is Place.USER:
            return WeightsMissing(
                f"The {self.name} weight file {self.path} ({self.origin}) does not exist or is not a file. "
                f"{self._instead()}"
            )
        if self.place is Place.PACKAGE:
            return WeightsMissing(
                f"The {self.name} weights {self.path.name} are missing from the installed package ({self.path}): "
                f"the installation is incomplete. {_REINSTALL}"
            )
        if self.place is Place.INSTALL:
            return WeightsMissing(
                f"Cannot install {self.path}: it does not exist or is not a file. Give a weight file."
            )
        return WeightsMissing(f"{self.path} does not exist. {self._provide()}".strip())

    def mismatch(self, ref: _Reference, actual: str) -> WeightsChecksumMismatch:
        path, name = self.path, self.name
        size = f"{path.stat().st_size} bytes"
        fact = f"its {ref.kind} {actual} does not match {ref.expected}"
        if self.place is Place.PACKAGE:
            message = f"The {name} weights shipped in the installed package ({path}) are damaged: {fact}. {_REINSTALL}"
        elif self.place is Place.CACHE:
            message = (
                f"The cached {path.name} at {path} ({size}) is not {ref.what}: {fact} (a truncated or corrupted "
                f"copy). Delete it and run `nnunetv2_dropgen weights fetch {name}`, or replace it with "
                f"`nnunetv2_dropgen weights fetch {name} --force`, or offline with `nnunetv2_dropgen weights install "
                f"{name} /path/to/{path.name}` (a good copy)."
            )
        elif self.place is Place.DOWNLOAD:
            message = (
                f"The {path.name} downloaded from {self.origin} ({size}) is not {ref.what}: {fact} (a truncated or "
                f"different file). {self._deleted()}"
            )
        else:
            message = (
                f"Refusing to install {self.origin} as {self.filename}: {fact}, so it is not {ref.what} (or it is "
                f"truncated), and the cache holds published files only. To use this file (your own fine-tuned "
                f"{name}, say), name it instead: {env_var_for(name)}={self.origin}; training then uses it, marked "
                "UNVERIFIED, with its sha256 in the log and in every checkpoint."
            )
        return WeightsChecksumMismatch(message)

    def _deleted(self) -> str:
        return (
            f"It was deleted and the cache was left unchanged. Try again later with "
            f"`nnunetv2_dropgen weights fetch {self.name}`. Otherwise: {self._provide()}"
        )

    def unreadable(self, problem: NotAStateDict) -> WeightsUnreadable:
        if self.place is Place.DOWNLOAD:
            message = f"The {self.path.name} downloaded from {self.origin} cannot be used: {problem}. {self._deleted()}"
        elif self.place is Place.INSTALL:
            message = f"Refusing to install {self.origin}: {problem}. Give the path of a good weight file."
        elif self.place is Place.PACKAGE:
            message = (
                f"The {self.name} weights shipped in the installed package ({self.path}) cannot be used: {problem}. "
                f"{_REINSTALL}"
            )
        elif self.place is Place.CACHE:
            message = (
                f"The cached {self.name} weight file {self.path} cannot be used: {problem}. Replace it with "
                f"`nnunetv2_dropgen weights fetch {self.name} --force`."
            )
        else:
            message = (
                f"The {self.name} weight file {self.path} ({self.origin}) cannot be used: {problem}. {self._instead()}"
            )
        return WeightsUnreadable(message)


def _own_extractor(name: str, path: Path, sha256: str, record: dict[str, Any]) -> Verdict:
    """A user's file with a pretraining record beside it: trusted as theirs when the record describes it."""
    where = found_record_path(path)
    if record.get("architecture") != name:
        error = WeightsArchitectureMismatch(
            f"{path} was pretrained as a {record.get('architecture')!r} extractor (record {where}), not as {name}. "
            f"Use it with the {record.get('architecture')} extractor, or give a {name} weight file."
        )
        return Verdict(False, "pretrained for another architecture", sha256, record, error=error)
    if record.get("sha256") != sha256:
        error = WeightsChecksumMismatch(
            f"{path} changed after pretraining: its sha256 {sha256} differs from {record.get('sha256')} in its record "
            f"{where}. Restore the file `nnunetv2_dropgen pretrain` wrote, or pretrain again."
        )
        return Verdict(False, "changed after pretraining", sha256, record, error=error)
    detail = f"your own extractor, pretrained with nnunetv2_dropgen pretrain (record {where}), sha256 {sha256[:12]}"
    return Verdict(True, detail, sha256, record)


def judge(
    name: str,
    source: WeightsSource | None,
    path: str | os.PathLike,
    place: Place,
    *,
    origin: str = "",
    revision: str | None = None,
    sha256: str | None = None,
) -> Verdict:
    """Decide whether the weight file `path` of extractor `name` may be used, and how to report it.

    `origin` names the file's provenance in messages (e.g. "environment (DROPGEN_WEIGHTS_ANATOMIX)",
    a download URL, or the user's path for an install); `revision` is the Hub revision asked for;
    `sha256` may be passed when the caller has already computed it.
    """
    path = Path(path)
    case = _Case(name, source, path, place, origin, revision)
    if not path.is_file():
        return Verdict(False, "missing", None, error=case.missing())
    sha256 = sha256 or sha256_file(path)
    if place is Place.USER:
        try:
            record = read_record(path)
        except WeightsError as error:
            return Verdict(False, "unreadable pretraining record", sha256, error=error)
        if record is not None:
            return _own_extractor(name, path, sha256, record)
    ref = _reference(source, revision)
    warning = None
    if ref is not None:
        actual = sha256 if ref.kind == "sha256" else git_blob_sha1(path)
        if actual == ref.expected:
            return Verdict(True, f"{ref.kind} matches {ref.what}", sha256)
        if place not in _WARN_ON_MISMATCH:
            refused = f"REFUSED: {ref.kind} {actual} does not match {ref.expected}"
            return Verdict(False, refused, sha256, error=case.mismatch(ref, actual))
        detail = (
            f"UNVERIFIED: {ref.kind} {actual} does not match {ref.what} ({ref.expected}); results may not be "
            f"those of the {ref.model} model"
        )
        warning = f"{name} weights at {path} are {detail}."
    else:
        detail = _unchecked_detail(name, source, revision)
    try:
        read_state_dict(path)
    except NotAStateDict as problem:
        return Verdict(False, f"NOT USABLE: {problem}", sha256, error=case.unreadable(problem))
    return Verdict(False, detail, sha256, warning=warning)
