"""Where published weights are kept on this machine, and which Hub revision each cached file is.

The default revision of a source lives at `<cache>/<filename>` (where the documentation tells
offline users to place it); any other revision at `<cache>/revisions/<revision>/<filename>`, so
pinned revisions never overwrite each other. Beside each downloaded or installed file, a small
JSON note (`<filename>.source.json`) records the revision asked for, the Hub commit when known and
the file's sha256: a file is handed out only for the revision it was fetched as. A file without a
valid note (placed by hand) counts as the default revision, of unknown commit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from nnunetv2_dropgen.weights.files import write_json_atomically
from nnunetv2_dropgen.weights.sources import PublishedWeights

_NOTE_SUFFIX = ".source.json"


def cache_dir() -> Path:
    """Where downloaded and installed weights are kept: `$DROPGEN_CACHE_DIR` or ~/.cache/nnunetv2_dropgen."""
    configured = os.environ.get("DROPGEN_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "nnunetv2_dropgen"


def _variable(prefix: str, name: str) -> str:
    return prefix + name.upper().replace("-", "_")


def env_var_for(name: str) -> str:
    """The environment variable that points at a user's own weight file, e.g. DROPGEN_WEIGHTS_ANATOMIX_DEV."""
    return _variable("DROPGEN_WEIGHTS_", name)


def other_weights_variables(name: str) -> list[str]:
    """The DROPGEN_WEIGHTS_* variables set (non-empty) other than extractor `name`'s own: meant for another
    extractor, or misspelt. Extractor `name` never reads them."""
    own = env_var_for(name)
    return sorted(
        key for key, value in os.environ.items() if key.startswith("DROPGEN_WEIGHTS_") and value and key != own
    )


def revision_var_for(name: str) -> str:
    """The environment variable that pins a Hub revision, e.g. DROPGEN_REVISION_ANATOMIX_DEV."""
    return _variable("DROPGEN_REVISION_", name)


def requested_revision(source: PublishedWeights, revision: str | None = None) -> str:
    """The revision asked for: the argument, else DROPGEN_REVISION_<NAME>, else the source's default."""
    return revision or os.environ.get(revision_var_for(source.name)) or source.revision


def cache_path(source: PublishedWeights, revision: str | None = None) -> Path:
    """Where the cached copy of `source` at `revision` (default: the requested one) lives, whether or not it exists."""
    revision = requested_revision(source, revision)
    if revision == source.revision:
        return cache_dir() / source.filename
    return cache_dir() / "revisions" / quote(revision, safe="") / source.filename


@dataclass(frozen=True)
class CacheNote:
    """What the cache knows about one of its files: the revision it was fetched as, its commit and sha256."""

    revision: str | None
    commit: str | None
    sha256: str
    origin: str


def note_path(path: Path) -> Path:
    return path.with_name(path.name + _NOTE_SUFFIX)


def write_note(path: Path, note: CacheNote) -> None:
    """Record (atomically) where the cached file `path` came from."""
    write_json_atomically(note_path(path), note.__dict__)


def read_note(path: Path, sha256: str) -> CacheNote | None:
    """The note of the cached file `path`, or None when there is none or it describes another file."""
    try:
        document = json.loads(note_path(path).read_text(encoding="utf-8"))
        note = CacheNote(**document)
    except (OSError, ValueError, TypeError):
        return None
    return note if note.sha256 == sha256 else None


def serves_revision(source: PublishedWeights, path: Path, note: CacheNote | None, revision: str) -> bool:
    """Whether the cached file may be handed out for `revision`: its note says so, or it sits at the default place."""
    if note is not None and note.revision is not None:
        return revision in (note.revision, note.commit)
    return revision == source.revision and path == cache_dir() / source.filename
