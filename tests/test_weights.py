"""Weights: records, loading, resolution order, the trust policy, revisions, downloads, install, report, CLI, doctor.

No test touches the internet: conftest sets HF_HUB_OFFLINE=1; tests that need a network use servers
on 127.0.0.1 (`_weights_helpers`). Sources are built here, so nothing depends on the real anatomix facts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from _core_helpers import FIXTURES, requires_fixtures
from _weights_helpers import (
    FakeHubHandler,
    FileHandler,
    blob_id,
    refusing_url,
    serve,
    silent_server,
    write_state_dict,
)
from torch import nn

from nnunetv2_dropgen.cli.main import main
from nnunetv2_dropgen.cli.setup_commands import _weights_check
from nnunetv2_dropgen.feature_extractors import ExtractorSpec, registered_extractor
from nnunetv2_dropgen.weights import (
    RECORD_FORMAT,
    EmbeddedWeights,
    PublishedWeights,
    WeightsArchitectureMismatch,
    WeightsChecksumMismatch,
    WeightsDownloadFailed,
    WeightsMissing,
    WeightsUnreadable,
    cache_dir,
    cache_path,
    download_weights,
    env_var_for,
    fetch_weights,
    git_blob_sha1,
    install_weights,
    load_state_dict_file,
    read_record,
    record_path,
    remote,
    resolve_weights,
    revision_var_for,
    save_pretrained,
    store,
    weights_outlook,
    weights_report,
)

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> list[str]:
    """Every file under `folder` (relative paths), so a leftover temporary file anywhere is seen."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache of this test's own."""
    monkeypatch.setenv("DROPGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed; the Hub endpoint is a refusing local port unless a test points HF_ENDPOINT elsewhere."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", refusing_url())


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """The file the test source publishes."""
    path = tmp_path / "good" / "testmix.pth"
    write_state_dict(path, seed=0)
    return path


@pytest.fixture
def source(good: Path) -> PublishedWeights:
    """A published source whose checksum is that of `good`, with no fallback URLs."""
    return PublishedWeights(
        name="testmix", filename="testmix.pth", hf_repo="test/testmix", git_blob_sha1=blob_id(good.read_bytes())
    )


@pytest.fixture
def unchecked() -> PublishedWeights:
    """A published source without a checksum (as anatomix-dev)."""
    return PublishedWeights(name="testmix-dev", filename="testmix-dev.pth", hf_repo="test/testmix")


@pytest.fixture
def other(tmp_path: Path) -> Path:
    """A loadable state_dict that is not the published file."""
    path = tmp_path / "other" / "testmix.pth"
    write_state_dict(path, seed=1)
    return path


@pytest.fixture
def truncated(good: Path, tmp_path: Path) -> Path:
    path = tmp_path / "truncated" / "testmix.pth"
    path.parent.mkdir()
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


# --- basics -------------------------------------------------------------------------------------


def test_git_blob_sha1_is_git_hash_object(tmp_path: Path) -> None:
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello\n")
    assert git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    large = tmp_path / "large"  # spans several read chunks
    data = bytes(range(256)) * 9000
    large.write_bytes(data)
    assert git_blob_sha1(large) == blob_id(data)


def test_names_and_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: PublishedWeights) -> None:
    assert env_var_for("anatomix-dev") == "DROPGEN_WEIGHTS_ANATOMIX_DEV"
    assert revision_var_for("anatomix-dev") == "DROPGEN_REVISION_ANATOMIX_DEV"
    monkeypatch.delenv("DROPGEN_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "nnunetv2_dropgen"
    assert cache_path(source) == cache_dir() / "testmix.pth"
    assert cache_path(source, "main") == cache_dir() / "testmix.pth"
    assert cache_path(source, "refs/pr/1") == cache_dir() / "revisions" / "refs%2Fpr%2F1" / "testmix.pth"
    monkeypatch.setenv("DROPGEN_REVISION_TESTMIX", COMMIT_V1)
    assert cache_path(source) == cache_dir() / "revisions" / COMMIT_V1 / "testmix.pth"


# --- the record of a user's own pretrained extractor ---------------------------------------------


def test_save_pretrained_writes_weights_and_record(tmp_path: Path) -> None:
    module = nn.Conv3d(1, 2, 3)
    target = tmp_path / "pretrained" / "mine.pth"
    digest = save_pretrained(module.state_dict(), target, {"architecture": "testmix", "epochs": 3})
    assert record_path(target) == tmp_path / "pretrained" / "mine.json"
    assert files_in(tmp_path / "pretrained") == ["mine.json", "mine.pth"]
    assert digest == sha256(target)
    stored = json.loads(record_path(target).read_text())
    assert stored == {"architecture": "testmix", "epochs": 3, "format": RECORD_FORMAT, "sha256": digest}
    assert read_record(target) == stored
    plain = torch.load(target, weights_only=True)
    assert set(plain) == set(module.state_dict())
    assert all(torch.equal(plain[k], v) for k, v in module.state_dict().items())


def test_save_pretrained_refuses_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "mine.pth"
    state = nn.Linear(2, 2).state_dict()
    before = save_pretrained(state, target, {"architecture": "testmix"})
    cases = [
        (state, target, {"epochs": 3}, "architecture"),
        (state, target, {"architecture": "testmix", "when": object()}, "JSON"),
        ({}, target, {"architecture": "testmix"}, "state_dict"),
        ({"w": [1.0]}, target, {"architecture": "testmix"}, "state_dict"),
        (state, tmp_path / "mine.json", {"architecture": "testmix"}, r"\.json"),
    ]
    for bad_state, path, record, message in cases:
        with pytest.raises(ValueError, match=message):
            save_pretrained(bad_state, path, record)
    assert files_in(tmp_path) == ["mine.json", "mine.pth"]
    assert sha256(target) == before == read_record(target)["sha256"]


def test_read_record(tmp_path: Path) -> None:
    weights = tmp_path / "model.pth"
    assert read_record(weights) is None
    record_path(weights).write_text(json.dumps({"name": "a config of some other tool"}))
    assert read_record(weights) is None
    record_path(weights).write_text('{"architecture": "testmix", "format": "nnunetv2-dropgen-pretr')
    with pytest.raises(WeightsUnreadable, match="model.json") as error:
        read_record(weights)
    assert "move it away" in str(error.value)
    record_path(weights).write_text(json.dumps({"format": "nnunetv2-dropgen-pretrained-extractor/99"}))
    with pytest.raises(WeightsUnreadable, match="upgrade nnunetv2_dropgen"):
        read_record(weights)


# --- loading ------------------------------------------------------------------------------------


def test_load_state_dict_file(tmp_path: Path, good: Path, truncated: Path) -> None:
    assert set(load_state_dict_file(good)) == {"conv.weight", "conv.bias"}
    for key in ("state_dict", "model"):
        wrapped = tmp_path / f"{key}.pth"
        torch.save({key: torch.load(good, weights_only=True), "epoch": 3}, wrapped)
        assert set(load_state_dict_file(wrapped)) == {"conv.weight", "conv.bias"}

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    for broken, kind in [(truncated, "truncated"), (text, "truncated"), (not_a_dict, "not a state_dict")]:
        with pytest.raises(WeightsUnreadable, match=kind) as error:
            load_state_dict_file(broken, "testmix")
        assert str(broken) in str(error.value)
        assert "weights fetch testmix --force" in str(error.value)
    with pytest.raises(WeightsMissing, match="does not exist"):
        load_state_dict_file(tmp_path / "absent.pth", "testmix")


def test_weights_replaced_after_their_check_are_not_loaded_under_the_old_checksum(
    monkeypatch: pytest.MonkeyPatch, good: Path, other: Path
) -> None:
    """The checksum recorded in a checkpoint names the bytes loaded: a file replaced between resolution (which
    hashes it) and loading is refused, and the module keeps its weights."""
    assert set(load_state_dict_file(good, "testmix", sha256(good))) == {"conv.weight", "conv.bias"}
    with pytest.raises(WeightsUnreadable, match="changed after it was checked"):
        load_state_dict_file(good, "testmix", sha256(other))

    import nnunetv2_dropgen.feature_extractors.loading as loading

    def resolve_then_replace(*args, **kwargs):
        resolved = real_resolve(*args, **kwargs)
        good.write_bytes(other.read_bytes())  # another process replaces the file now
        return resolved

    real_resolve = loading.resolve_weights
    monkeypatch.setattr(loading, "resolve_weights", resolve_then_replace)
    module = _spec("testmix", None).build()
    before = {key: value.clone() for key, value in module.state_dict().items()}
    with registered_extractor(_spec("testmix", None)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no published checksum to compare with: resolution may warn
        with pytest.raises(WeightsUnreadable, match=f"{good.name} changed after it was checked"):
            loading.load_pretrained("testmix", module, good)
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items())


def test_a_training_checkpoint_given_as_weights_says_what_to_save_instead(tmp_path: Path) -> None:
    """nnU-Net's checkpoint_final.pth (numpy values in its log: no weights_only load) or one without them."""
    import numpy as np

    for name, extra in (("with_numpy.pth", {"logging": {"dice": [np.float64(0.5)]}}), ("plain.pth", {})):
        torch.save({"network_weights": {"extractor.conv.weight": torch.zeros(2)}, **extra}, tmp_path / name)
        with pytest.raises(WeightsUnreadable, match="not a training checkpoint such as nnU-Net's checkpoint_final"):
            load_state_dict_file(tmp_path / name, "testmix")


def test_the_record_of_a_symlinked_weight_file_is_found_beside_its_target(tmp_path: Path) -> None:
    module = nn.Linear(4, 4)
    target = tmp_path / "runs" / "mine.pth"
    save_pretrained(module.state_dict(), target, {"architecture": "testmix"})
    link = tmp_path / "elsewhere" / "mine.pth"
    link.parent.mkdir()
    link.symlink_to(target)
    assert read_record(link) == read_record(target) is not None


def test_an_unwritable_cache_is_a_sentence_and_installs_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, unchecked, good
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("DROPGEN_CACHE_DIR", str(blocker / "cache"))  # a file where a folder must be
    with registered_extractor(_spec("testmix-dev", unchecked)):
        assert main(["weights", "install", "testmix-dev", str(good)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Cannot write testmix-dev.pth into the weights cache") and "Traceback" not in error
    assert "DROPGEN_CACHE_DIR" in error and "DROPGEN_WEIGHTS_TESTMIX_DEV" in error


def test_a_source_file_that_cannot_be_read_is_not_blamed_on_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, unchecked, good
) -> None:
    """Reading the user's copy and writing the cache failed under one guard: a permission error on the copy said
    'Cannot write ... into the weights cache' and advised DROPGEN_CACHE_DIR. (Tests run as root, so the failing
    read is simulated.)"""
    import builtins

    from nnunetv2_dropgen.weights import store

    class FailingRead:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            raise OSError(5, "Input/output error")

    for failure in (PermissionError(13, "Permission denied", str(good)), None):  # on opening; while reading

        def refuse_the_copy(file, *args, failure=failure, **kwargs):
            if Path(file) != good:
                return builtins.open(file, *args, **kwargs)
            if failure is not None:
                raise failure
            return FailingRead()

        monkeypatch.setattr(store, "open", refuse_the_copy, raising=False)
        monkeypatch.setenv("DROPGEN_CACHE_DIR", str(tmp_path / "cache"))
        with registered_extractor(_spec("testmix-dev", unchecked)):
            assert main(["weights", "install", "testmix-dev", str(good)]) == 1
        error = capsys.readouterr().err
        assert error.startswith(f"error: Cannot install testmix-dev.pth: {good} cannot be read (")
        assert "Traceback" not in error
        assert "weights cache" not in error and "DROPGEN_CACHE_DIR" not in error
        assert not any((tmp_path / "cache").rglob("*.pth"))


def test_load_strips_the_torch_compile_prefix(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))
    compiled = torch.compile(module)  # compiling is lazy: nothing runs until it is called
    assert all(key.startswith("_orig_mod.") for key in compiled.state_dict())
    saved = tmp_path / "compiled.pth"
    torch.save({"model": compiled.state_dict()}, saved)

    loaded = load_state_dict_file(saved)
    assert set(loaded) == set(module.state_dict())
    fresh = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))
    fresh.load_state_dict(loaded, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in module.state_dict().items())

    ambiguous = tmp_path / "ambiguous.pth"
    torch.save({**module.state_dict(), **compiled.state_dict()}, ambiguous)
    with pytest.raises(WeightsUnreadable, match="_orig_mod"):
        load_state_dict_file(ambiguous)


