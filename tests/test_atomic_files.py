"""Atomic writes: whole files only, also when several writers race for one path."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from nnunetv2_dropgen.evaluation import files
from nnunetv2_dropgen.evaluation.files import write_json_atomic, write_text_atomic


def test_each_write_renames_a_temporary_file_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[Path] = []
    replace = os.replace

    def recording(source: str, target: Path) -> None:
        renamed.append(Path(source))
        replace(source, target)

    monkeypatch.setattr(files.os, "replace", recording)
    target = tmp_path / "times.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert len(set(renamed)) == 2 and all(r.parent == tmp_path for r in renamed)
    assert target.read_text() == "second" and list(tmp_path.iterdir()) == [target]


def test_written_files_get_the_umasks_permissions_like_any_new_file(tmp_path: Path) -> None:
    """Reports and records on a shared cluster stay readable by the group, as files written directly would."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_writers_racing_for_one_path_all_succeed_and_leave_one_whole_file(tmp_path: Path) -> None:
    target, writers = tmp_path / "train_times.json", 8
    start, errors = threading.Barrier(writers), []

    def write(index: int) -> None:
        start.wait()
        try:
            for repeat in range(20):
                write_json_atomic(target, {"writer": index, "repeat": repeat, "padding": "x" * 10_000})
        except Exception as error:  # noqa: BLE001 - every failure is collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    written = json.loads(target.read_text())  # one writer's whole file, not pieces of several
    assert written["repeat"] == 19 and len(written["padding"]) == 10_000 and list(tmp_path.iterdir()) == [target]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_text_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "\udcff")  # a lone surrogate cannot be encoded
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_writers_that_need_a_file_name_each_get_their_own(tmp_path: Path) -> None:
    """Two benchmark runs once drew one evaluation's figure at the same moment through one shared temporary
    name: the first rename took the file away from the second, which failed. Here both writers have written
    their temporary files before either renames."""
    target, both_written, errors = tmp_path / "dice.png", threading.Barrier(2), []

    def write(index: int) -> None:
        def draw(temporary: Path) -> None:
            temporary.write_bytes(bytes([index]) * 1000)
            both_written.wait(timeout=10)

        try:
            files.replace_atomic(target, draw)
        except Exception as error:  # noqa: BLE001 - every failure is collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() in (bytes([0]) * 1000, bytes([1]) * 1000)
