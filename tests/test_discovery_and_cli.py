"""nnU-Net finds the trainers through nnUNet_extTrainer; the set-up commands say what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nnunetv2_dropgen.cli.main import main
from nnunetv2_dropgen.cli.setup_commands import check_setup, trainer_dir

FIND_AND_PICKLE = """
import pickle
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
cls = recursive_find_trainer_class_by_name("DropGenTrainer_p050")
assert pickle.loads(pickle.dumps(cls)) is cls
print("FOUND", cls.__module__, cls.__name__, cls.dropout_p)
"""


def run_python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    environment.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)


def test_nnunet_finds_the_trainers_through_ext_trainer_folder() -> None:
    found = run_python(FIND_AND_PICKLE, nnUNet_extTrainer=str(trainer_dir()))
    assert found.returncode == 0, found.stderr
    assert "FOUND nnunetv2_dropgen.trainers.variants DropGenTrainer_p050 0.5" in found.stdout


def test_without_ext_trainer_nnunet_cannot_find_them() -> None:
    missing = run_python(FIND_AND_PICKLE)
    assert missing.returncode != 0
    assert "Could not find requested nnunet trainer DropGenTrainer_p050" in missing.stderr


def test_trainer_dir_command_prints_the_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trainer-dir"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(trainer_dir())
    assert (trainer_dir() / "dropgen_trainers.py").is_file()


def test_doctor_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "nnUNet_raw is not set" in out
    assert "export nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)" in out
    assert "anatomix weights are not available offline" in out


def test_doctor_accepts_a_complete_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    sentences = dict((sentence.split(" ")[0], ok) for ok, sentence in check_setup())
    assert sentences["nnU-Net"] is True
    assert sentences["nnUNet_extTrainer"] is True
    assert all(ok for name, ok in sentences.items() if name.startswith("nnUNet_"))