@requires_fixtures
def test_load_shared_fixture_with_published_layout() -> None:
    fixture = FIXTURES / "anatomix_random_weights.pth"
    assert len(load_state_dict_file(fixture)) == 115
    assert git_blob_sha1(fixture) == blob_id(fixture.read_bytes())


# --- resolution order ---------------------------------------------------------------------------


def test_resolution_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path, good: Path, source: PublishedWeights
) -> None:
    paths = {place: (cache if place == "cache" else tmp_path / place) / "testmix.pth" for place in ("arg", "env")}
    paths["cache"] = cache / "testmix.pth"
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(good.read_bytes())
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(paths["env"]))
    monkeypatch.setattr(store, "download_weights", no_download)

    resolved = resolve_weights("testmix", source, explicit=paths["arg"])
    assert (resolved.path, resolved.origin, resolved.verified) == (paths["arg"], "argument", True)
    assert resolved.detail == "git blob id matches the published testmix.pth"
    assert (resolved.sha256, resolved.revision, resolved.record) == (sha256(good), None, None)
    assert str(paths["arg"]) in resolved.describe() and sha256(good) in resolved.describe()

    resolved = resolve_weights("testmix", source)
    assert (resolved.path, resolved.origin) == (paths["env"], "environment (DROPGEN_WEIGHTS_TESTMIX)")

    monkeypatch.delenv("DROPGEN_WEIGHTS_TESTMIX")
    resolved = resolve_weights("testmix", source)  # a good cache: no download
    assert (resolved.path, resolved.origin, resolved.verified) == (paths["cache"], "cache", True)
    assert resolved.revision is None  # placed by hand: which commit it is, nobody recorded

    paths["cache"].unlink()
    calls = []
    downloaded = dataclasses.replace(resolved, origin="download (test)")
    monkeypatch.setattr(store, "download_weights", lambda src, rev: calls.append((src, rev)) or downloaded)
    assert resolve_weights("testmix", source) is downloaded
    assert calls == [(source, None)]
    with pytest.raises(WeightsMissing, match="downloading is turned off") as error:
        resolve_weights("testmix", source, download=False)
    assert "weights install testmix /path/to/testmix.pth" in str(error.value)


