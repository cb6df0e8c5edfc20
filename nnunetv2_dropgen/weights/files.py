"""Atomic file writes: a file appears complete under its final name or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def temporary_beside(path: Path) -> Iterator[Path]:
    """A fresh temporary file name in `path`'s folder (so os.replace is atomic), deleted unless renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Write `document` as indented JSON under `path`, replacing any previous file only once complete."""
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    with temporary_beside(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
