"""What is where, and what training would do about it: the truth for `weights show` and `doctor`.

Both use the same `verify.judge` and `store` functions as training, so they cannot promise a
download where training would refuse a corrupt file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_dropgen.weights import remote
from nnunetv2_dropgen.weights.cache import cache_path, env_var_for, read_note, requested_revision, serves_revision
from nnunetv2_dropgen.weights.checksums import sha256_file
from nnunetv2_dropgen.weights.errors import WeightsError, WeightsMissing
from nnunetv2_dropgen.weights.sources import EmbeddedWeights, PublishedWeights, WeightsSource
from nnunetv2_dropgen.weights.state_dict import short_error
from nnunetv2_dropgen.weights.store import packaged_path, resolve_weights
from nnunetv2_dropgen.weights.verify import Place, how_to_provide, judge


def _describe(
    name: str, source: WeightsSource | None, path: Path, place: Place, origin: str, revision: str | None = None
) -> str:
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    sha256 = sha256_file(path)
    if place is Place.CACHE and isinstance(source, PublishedWeights):
        note = read_note(path, sha256)
        if not serves_revision(source, path, note, revision):
            fetched = note.revision if note is not None else "unknown"
            return f"present, {size}, but it is revision {fetched}, not {revision}: a download would replace it"
    verdict = judge(name, source, path, place, origin=origin, revision=revision, sha256=sha256)
    if verdict.error is not None:
        label = "NOT USABLE" if place is Place.USER else "REFUSED"
        return f"present, {size}, {label}: {verdict.error}"
    return f"present, {size}, {verdict.detail}"


def _downloads(source: PublishedWeights, revision: str) -> str:
    places = [f"Hugging Face {source.hf_repo} (revision {revision})"]
    if revision == source.revision:
        places += source.urls
    if remote.hub_offline():
        return "none: offline mode is on (HF_HUB_OFFLINE is set)"
    return ", then ".join(places) + " (only when nothing above is present)"


def weights_report(
    name: str, source: WeightsSource | None, revision: str | None = None
) -> list[tuple[str, Path | None, str]]:
    """Every place `resolve_weights` looks for `name`, in order, as (place, path or None, what is there)."""
    env_var = env_var_for(name)
    env_value = os.environ.get(env_var)
    user = Path(env_value).expanduser() if env_value else None
    rows: list[tuple[str, Path | None, str]] = [
        ("argument", None, "n/a here (only a path passed in code)"),
        (env_var, user, _describe(name, source, user, Place.USER, f"environment ({env_var})") if user else "not set"),
    ]
    if isinstance(source, EmbeddedWeights):
        path = packaged_path(source)
        rows.append(("package", path, _describe(name, source, path, Place.PACKAGE, "package")))
    elif isinstance(source, PublishedWeights):
        revision = requested_revision(source, revision)
        path = cache_path(source, revision)
        rows.append(("cache", path, _describe(name, source, path, Place.CACHE, "cache", revision)))
        rows.append(("download", None, _downloads(source, revision)))
    return rows


def download_blocker(source: PublishedWeights, revision: str | None = None) -> str | None:
    """None when a download source of `source` answers now; otherwise why training could not download it."""
    if remote.hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE is set)"
    revision = requested_revision(source, revision)
    failures = []
    try:
        remote.hub_commit(source, revision)
        return None
    except Exception as exc:
        failures.append(f"Hugging Face {source.hf_repo}: {short_error(exc)}")
    for url in source.urls if revision == source.revision else ():
        try:
            remote.url_answers(url)
            return None
        except Exception as exc:
            failures.append(f"{url}: {short_error(exc)}")
    return "no download source answers (" + "; ".join(failures) + ")"


@dataclass(frozen=True)
class Outlook:
    """What training would do about extractor `name`'s weights right now.

    state: "ready" (a usable file is in place), "unverified" (a usable file differs from the published
    one: training would warn), "refused" (training would stop on the file in place), "download"
    (nothing in place; training would download it) or "unavailable" (nothing in place and it cannot
    be downloaded now).
    """

    name: str
    state: str
    sentence: str


def weights_outlook(name: str, source: WeightsSource | None, revision: str | None = None) -> Outlook:
    """Predict what training would do with `name`'s weights, by the very functions training uses (no download)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resolved = resolve_weights(name, source, download=False, revision=revision)
    except WeightsMissing as exc:
        if os.environ.get(env_var_for(name)) or not isinstance(source, PublishedWeights):
            return Outlook(name, "refused", f"{name} weights: training would stop: {exc}")
        wanted = requested_revision(source, revision)
        blocker = download_blocker(source, wanted)
        if blocker is None:
            return Outlook(
                name,
                "download",
                f"{name} weights are not in the cache yet ({cache_path(source, wanted)}): training would download "
                f"them (revision {wanted}), or run `nnunetv2_dropgen weights fetch {name}` now.",
            )
        return Outlook(
            name,
            "unavailable",
            f"{name} weights are not in the cache and {blocker}, so training could not download them. "
            f"{how_to_provide(source, wanted)}",
        )
    except WeightsError as exc:
        return Outlook(name, "refused", f"{name} weights: REFUSED, training would stop: {exc}")
    if caught:
        return Outlook(name, "unverified", f"{name} weights: training would warn: {caught[0].message}")
    return Outlook(name, "ready", f"{name} weights: {resolved.describe()}")