def test_extractor_without_a_source(monkeypatch: pytest.MonkeyPatch, other: Path) -> None:
    with pytest.raises(WeightsMissing, match="DROPGEN_WEIGHTS_TESTMIX=") as error:
        resolve_weights("testmix", None)
    assert "no published or packaged weights" in str(error.value)
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(other))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to compare with is not a mismatch: no warning
        resolved = resolve_weights("testmix", None)
    assert (resolved.path, resolved.verified) == (other, False)
    assert "no published weights to compare" in resolved.detail


def test_user_file_with_wrong_checksum_is_accepted_but_unverified(
    monkeypatch: pytest.MonkeyPatch, source: PublishedWeights, other: Path
) -> None:
    with pytest.warns(UserWarning, match=f"(?i)unverified.*{other.name}|{other.name}.*unverified"):
        resolved = resolve_weights("testmix", source, explicit=other)
    assert (resolved.path, resolved.origin, resolved.verified) == (other, "argument", False)
    assert resolved.detail.startswith("UNVERIFIED")
    assert git_blob_sha1(other) in resolved.detail and source.git_blob_sha1 in resolved.detail

    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(other))
    with pytest.warns(UserWarning, match="(?i)unverified"):
        assert resolve_weights("testmix", source).verified is False


def test_user_file_must_exist_and_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: PublishedWeights, truncated: Path
) -> None:
    missing = tmp_path / "nowhere" / "testmix.pth"
    with pytest.raises(WeightsMissing, match="does not exist") as error:
        resolve_weights("testmix", source, explicit=missing)
    assert str(missing) in str(error.value)
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(missing))
    with pytest.raises(WeightsMissing, match="DROPGEN_WEIGHTS_TESTMIX"):
        resolve_weights("testmix", source)
    with pytest.raises(WeightsUnreadable, match="truncated") as error:
        resolve_weights("testmix", source, explicit=truncated)
    assert str(truncated) in str(error.value)


