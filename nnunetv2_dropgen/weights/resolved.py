"""A weight file ready to load, with everything a training log or checkpoint should say about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ResolvedWeights:
    """Which file, where it came from, whether it is the expected one, and exactly which bytes and revision.

    origin: e.g. "argument", "environment (DROPGEN_WEIGHTS_ANATOMIX)", "cache", "package",
        "download (Hugging Face neeldey/anatomix)".
    detail: one sentence on how the file was checked.
    sha256: of the file, always computed, so a log or checkpoint names the exact file.
    revision: the Hub commit when known, else the revision asked for; None when it does not apply or is unknown.
    record: the pretraining record when the file is the user's own pretrained extractor, else None.
    """

    name: str
    path: Path
    origin: str
    verified: bool
    detail: str
    sha256: str
    revision: str | None = None
    record: dict[str, Any] | None = None

    def describe(self) -> str:
        """One sentence for logs: name, file, origin, check, revision and sha256."""
        revision = f"; revision {self.revision}" if self.revision else ""
        return f"{self.name} weights {self.path} ({self.origin}; {self.detail}{revision}; sha256 {self.sha256})."
