"""Weights: resolution order, verification, downloads (local HTTP server, no internet), install, CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from nnunetv2_dropgen.cli.main import main
from nnunetv2_dropgen.weights import (
    PUBLISHED,
    WeightsError,
    cache_dir,
    download_weights,
    env_var_for,
    fetch_weights,
    git_blob_sha1,
    install_weights,
    load_state_dict_file,
    resolve_weights,
    store,
    weights_report,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_PUBLISHED = dict(PUBLISHED)  # taken before any test patches an entry


def blob_id(data: bytes) -> str:
    """git hash-object, written out independently of the code under test."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def write_state_dict(path: Path, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    torch.save({"conv.weight": torch.randn(32, 32, generator=generator), "conv.bias": torch.zeros(32)}, path)
    return path.read_bytes()


def publish(monkeypatch: pytest.MonkeyPatch, name: str = "anatomix", **changes) -> None:
    monkeypatch.setitem(PUBLISHED, name, dataclasses.replace(PUBLISHED[name], **changes))


def offline_hub(*args, **kwargs):
    raise OSError("offline (hub disabled in tests)")


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache in tmp_path, no user variables, and no network: hub off, no fallback URLs."""
    monkeypatch.setenv("DROPGEN_CACHE_DIR", str(tmp_path / "cache"))
    for name in PUBLISHED:
        monkeypatch.delenv(env_var_for(name), raising=False)
        publish(monkeypatch, name, urls=())
    monkeypatch.setattr(store, "hf_hub_download", offline_hub)
    return tmp_path / "cache"


@pytest.fixture
def good(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A state_dict file that the (patched) published anatomix checksum declares to be the real one."""
    path = tmp_path / "good" / "anatomix.pth"
    publish(monkeypatch, git_blob_sha1=blob_id(write_state_dict(path, seed=0)))
    return path


@pytest.fixture
def other(tmp_path: Path) -> Path:
    """A loadable state_dict that is not the published file."""
    path = tmp_path / "other" / "anatomix.pth"
    write_state_dict(path, seed=1)
    return path