def test_own_pretrained_extractor_is_trusted_by_its_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: PublishedWeights
) -> None:
    mine = tmp_path / "pretrained" / "mine.pth"
    digest = save_pretrained(nn.Linear(4, 4).state_dict(), mine, {"architecture": "testmix", "epochs": 2})
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(mine))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UNVERIFIED warning for the user's own extractor
        resolved = resolve_weights("testmix", source)
    assert (resolved.path, resolved.verified, resolved.sha256) == (mine, True, digest)
    assert resolved.record == read_record(mine) and resolved.record["epochs"] == 2
    assert resolved.detail == (
        f"your own extractor, pretrained with nnunetv2_dropgen pretrain (record {record_path(mine)}), "
        f"sha256 {digest[:12]}"
    )

    with pytest.raises(WeightsArchitectureMismatch, match="pretrained as a 'testmix' extractor"):
        resolve_weights("other-model", None, explicit=mine)

    torch.save(nn.Linear(4, 4).state_dict(), mine)  # the file changes after pretraining
    with pytest.raises(WeightsChecksumMismatch, match="changed after pretraining") as error:
        resolve_weights("testmix", source)
    assert str(record_path(mine)) in str(error.value)


def test_embedded_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, other: Path) -> None:
    package = f"embedded_weights_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / "site" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    shipped = folder / "mini.pth"
    write_state_dict(shipped, seed=5)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, package, raising=False)
    source = EmbeddedWeights(name="mini", package=package, filename="mini.pth", sha256=sha256(shipped))

    resolved = resolve_weights("mini", source, download=False)
    assert (resolved.path, resolved.origin, resolved.verified, resolved.revision) == (shipped, "package", True, None)
    assert resolved.detail == f"sha256 matches the mini.pth shipped in {package}"

    assert resolve_weights("mini", source, explicit=shipped).verified  # the very same bytes, named by the user
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        assert not resolve_weights("mini", source, explicit=other).verified

    shipped.write_bytes(shipped.read_bytes()[:-10])
    with pytest.raises(WeightsChecksumMismatch, match="damaged") as error:
        resolve_weights("mini", source)
    assert "Reinstall nnunetv2_dropgen" in str(error.value)
    shipped.unlink()
    with pytest.raises(WeightsMissing, match="installation is incomplete"):
        resolve_weights("mini", source)


# --- the cache ----------------------------------------------------------------------------------


