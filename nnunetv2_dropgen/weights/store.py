"""Find, download, cache and verify published extractor weights.

A file is looked for in this order: a path passed in code, the environment variable
`DROPGEN_WEIGHTS_<NAME>`, the cache (`$DROPGEN_CACHE_DIR`, default
`~/.cache/nnunetv2_dropgen`), and finally a download (Hugging Face first, then the
published fallback URLs). Files the user names are trusted with a warning when they
differ from the published file; files this package put in the cache (or downloads) must
match the published checksum, because a mismatch there means a broken download.
Nothing is ever written to the cache except by an atomic rename of a verified file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from tqdm import tqdm

from nnunetv2_dropgen.weights.published import PUBLISHED, PublishedWeights

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_URL_TIMEOUT_S = 60


class WeightsError(RuntimeError):
    """A weight file cannot be found, downloaded, verified or loaded; the message says what to do."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file ready to load, where it came from, and whether it is the published one."""

    name: str
    path: Path
    source: str
    verified: bool
    detail: str


def _published(name: str) -> PublishedWeights:
    try:
        return PUBLISHED[name]
    except KeyError:
        raise WeightsError(
            f"There are no published weights called {name!r}; the known names are {', '.join(sorted(PUBLISHED))}."
        ) from None


def cache_dir() -> Path:
    """Where downloaded and installed weights are kept: `$DROPGEN_CACHE_DIR` or ~/.cache/nnunetv2_dropgen."""
    configured = os.environ.get("DROPGEN_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "nnunetv2_dropgen"


def cache_path(name: str) -> Path:
    """Where the cached copy of the published file `name` lives (whether or not it exists)."""
    return cache_dir() / _published(name).filename


def env_var_for(name: str) -> str:
    """The environment variable that points at a user's own copy, e.g. DROPGEN_WEIGHTS_ANATOMIX_DEV."""
    return "DROPGEN_WEIGHTS_" + name.upper().replace("-", "_")


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The file's git blob id (`git hash-object`), the checksum the published repositories record."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(path: str | os.PathLike, name: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (`weights_only=True`), unwrapping a "state_dict" or "model" entry.

    Every failure becomes a WeightsError that names the file, so a truncated download
    never surfaces as an obscure zip or pickle error.
    """
    path = Path(path)
    label = name or "NAME"
    fix = (
        f"Re-download it with `nnunetv2_dropgen weights fetch {label} --force`, or install a good copy "
        f"with `nnunetv2_dropgen weights install {label} /path/to/{path.name}`."
    )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Could not read the weight file {path} ({_short(exc)}); it is missing, truncated or not a "
            f"PyTorch file. {fix}"
        ) from exc
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise WeightsError(
            f"The weight file {path} loads, but it is not a state_dict (a dict of parameter names to "
            f"tensors, possibly under a 'state_dict' or 'model' key). {fix}"
        )
    return dict(loaded)


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _how_to_provide(spec: PublishedWeights) -> str:
    placeholder = f"/path/to/{spec.filename}"
    return (
        f"Place {spec.filename} at {cache_dir() / spec.filename}, or run "
        f"`nnunetv2_dropgen weights install {spec.name} {placeholder}`, or set "
        f"{env_var_for(spec.name)}={placeholder}."
    )


def _no_checksum_detail(spec: PublishedWeights) -> str:
    return f"unverified: no published checksum for {spec.filename} (it was only checked to load)"


def _checksum_status(spec: PublishedWeights, path: Path) -> tuple[bool | None, str]:
    """(True, detail) if the file is the published one, (False, detail) if not, (None, detail) if unknown."""
    if spec.git_blob_sha1 is None:
        return None, _no_checksum_detail(spec)
    blob = git_blob_sha1(path)
    if blob == spec.git_blob_sha1:
        return True, f"git blob id matches the published {spec.filename}"
    return False, (
        f"UNVERIFIED: git blob id {blob} does not match the published {spec.git_blob_sha1}; "
        "results may not be those of the published model"
    )


def _warn_unverified(spec: PublishedWeights, path: Path, detail: str) -> None:
    warnings.warn(f"{spec.name} weights at {path} are {detail}.", UserWarning, stacklevel=3)


def _resolve_user_file(spec: PublishedWeights, path: Path, source: str) -> ResolvedWeights:
    """A file the user named: it must load; a checksum mismatch is allowed but loudly reported."""
    path = path.expanduser()
    if not path.is_file():
        raise WeightsError(
            f"The {spec.name} weights given by {source} are {path}, which does not exist or is not a file. "
            f"Point it at an existing copy of {spec.filename}, or drop it to use the cache at "
            f"{cache_dir() / spec.filename}."
        )
    status, detail = _checksum_status(spec, path)
    if status is not True:
        load_state_dict_file(path, spec.name)
    if status is False:
        _warn_unverified(spec, path, detail)
    return ResolvedWeights(spec.name, path, source, status is True, detail)


def _resolve_cached(spec: PublishedWeights, path: Path) -> ResolvedWeights:
    """A cached file must be the published one; a mismatch means a broken copy: reported, never deleted."""
    status, detail = _checksum_status(spec, path)
    if status is False:
        raise WeightsError(
            f"The cached {spec.filename} at {path} ({path.stat().st_size} bytes) is not the published file: "
            f"its git blob id does not match {spec.git_blob_sha1} (a truncated or corrupted copy). "
            f"Delete it and run `nnunetv2_dropgen weights fetch {spec.name}`, or replace it with "
            f"`nnunetv2_dropgen weights fetch {spec.name} --force`."
        )
    if status is None:
        load_state_dict_file(path, spec.name)
    return ResolvedWeights(spec.name, path, "cache", status is True, detail)


def _fetch_from_hub(spec: PublishedWeights, workdir: Path) -> Path:
    return Path(hf_hub_download(repo_id=spec.hf_repo, filename=spec.filename, local_dir=workdir))


def _fetch_from_url(url: str, filename: str, workdir: Path) -> Path:
    destination = workdir / filename
    with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=None) as progress:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
    received = destination.stat().st_size
    if total is not None and received != total:
        raise OSError(f"the connection closed after {received} of {total} bytes")
    return destination


def download_weights(name: str, urls: Sequence[str] | None = None, use_hub: bool = True) -> ResolvedWeights:
    """Download into the cache (Hugging Face, then each URL), verify, and only then rename into place.

    `urls` replaces the published fallback URLs (tests use a local server). A source
    that cannot be reached is skipped; a file that arrives but fails verification stops
    everything, because a wrong published file should be noticed, not worked around.
    """
    spec = _published(name)
    target = cache_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    sources: list[tuple[str, Callable[[Path], Path]]] = []
    if use_hub:
        sources.append((f"Hugging Face {spec.hf_repo}", partial(_fetch_from_hub, spec)))
    for url in spec.urls if urls is None else urls:
        sources.append((url, partial(_fetch_from_url, url, spec.filename)))

    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix=f".{spec.filename}.", suffix=".download", dir=target.parent))
    try:
        for label, fetch in sources:
            logger.info("Downloading %s from %s", spec.filename, label)
            try:
                downloaded = fetch(Path(tempfile.mkdtemp(dir=workdir)))
            except Exception as exc:
                logger.info("Could not download %s from %s: %s", spec.filename, label, _short(exc))
                failures.append(f"{label}: {_short(exc)}")
                continue
            status, detail = _checksum_status(spec, downloaded)
            if status is False:
                raise WeightsError(
                    f"The {spec.filename} downloaded from {label} ({downloaded.stat().st_size} bytes) is "
                    f"not the published file: its git blob id does not match {spec.git_blob_sha1} (a "
                    f"truncated or different file). It was deleted and the cache was left unchanged. Try "
                    f"again later with "
                    f"`nnunetv2_dropgen weights fetch {spec.name}`. Otherwise: {_how_to_provide(spec)}"
                )
            if status is None:
                load_state_dict_file(downloaded, spec.name)
            os.replace(downloaded, target)
            logger.info("Saved %s to %s (%s)", spec.filename, target, detail)
            return ResolvedWeights(spec.name, target, f"download ({label})", status is True, detail)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tried = "; ".join(failures) if failures else "no download source was given"
    raise WeightsError(
        f"Could not download {spec.filename} ({tried}). {_how_to_provide(spec)} On a machine with internet "
        f"it can be downloaded from https://huggingface.co/{spec.hf_repo}/resolve/main/{spec.filename}."
    )


def resolve_weights(name: str, explicit: str | os.PathLike | None = None, download: bool = True) -> ResolvedWeights:
    """The weight file to use for `name`: argument, then environment variable, then cache, then download."""
    spec = _published(name)
    env_var = env_var_for(name)
    env_value = os.environ.get(env_var)
    cached = cache_path(name)
    if explicit is not None:
        resolved = _resolve_user_file(spec, Path(explicit), "argument")
    elif env_value:
        resolved = _resolve_user_file(spec, Path(env_value), f"environment ({env_var})")
    elif cached.is_file():
        resolved = _resolve_cached(spec, cached)
    elif download:
        resolved = download_weights(name)
    else:
        raise WeightsError(f"{spec.filename} was not found and downloading is turned off. {_how_to_provide(spec)}")
    logger.info("Using %s weights %s from %s: %s", name, resolved.path, resolved.source, resolved.detail)
    return resolved


def fetch_weights(name: str, force: bool = False) -> ResolvedWeights:
    """Make sure the cache holds the published file; with `force`, download again even if it does."""
    cached = cache_path(name)
    if cached.is_file() and not force:
        return _resolve_cached(_published(name), cached)
    return download_weights(name)


def install_weights(name: str, source_path: str | os.PathLike, force: bool = False) -> ResolvedWeights:
    """Copy a local file into the cache (for offline machines): copy to a temporary name, verify, rename.

    A file that is not the published one is refused unless `force`, and never replaces a
    cached file that is the published one.
    """
    spec = _published(name)
    source = Path(source_path).expanduser()
    target = cache_path(name)
    if not source.is_file():
        raise WeightsError(
            f"Cannot install {spec.filename}: {source} does not exist or is not a file. "
            f"Give the path of a copy of {spec.filename}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        status, detail = _checksum_status(spec, Path(temporary))
        if status is False and not force:
            raise WeightsError(
                f"Refusing to install {source} as {spec.filename}: its git blob id does not match the "
                f"published {spec.git_blob_sha1}, so it is not the published file (or it is truncated). "
                f"Install the published file, or add --force to install this one marked UNVERIFIED, or use "
                f"it without installing: {env_var_for(name)}={source}."
            )
        if status is not True:
            load_state_dict_file(temporary, spec.name)
        if status is False and target.is_file() and _checksum_status(spec, target)[0] is True:
            raise WeightsError(
                f"Refusing to replace the verified published {spec.filename} at {target} with the "
                f"unverified {source}. To use your file instead, set {env_var_for(name)}={source}."
            )
        if status is False:
            _warn_unverified(spec, source, detail)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    logger.info("Installed %s as %s (%s)", source, target, detail)
    return ResolvedWeights(spec.name, target, "cache", status is True, detail)


def _describe_file(spec: PublishedWeights, path: Path, must_match: bool) -> str:
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    status, detail = _checksum_status(spec, path)
    if status is False and must_match:
        fix = f"delete it and run `nnunetv2_dropgen weights fetch {spec.name}`"
        return f"present, {size}, REJECTED ({fix}): {detail}"
    if status is not True:
        try:
            load_state_dict_file(path, spec.name)
        except WeightsError as exc:
            return f"present, {size}, NOT USABLE: {exc}"
    return f"present, {size}, {detail}"


def weights_report(name: str) -> list[tuple[str, Path | None, str]]:
    """Every place `resolve_weights` looks, in order, as (place, path or None, what is there)."""
    spec = _published(name)
    env_var = env_var_for(name)
    env_value = os.environ.get(env_var)
    cached = cache_path(name)
    downloads = ", then ".join([f"Hugging Face {spec.hf_repo}", *spec.urls])
    return [
        ("argument", None, "n/a here (only a path passed in code)"),
        (
            env_var,
            Path(env_value).expanduser() if env_value else None,
            _describe_file(spec, Path(env_value).expanduser(), must_match=False) if env_value else "not set",
        ),
        ("cache", cached, _describe_file(spec, cached, must_match=True)),
        ("download", None, f"{downloads} (only when nothing above is present)"),
    ]