@pytest.fixture
def truncated(good: Path, tmp_path: Path) -> Path:
    path = tmp_path / "truncated" / "anatomix.pth"
    path.parent.mkdir()
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises the whole file but closes after half of it."""

    def do_GET(self) -> None:
        if not self.path.startswith("/short/"):
            super().do_GET()
            return
        data = Path(self.translate_path(self.path.removeprefix("/short"))).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/anatomix.pth"


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


def test_published_facts_and_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    anatomix = REAL_PUBLISHED["anatomix"]
    assert anatomix.filename == "anatomix.pth"
    assert anatomix.hf_repo == "neeldey/anatomix"
    assert anatomix.git_blob_sha1 == "d13b2f335850a0a3a9042dcaf9a7181631098b80"
    assert anatomix.urls == ("https://raw.githubusercontent.com/neel-dey/anatomix/main/model-weights/anatomix.pth",)
    dev = REAL_PUBLISHED["anatomix-dev"]
    assert (dev.filename, dev.hf_repo, dev.urls, dev.git_blob_sha1) == (
        "anatomix-dev.pth",
        "neeldey/anatomix",
        (),
        None,
    )
    assert env_var_for("anatomix") == "DROPGEN_WEIGHTS_ANATOMIX"
    assert env_var_for("anatomix-dev") == "DROPGEN_WEIGHTS_ANATOMIX_DEV"
    monkeypatch.delenv("DROPGEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "nnunetv2_dropgen"
    with pytest.raises(WeightsError, match="anatomix-dev"):
        resolve_weights("no-such-model")


# --- resolution order ---------------------------------------------------------------------------


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path, good: Path) -> None:
    data = good.read_bytes()
    paths = {}
    for place in ("argument", "environment", "cache"):
        paths[place] = (cache if place == "cache" else tmp_path / place) / "anatomix.pth"
        paths[place].parent.mkdir(parents=True, exist_ok=True)
        paths[place].write_bytes(data)
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(paths["environment"]))
    monkeypatch.setattr(store, "download_weights", no_download)

    resolved = resolve_weights("anatomix", explicit=paths["argument"])
    assert (resolved.path, resolved.source, resolved.verified) == (paths["argument"], "argument", True)
    assert resolved.detail == "git blob id matches the published anatomix.pth"

    resolved = resolve_weights("anatomix")
    assert (resolved.path, resolved.source) == (
        paths["environment"],
        "environment (DROPGEN_WEIGHTS_ANATOMIX)",
    )

    monkeypatch.delenv("DROPGEN_WEIGHTS_ANATOMIX")
    resolved = resolve_weights("anatomix")  # a good cache: no download
    assert (resolved.path, resolved.source, resolved.verified) == (paths["cache"], "cache", True)

    paths["cache"].unlink()
    calls = []
    downloaded = store.ResolvedWeights("anatomix", paths["cache"], "download (test)", True, "test")
    monkeypatch.setattr(store, "download_weights", lambda name: calls.append(name) or downloaded)
    assert resolve_weights("anatomix") is downloaded
    assert calls == ["anatomix"]
    with pytest.raises(WeightsError, match="downloading is turned off"):
        resolve_weights("anatomix", download=False)


def test_user_file_with_wrong_checksum_is_accepted_but_unverified(
    monkeypatch: pytest.MonkeyPatch, good: Path, other: Path
) -> None:
    with pytest.warns(UserWarning, match=f"(?i)unverified.*{other.name}|{other.name}.*unverified"):
        resolved = resolve_weights("anatomix", explicit=other)
    assert (resolved.path, resolved.source, resolved.verified) == (other, "argument", False)
    assert resolved.detail.startswith("UNVERIFIED")
    assert git_blob_sha1(other) in resolved.detail

    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(other))
    with pytest.warns(UserWarning, match="(?i)unverified"):
        assert resolve_weights("anatomix").verified is False


def test_user_file_must_exist_and_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, truncated: Path) -> None:
    missing = tmp_path / "nowhere" / "anatomix.pth"
    with pytest.raises(WeightsError, match="does not exist") as error:
        resolve_weights("anatomix", explicit=missing)
    assert str(missing) in str(error.value)
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(missing))
    with pytest.raises(WeightsError, match="DROPGEN_WEIGHTS_ANATOMIX"):
        resolve_weights("anatomix")
    with pytest.raises(WeightsError, match="truncated") as error:
        resolve_weights("anatomix", explicit=truncated)
    assert str(truncated) in str(error.value)


def test_corrupt_cache_is_reported_and_kept(monkeypatch: pytest.MonkeyPatch, cache: Path, truncated: Path) -> None:
    cached = cache / "anatomix.pth"
    cache.mkdir()
    cached.write_bytes(truncated.read_bytes())
    monkeypatch.setattr(store, "download_weights", no_download)
    with pytest.raises(WeightsError, match="weights fetch anatomix") as error:
        resolve_weights("anatomix")
    assert str(cached) in str(error.value) and "Delete it" in str(error.value)
    assert cached.read_bytes() == truncated.read_bytes()
    with pytest.raises(WeightsError):
        fetch_weights("anatomix")  # without --force the broken copy is reported, not replaced
    assert cached.read_bytes() == truncated.read_bytes()


def test_cache_without_published_checksum_is_loaded_and_unverified(cache: Path, truncated: Path) -> None:
    cached = cache / "anatomix-dev.pth"
    write_state_dict(cached)
    resolved = resolve_weights("anatomix-dev")
    assert (resolved.source, resolved.verified) == ("cache", False)
    assert "unverified: no published checksum" in resolved.detail
    cached.write_bytes(truncated.read_bytes())
    with pytest.raises(WeightsError, match="anatomix-dev --force") as error:
        resolve_weights("anatomix-dev")
    assert str(cached) in str(error.value)


# --- downloads ----------------------------------------------------------------------------------


def test_download_from_fallback_url(monkeypatch: pytest.MonkeyPatch, server, cache: Path, good: Path) -> None:
    www, base = server
    (www / "anatomix.pth").write_bytes(good.read_bytes())
    publish(monkeypatch, urls=(f"{base}/missing.pth", f"{base}/anatomix.pth"))  # a 404 first, then the file
    resolved = resolve_weights("anatomix")
    assert (resolved.path, resolved.verified) == (cache / "anatomix.pth", True)
    assert resolved.source == f"download ({base}/anatomix.pth)"
    assert resolved.path.read_bytes() == good.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["anatomix.pth"]


@pytest.mark.parametrize("served", ["truncated", "other"])
def test_download_that_fails_verification_leaves_nothing(
    request: pytest.FixtureRequest, server, cache: Path, good: Path, served: str
) -> None:
    www, base = server
    (www / "anatomix.pth").write_bytes(request.getfixturevalue(served).read_bytes())
    with pytest.raises(WeightsError, match="not the published file") as error:
        download_weights("anatomix", urls=[f"{base}/anatomix.pth"])
    assert "deleted" in str(error.value)
    assert list(cache.iterdir()) == []


def test_download_cut_short_leaves_nothing(server, cache: Path, good: Path) -> None:
    www, base = server
    (www / "anatomix.pth").write_bytes(good.read_bytes())
    with pytest.raises(WeightsError, match="Could not download anatomix.pth") as error:
        download_weights("anatomix", urls=[f"{base}/short/anatomix.pth"])
    assert "bytes" in str(error.value)
    assert list(cache.iterdir()) == []


def test_download_through_the_hub(monkeypatch: pytest.MonkeyPatch, cache: Path, good: Path) -> None:
    calls = []

    def fake_hub(repo_id: str, filename: str, local_dir) -> str:
        calls.append((repo_id, filename, Path(local_dir)))
        (Path(local_dir) / filename).write_bytes(good.read_bytes())
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(store, "hf_hub_download", fake_hub)
    publish(monkeypatch, urls=(closed_port_url(),))  # never reached
    resolved = resolve_weights("anatomix")
    assert (resolved.source, resolved.verified) == ("download (Hugging Face neeldey/anatomix)", True)
    assert [(repo, name) for repo, name, _ in calls] == [("neeldey/anatomix", "anatomix.pth")]
    assert calls[0][2].parent.parent == cache  # downloads land inside the cache folder, then are renamed
    assert sorted(p.name for p in cache.iterdir()) == ["anatomix.pth"]

    cached_before = (cache / "anatomix.pth").stat().st_mtime_ns
    assert fetch_weights("anatomix").source == "cache" and len(calls) == 1
    assert fetch_weights("anatomix", force=True).source.startswith("download") and len(calls) == 2
    assert (cache / "anatomix.pth").stat().st_mtime_ns >= cached_before


@pytest.mark.parametrize("name", ["anatomix", "anatomix-dev"])
def test_corrupt_hub_download_is_rejected(monkeypatch: pytest.MonkeyPatch, cache: Path, good: Path, name: str):
    def corrupt_hub(repo_id: str, filename: str, local_dir) -> str:
        (Path(local_dir) / filename).write_bytes(good.read_bytes()[:1000])
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(store, "hf_hub_download", corrupt_hub)
    with pytest.raises(WeightsError, match=PUBLISHED[name].filename):
        resolve_weights(name)
    assert list(cache.iterdir()) == []


def test_hub_download_without_checksum_is_unverified(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    def hub(repo_id: str, filename: str, local_dir) -> str:
        write_state_dict(Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(store, "hf_hub_download", hub)
    resolved = resolve_weights("anatomix-dev")
    assert (resolved.path, resolved.verified) == (cache / "anatomix-dev.pth", False)
    assert "no published checksum" in resolved.detail


def test_offline_with_nothing_anywhere(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    publish(monkeypatch, urls=(closed_port_url(),))
    with pytest.raises(WeightsError) as error:
        resolve_weights("anatomix")
    message = str(error.value)
    assert "Could not download anatomix.pth" in message
    assert str(cache / "anatomix.pth") in message
    assert "DROPGEN_WEIGHTS_ANATOMIX=" in message and "weights install anatomix" in message
    assert "Hugging Face neeldey/anatomix" in message and "127.0.0.1" in message
    assert list(cache.iterdir()) == []


# --- install ------------------------------------------------------------------------------------


def test_install(cache: Path, good: Path, other: Path, truncated: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="Refusing to install") as error:
        install_weights("anatomix", other)
    assert str(other) in str(error.value) and "--force" in str(error.value)
    assert list(cache.iterdir()) == []

    with pytest.warns(UserWarning, match="(?i)unverified"):
        forced = install_weights("anatomix", other, force=True)
    assert (forced.path, forced.verified) == (cache / "anatomix.pth", False)
    assert forced.path.read_bytes() == other.read_bytes()

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="notes.txt|anatomix.pth"):
        install_weights("anatomix", text, force=True)  # must at least load
    assert forced.path.read_bytes() == other.read_bytes()

    installed = install_weights("anatomix", good)  # a verified file replaces an unverified one
    assert (installed.path, installed.source, installed.verified) == (cache / "anatomix.pth", "cache", True)
    assert installed.path.read_bytes() == good.read_bytes()

    for bad, force in [(other, False), (other, True), (truncated, False), (truncated, True)]:
        with pytest.raises(WeightsError):
            install_weights("anatomix", bad, force=force)
        assert installed.path.read_bytes() == good.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["anatomix.pth"]


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
    for broken in (truncated, text, not_a_dict, tmp_path / "absent.pth"):
        with pytest.raises(WeightsError) as error:
            load_state_dict_file(broken, "anatomix")
        assert str(broken) in str(error.value)
        assert "weights fetch anatomix --force" in str(error.value)


def test_load_shared_fixture_with_published_layout() -> None:
    fixture = SHARED / "fixtures" / "anatomix" / "anatomix_random_weights.pth"
    if not fixture.is_file():
        pytest.skip(f"shared fixture {fixture} is absent (it lives outside the repository)")
    state = load_state_dict_file(fixture)
    assert len(state) == 115
    assert git_blob_sha1(fixture) == blob_id(fixture.read_bytes())
    assert git_blob_sha1(fixture) != REAL_PUBLISHED["anatomix"].git_blob_sha1


# --- report and CLI -----------------------------------------------------------------------------


def test_weights_report(monkeypatch: pytest.MonkeyPatch, cache: Path, good: Path, other: Path) -> None:
    rows = weights_report("anatomix")
    assert [row[0] for row in rows] == ["argument", "DROPGEN_WEIGHTS_ANATOMIX", "cache", "download"]
    assert rows[1][2] == "not set"
    assert rows[2][1:] == (cache / "anatomix.pth", "missing")

    install_weights("anatomix", good)
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(other))
    rows = weights_report("anatomix")
    assert rows[1][1] == other and "UNVERIFIED" in rows[1][2]
    assert rows[2][2].startswith("present") and "matches the published" in rows[2][2]


def test_cli_show(capsys: pytest.CaptureFixture, cache: Path) -> None:
    assert main(["weights", "show"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and str(cache / "anatomix.pth") in out
    assert "anatomix-dev" in out and "DROPGEN_WEIGHTS_ANATOMIX_DEV: not set" in out

    assert main(["weights", "show", "nonsense"]) == 1
    assert "no published weights called 'nonsense'" in capsys.readouterr().err


def test_cli_install_and_fetch(capsys: pytest.CaptureFixture, cache: Path, good: Path, other: Path) -> None:
    assert main(["weights", "install", "anatomix", str(other)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: Refusing to install") and str(other) in captured.err
    assert "Traceback" not in captured.err
    assert list(cache.iterdir()) == []

    assert main(["weights", "install", "anatomix", str(good)]) == 0
    out = capsys.readouterr().out
    assert str(cache / "anatomix.pth") in out and "verified" in out

    (cache / "anatomix.pth").unlink()
    assert main(["weights", "fetch", "anatomix"]) == 1  # offline
    assert str(cache / "anatomix.pth") in capsys.readouterr().err