def test_corrupt_cache_is_refused_and_kept(
    monkeypatch: pytest.MonkeyPatch, cache: Path, source: PublishedWeights, truncated: Path
) -> None:
    cached = cache / "testmix.pth"
    cache.mkdir()
    cached.write_bytes(truncated.read_bytes())
    monkeypatch.setattr(store, "download_weights", no_download)
    with pytest.raises(WeightsChecksumMismatch, match="weights fetch testmix") as error:
        resolve_weights("testmix", source)
    assert str(cached) in str(error.value) and "Delete it" in str(error.value)
    assert "weights install testmix /path/to/testmix.pth" in str(error.value), "offline users have no fetch"
    assert cached.read_bytes() == truncated.read_bytes()
    with pytest.raises(WeightsChecksumMismatch):
        fetch_weights(source)  # without --force the broken copy is reported, not replaced
    assert cached.read_bytes() == truncated.read_bytes()


def test_cache_without_published_checksum_is_loaded_and_unverified(
    cache: Path, unchecked: PublishedWeights, truncated: Path
) -> None:
    cached = cache / "testmix-dev.pth"
    write_state_dict(cached)
    resolved = resolve_weights("testmix-dev", unchecked)
    assert (resolved.origin, resolved.verified) == ("cache", False)
    assert "unverified: no published checksum" in resolved.detail
    cached.write_bytes(truncated.read_bytes())
    with pytest.raises(WeightsUnreadable, match="testmix-dev --force") as error:
        resolve_weights("testmix-dev", unchecked)
    assert str(cached) in str(error.value)


def test_cache_hands_out_only_the_revision_asked_for(
    monkeypatch: pytest.MonkeyPatch, online, cache: Path, unchecked: PublishedWeights
) -> None:
    commits = {"main": COMMIT_MAIN, "v1": COMMIT_V1}
    downloads = []

    def hub(source: PublishedWeights, revision: str, workdir: Path) -> tuple[Path, str]:
        downloads.append(revision)
        path = workdir / source.filename
        write_state_dict(path, seed=len(revision))
        return path, commits[revision]

    monkeypatch.setattr(remote, "fetch_from_hub", hub)
    main_file = resolve_weights("testmix-dev", unchecked)
    assert (main_file.path, main_file.revision) == (cache / "testmix-dev.pth", COMMIT_MAIN)
    v1_file = resolve_weights("testmix-dev", unchecked, revision="v1")
    assert (v1_file.path, v1_file.revision) == (cache / "revisions" / "v1" / "testmix-dev.pth", COMMIT_V1)
    assert v1_file.sha256 != main_file.sha256 and downloads == ["main", "v1"]

    monkeypatch.setattr(remote, "fetch_from_hub", no_download)
    monkeypatch.setenv("DROPGEN_REVISION_TESTMIX_DEV", "v1")
    again = resolve_weights("testmix-dev", unchecked)
    assert (again.path, again.revision, again.sha256) == (v1_file.path, COMMIT_V1, v1_file.sha256)
    monkeypatch.delenv("DROPGEN_REVISION_TESTMIX_DEV")
    assert resolve_weights("testmix-dev", unchecked).sha256 == main_file.sha256

    moved_default = dataclasses.replace(unchecked, revision="v2")  # same place, but the file there is "main"
    with pytest.raises(WeightsMissing, match="revision v2"):
        resolve_weights("testmix-dev", moved_default, download=False)
    hand_placed = cache / "revisions" / "v3" / "testmix-dev.pth"
    write_state_dict(hand_placed)  # nothing records which revision it is: not handed out as v3
    with pytest.raises(WeightsMissing, match="revision v3"):
        resolve_weights("testmix-dev", unchecked, revision="v3", download=False)


# --- downloads ----------------------------------------------------------------------------------


def test_download_from_fallback_url(online, tmp_path: Path, cache: Path, good: Path, source: PublishedWeights):
    www = tmp_path / "www"
    www.mkdir()
    (www / "testmix.pth").write_bytes(good.read_bytes())
    with serve(lambda *a: FileHandler(*a, directory=str(www))) as base:
        urls = (f"{base}/missing.pth", f"{base}/testmix.pth")  # a 404 first, then the file
        resolved = resolve_weights("testmix", dataclasses.replace(source, urls=urls))
    assert (resolved.path, resolved.verified, resolved.revision) == (cache / "testmix.pth", True, "main")
    assert resolved.origin == f"download ({base}/testmix.pth)"
    assert resolved.path.read_bytes() == good.read_bytes()
    assert files_in(cache) == ["testmix.pth", "testmix.pth.source.json"]


