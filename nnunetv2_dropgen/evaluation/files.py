"""Atomic writes: a reader (or a second run after a kill) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file of its own in the same folder, then rename it over `path`.

    Each call has its own temporary name, so writers racing for one path (two trainings of a benchmark
    finishing together) each replace it whole: on POSIX the last rename wins and none fails. A failed
    write leaves nothing behind.
    """

    def write(temporary: Path) -> None:
        with open(temporary, "x") as handle:
            handle.write(text)

    return replace_atomic(path, write)


def replace_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` create a temporary file of its own beside `path` (a new file, with the umask's mode), then
    rename it over `path`; on any error the temporary file is removed and `path` is left as it was.

    For writers that need a file name rather than text (matplotlib's savefig): two evaluations of one
    folder in two benchmark runs write the same figure at once, and a shared temporary name made one fail.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, content: object) -> Path:
    """JSON with NaN written as null (strict JSON has no NaN), atomically."""
    return write_text_atomic(path, json.dumps(_no_nan(content), indent=2, allow_nan=False) + "\n")


def _no_nan(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
