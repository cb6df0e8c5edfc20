"""nnU-Net finds the trainers through nnUNet_extTrainer; the set-up commands say what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _plans import documented_trainer_names

from nnunetv2_dropgen.cli.main import main
from nnunetv2_dropgen.cli.setup_commands import check_setup
from nnunetv2_dropgen.ext_trainers import trainer_dir

FIND_AND_PICKLE = """
import pickle, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
for name in sys.argv[1:]:
    cls = recursive_find_trainer_class_by_name(name)
    assert pickle.loads(pickle.dumps(cls)) is cls
    print("FOUND", cls.__module__, cls.__name__)
"""


NNUNET_OWN: set[str] = set()
"""Documented names nnU-Net itself ships (it searches its own trainers first); none today."""


def run_python(code: str, *args: str, **env: str | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    environment.update({k: v for k, v in env.items() if v is not None})
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def test_nnunet_train_and_predict_find_every_documented_trainer_name() -> None:
    """nnUNetv2_train and nnUNetv2_predict both resolve -tr with recursive_find_trainer_class_by_name."""
    names = documented_trainer_names()
    found = run_python(FIND_AND_PICKLE, *names, nnUNet_extTrainer=str(trainer_dir()))
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    for name in names:
        module = "nnunetv2.training" if name in NNUNET_OWN else "nnunetv2_dropgen.trainers"
        assert any(line.startswith(f"FOUND {module}") and line.endswith(f" {name}") for line in lines), name


def test_without_ext_trainer_nnunet_cannot_find_them() -> None:
    missing = run_python(FIND_AND_PICKLE, "DropGenTrainer_p050")
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
    assert "anatomix weights are not in the cache" in out


def test_doctor_accepts_a_complete_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    sentences = dict((sentence.split(" ")[0], ok) for ok, sentence in check_setup())
    assert sentences["nnU-Net"] is True
    assert sentences["nnUNet_extTrainer"] is True
    assert all(ok for name, ok in sentences.items() if name.startswith("nnUNet_"))


HEAVY = ("torch", "nnunetv2", "numpy", "scipy", "SimpleITK", "huggingface_hub", "matplotlib")


def test_the_command_line_starts_without_importing_torch_or_nnunet() -> None:
    """`export nnUNet_extTrainer=$(nnunetv2_dropgen trainer-dir)` runs in every shell: building the parser and
    answering trainer-dir must not import the stack (each sub-command imports what it uses when it runs)."""
    code = (
        "import sys, io, contextlib\n"
        "from nnunetv2_dropgen.cli.main import build_parser, main\n"
        "build_parser().format_help()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['trainer-dir'])\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported at start-up: {done.stdout.strip()}"