@pytest.mark.parametrize("served", ["truncated", "other"])
def test_download_that_fails_verification_leaves_nothing(
    request: pytest.FixtureRequest, online, tmp_path: Path, cache: Path, source: PublishedWeights, served: str
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "testmix.pth").write_bytes(request.getfixturevalue(served).read_bytes())
    with serve(lambda *a: FileHandler(*a, directory=str(www))) as base:
        with pytest.raises(WeightsChecksumMismatch, match="not the published testmix.pth") as error:
            download_weights(source, urls=[f"{base}/testmix.pth"], use_hub=False)
    assert "deleted" in str(error.value)
    assert files_in(cache) == []


def test_download_cut_short_leaves_nothing(online, tmp_path: Path, cache: Path, good: Path, source) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "testmix.pth").write_bytes(good.read_bytes())
    with serve(lambda *a: FileHandler(*a, directory=str(www))) as base:
        with pytest.raises(WeightsDownloadFailed, match="Could not download testmix.pth") as error:
            download_weights(source, urls=[f"{base}/short/testmix.pth"], use_hub=False)
    assert "bytes" in str(error.value)
    assert files_in(cache) == []


def test_download_through_a_hub(
    monkeypatch: pytest.MonkeyPatch, online, cache: Path, good: Path, other: Path, source: PublishedWeights
) -> None:
    """Real huggingface_hub calls against a local fake Hub: the commit is recorded, revisions are pinned."""
    monkeypatch.setattr(
        FakeHubHandler,
        "files",
        {
            ("main", "testmix.pth"): (COMMIT_MAIN, good.read_bytes()),
            (COMMIT_MAIN, "testmix.pth"): (COMMIT_MAIN, good.read_bytes()),
            ("v1", "testmix.pth"): (COMMIT_V1, other.read_bytes()),
            (COMMIT_V1, "testmix.pth"): (COMMIT_V1, other.read_bytes()),
        },
    )
    with serve(FakeHubHandler) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub)
        source = dataclasses.replace(source, urls=(refusing_url(),))  # never reached
        resolved = resolve_weights("testmix", source)
        assert (resolved.origin, resolved.verified) == ("download (Hugging Face test/testmix)", True)
        assert (resolved.revision, resolved.sha256) == (COMMIT_MAIN, sha256(good))
        assert files_in(cache) == ["testmix.pth", "testmix.pth.source.json"]

        assert fetch_weights(source).origin == "cache"
        assert fetch_weights(source, force=True).origin.startswith("download")

        pinned = fetch_weights(source, revision="v1")  # the published checksum describes the default revision only
        assert (pinned.revision, pinned.sha256, pinned.verified) == (COMMIT_V1, sha256(other), False)
        assert pinned.path == cache / "revisions" / "v1" / "testmix.pth"
        assert "no published checksum for testmix.pth at revision v1" in pinned.detail

        with pytest.raises(WeightsDownloadFailed, match="EntryNotFound|404|not found|Not Found"):
            fetch_weights(source, revision="v9")
    assert resolve_weights("testmix", source, download=False).revision == COMMIT_MAIN


@pytest.mark.parametrize("name", ["testmix", "testmix-dev"])
def test_corrupt_hub_download_is_rejected(
    monkeypatch: pytest.MonkeyPatch, online, cache: Path, good: Path, source, unchecked, name: str
) -> None:
    def corrupt_hub(source: PublishedWeights, revision: str, workdir: Path) -> tuple[Path, str]:
        (workdir / source.filename).write_bytes(good.read_bytes()[:1000])
        return workdir / source.filename, COMMIT_MAIN

    monkeypatch.setattr(remote, "fetch_from_hub", corrupt_hub)
    chosen = source if name == "testmix" else unchecked
    with pytest.raises((WeightsChecksumMismatch, WeightsUnreadable), match=chosen.filename) as error:
        resolve_weights(name, chosen)
    assert "deleted" in str(error.value)
    assert files_in(cache) == []


def test_offline_mode_attempts_nothing(monkeypatch: pytest.MonkeyPatch, cache: Path, source) -> None:
    monkeypatch.setattr(remote, "fetch_from_hub", no_download)
    monkeypatch.setattr(remote, "fetch_from_url", no_download)
    with pytest.raises(WeightsDownloadFailed, match="HF_HUB_OFFLINE") as error:
        resolve_weights("testmix", dataclasses.replace(source, urls=("http://example.invalid/testmix.pth",)))
    message = str(error.value)
    assert str(cache / "testmix.pth") in message and "weights install testmix /path/to/testmix.pth" in message
    assert "DROPGEN_WEIGHTS_TESTMIX=/path/to/testmix.pth" in message


@pytest.mark.parametrize("kind", ["refusing", "silent"])
def test_unreachable_sources_fail_within_seconds(
    monkeypatch: pytest.MonkeyPatch, online, cache: Path, source: PublishedWeights, kind: str
) -> None:
    assert remote.TIMEOUT_S <= 5  # one short attempt per source, whatever the test below shortens
    if kind == "silent":
        monkeypatch.setattr(remote, "TIMEOUT_S", 1.0)
    with silent_server() as silent:
        base = refusing_url() if kind == "refusing" else silent
        monkeypatch.setenv("HF_ENDPOINT", base)
        started = time.monotonic()
        with pytest.raises(WeightsDownloadFailed) as error:
            resolve_weights("testmix", dataclasses.replace(source, urls=(f"{base}/testmix.pth",)))
        elapsed = time.monotonic() - started
    assert elapsed < 15, f"giving up took {elapsed:.1f} s"
    message = str(error.value)
    assert message.startswith("Could not download testmix.pth (Hugging Face test/testmix: ")
    assert f"{base}/testmix.pth: " in message and str(cache / "testmix.pth") in message
    assert "weights install testmix /path/to/testmix.pth" in message and "DROPGEN_WEIGHTS_TESTMIX=" in message
    assert files_in(cache) == []


# --- install ------------------------------------------------------------------------------------


def test_install(
    cache: Path,
    source: PublishedWeights,
    good: Path,
    other: Path,
    truncated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """The cache holds published files only: another file is refused with the way to use it (the variable)."""
    with pytest.raises(WeightsChecksumMismatch, match="Refusing to install") as error:
        install_weights(source, other)
    assert f"DROPGEN_WEIGHTS_TESTMIX={other}" in str(error.value) and "--force" not in str(error.value)
    assert files_in(cache) == []

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises((WeightsChecksumMismatch, WeightsUnreadable)):
        install_weights(source, text)

    installed = install_weights(source, good)
    assert (installed.path, installed.verified, installed.revision) == (cache / "testmix.pth", True, "main")
    assert installed.origin == f"cache (installed from {good})"
    assert installed.path.read_bytes() == good.read_bytes()
    assert resolve_weights("testmix", source, download=False).verified

    for bad in (other, truncated):
        with pytest.raises((WeightsChecksumMismatch, WeightsUnreadable)):
            install_weights(source, bad)
        assert installed.path.read_bytes() == good.read_bytes()
    assert files_in(cache) == ["testmix.pth", "testmix.pth.source.json"]

    # what the refusal says to do is what training then does: the named file, UNVERIFIED, with its sha256
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(other))
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        named = resolve_weights("testmix", source, download=False)
    assert (named.path, named.verified, named.sha256) == (other, False, hashlib.sha256(other.read_bytes()).hexdigest())
    assert "UNVERIFIED" in named.describe() and named.sha256 in named.describe()
    with pytest.raises(WeightsMissing, match="does not exist"):
        install_weights(source, tmp_path / "absent.pth")


def test_install_a_pinned_revision(cache: Path, unchecked: PublishedWeights, other: Path) -> None:
    installed = install_weights(unchecked, other, revision="v1")
    assert installed.path == cache / "revisions" / "v1" / "testmix-dev.pth"
    with pytest.raises(WeightsMissing):
        resolve_weights("testmix-dev", unchecked, download=False)  # the default revision is still absent
    found = resolve_weights("testmix-dev", unchecked, download=False, revision="v1")
    assert (found.path, found.revision, found.sha256) == (installed.path, "v1", sha256(other))


# --- report, CLI and doctor ---------------------------------------------------------------------


def test_weights_report(monkeypatch: pytest.MonkeyPatch, cache: Path, source, good: Path, other: Path) -> None:
    rows = weights_report("testmix", source)
    assert [row[0] for row in rows] == ["argument", "DROPGEN_WEIGHTS_TESTMIX", "cache", "download"]
    assert rows[1][2] == "not set"
    assert rows[2][1:] == (cache / "testmix.pth", "missing")
    assert "HF_HUB_OFFLINE" in rows[3][2]

    install_weights(source, good)
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(other))
    rows = weights_report("testmix", source)
    assert rows[1][1] == other and "UNVERIFIED" in rows[1][2]
    assert rows[2][2].startswith("present") and "matches the published" in rows[2][2]
    (cache / "testmix.pth").write_bytes(other.read_bytes())
    assert "REFUSED" in weights_report("testmix", source)[2][2]


def test_weights_outlook(monkeypatch: pytest.MonkeyPatch, online, cache: Path, source, good: Path, other: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_outlook("testmix", source).state == "unavailable"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert weights_outlook("testmix", source).state == "unavailable"  # the Hub endpoint refuses
    monkeypatch.setattr(remote, "hub_commit", lambda source, revision: COMMIT_MAIN)
    outlook = weights_outlook("testmix", source)
    assert outlook.state == "download" and "training would download" in outlook.sentence

    install_weights(source, good)
    assert weights_outlook("testmix", source).state == "ready"
    (cache / "testmix.pth").write_bytes(other.read_bytes())
    outlook = weights_outlook("testmix", source)
    assert outlook.state == "refused" and "would download" not in outlook.sentence

    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(other))
    assert weights_outlook("testmix", source).state == "unverified"
    monkeypatch.setenv("DROPGEN_WEIGHTS_TESTMIX", str(cache / "absent.pth"))
    assert weights_outlook("testmix", source).state == "refused"


def _spec(name: str, weights) -> ExtractorSpec:
    """An extractor whose architecture fits write_state_dict's files."""
    return ExtractorSpec(
        name=name,
        build=lambda: nn.ModuleDict({"conv": nn.Linear(32, 32)}),
        feature_channels=1,
        spatial_multiple=1,
        weights=weights,
    )


def test_cli_show(capsys: pytest.CaptureFixture, cache: Path, source: PublishedWeights) -> None:
    with registered_extractor(_spec("testmix", source)):
        assert main(["weights", "show"]) == 0
        out = capsys.readouterr().out
        assert str(cache) in out and str(cache / "testmix.pth") in out
        assert "DROPGEN_WEIGHTS_TESTMIX: not set" in out and "DROPGEN_REVISION_TESTMIX" in out
        assert "anatomix-dev" in out  # every registered extractor with weights is listed

        assert main(["weights", "show", "testmix", "--revision", "v1"]) == 0
        out = capsys.readouterr().out
        assert "revision v1" in out and str(cache / "revisions" / "v1" / "testmix.pth") in out

    assert main(["weights", "show", "nonsense"]) == 1
    assert "No registered extractor called 'nonsense'" in capsys.readouterr().err


def test_cli_install_and_fetch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, cache: Path, source, unchecked, good, other
) -> None:
    with registered_extractor(_spec("testmix", source)), registered_extractor(_spec("testmix-dev", unchecked)):
        assert main(["weights", "install", "testmix", str(other)]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("error: Refusing to install") and str(other) in captured.err
        assert "Traceback" not in captured.err
        assert files_in(cache) == []

        assert main(["weights", "install", "testmix", str(good)]) == 0
        out = capsys.readouterr().out
        assert str(cache / "testmix.pth") in out and "verified" in out and sha256(good) in out

        wrong = good.parent / "wrong.pth"  # no checksum is published for testmix-dev: the architecture decides
        torch.save({"weight": torch.zeros(4, 4)}, wrong)
        assert main(["weights", "install", "testmix-dev", str(wrong)]) == 1
        error = capsys.readouterr().err
        assert f"{wrong} does not fit the 'testmix-dev' architecture" in error and "nothing was installed" in error
        assert not any("testmix-dev" in f for f in files_in(cache))

        (cache / "testmix.pth").unlink()
        assert main(["weights", "fetch", "testmix"]) == 1  # offline
        assert str(cache / "testmix.pth") in capsys.readouterr().err

        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        asked = []

        def hub(source: PublishedWeights, revision: str, workdir: Path) -> tuple[Path, str]:
            asked.append(revision)
            write_state_dict(workdir / source.filename, seed=7)
            return workdir / source.filename, COMMIT_V1

        monkeypatch.setattr(remote, "fetch_from_hub", hub)
        assert main(["weights", "fetch", "testmix-dev", "--revision", "v1"]) == 0
        out = capsys.readouterr().out
        assert asked == ["v1"] and f"revision: {COMMIT_V1}" in out
        assert str(cache / "revisions" / "v1" / "testmix-dev.pth") in out


def test_doctor_tells_the_truth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path, source, good: Path, truncated: Path
) -> None:
    """A corrupt cached file is reported as refused (training stops on it), never as 'would download'."""
    package = f"doctor_weights_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "site" / package).mkdir(parents=True)
    (tmp_path / "site" / package / "__init__.py").write_text("")
    write_state_dict(tmp_path / "site" / package / "mini.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    shipped = tmp_path / "site" / package / "mini.pth"
    embedded = EmbeddedWeights(name="test-embedded", package=package, filename="mini.pth", sha256=sha256(shipped))

    def line(name: str) -> tuple[bool, str]:
        (found,) = [(ok, sentence) for ok, sentence in _weights_check() if sentence.startswith(f"{name} weights")]
        return found

    with registered_extractor(_spec("testmix", source)), registered_extractor(_spec("test-embedded", embedded)):
        assert line("test-embedded")[0] is True
        ok, sentence = line("testmix")  # missing and offline: information, since an embedded extractor works
        assert ok is True and "HF_HUB_OFFLINE" in sentence and "Information only" in sentence

        cache.mkdir()
        (cache / "testmix.pth").write_bytes(truncated.read_bytes())
        ok, sentence = line("testmix")
        assert ok is False and "REFUSED" in sentence and "Delete it" in sentence
        assert "would download" not in sentence

        install_weights(source, good)
        ok, sentence = line("testmix")
        assert ok is True and "git blob id matches the published testmix.pth" in sentence

        shipped.write_bytes(b"damaged")
        ok, sentence = line("test-embedded")
        assert ok is False and "damaged" in sentence
