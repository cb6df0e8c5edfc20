"""`nnunetv2_dropgen demo`: the tiny setting end to end, and every way it must stop early and clearly."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from nnunetv2_dropgen.cli.main import main
from nnunetv2_dropgen.cli.setup_commands import trainer_dir
from nnunetv2_dropgen.demo import run
from nnunetv2_dropgen.demo.figure import DPI, figure_inches
from nnunetv2_dropgen.demo.report import TARGET_MEAN_ROW, format_table
from nnunetv2_dropgen.demo.trainers import PAIRS
from nnunetv2_dropgen.trainers import DropGenTrainer
from nnunetv2_dropgen.weights import PUBLISHED, store

REPO = Path(__file__).resolve().parents[1]
FIXTURE_WEIGHTS = Path(__file__).resolve().parents[2] / "shared/fixtures/anatomix/anatomix_random_weights.pth"


def offline(*args, **kwargs):
    raise OSError("offline (downloads disabled in tests)")


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache, no DROPGEN_WEIGHTS_* variables and no network; returns the cache folder."""
    monkeypatch.setenv("DROPGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in [n for n in os.environ if n.startswith("DROPGEN_WEIGHTS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(store, "hf_hub_download", offline)
    monkeypatch.setitem(PUBLISHED, "anatomix", dataclasses.replace(PUBLISHED["anatomix"], urls=()))
    return tmp_path / "cache"


def test_without_weights_the_demo_stops_before_writing_anything(
    no_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "demo"
    assert main(["demo", "--tiny", "--workdir", str(workdir)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    assert "anatomix.pth" in error and str(no_weights / "anatomix.pth") in error, error
    assert not workdir.exists()


def test_a_failed_step_names_its_log_and_exits_1(
    no_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "my_anatomix.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, weights)  # loads, so it is accepted (as unverified)
    monkeypatch.setattr(run, "nnunet_command", lambda name: "false")  # every nnU-Net command fails
    workdir = tmp_path / "demo"
    assert main(["demo", "--tiny", "--workdir", str(workdir), "--weights", str(weights), "--device", "cpu"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    log = workdir.resolve() / "logs" / "plan_and_preprocess.log"
    assert error == f"error: planning and preprocessing failed (exit code 1); its full output is in {log}"
    assert log.read_text().startswith("$ false -d 501 -c 3d_fullres")


def test_demo_pairs_share_their_schedule_and_nnunets_init_signature() -> None:
    signature = list(inspect.signature(nnUNetTrainer.__init__).parameters)
    for dropgen, baseline in PAIRS.values():
        assert issubclass(dropgen, DropGenTrainer) and not issubclass(baseline, DropGenTrainer)
        assert dropgen.schedule == baseline.schedule
        for trainer in (dropgen, baseline):
            assert list(inspect.signature(trainer.__init__).parameters) == signature


def test_nnunet_finds_the_demo_trainers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    for pair in PAIRS.values():
        for trainer in pair:
            assert recursive_find_trainer_class_by_name(trainer.__name__).__name__ == trainer.__name__


def test_table_rows_are_domains_and_the_target_mean_leaves_out_the_source() -> None:
    dice = {"source": {"a": 0.9, "b": 0.8}, "inverted": {"a": 0.5, "b": 0.0}, "noisy": {"a": 0.7, "b": math.nan}}
    lines = format_table(dice, ["a", "b"], ["DropGen", "nnU-Net"], "source").splitlines()
    assert lines[0].split() == ["Dice", "DropGen", "nnU-Net"]
    assert lines[2].split() == ["source", "(training", "domain)", "0.900", "0.800"]
    assert lines[4].split() == ["noisy", "0.700", "n/a"]
    assert lines[-1].split() == [*TARGET_MEAN_ROW.split(), "0.600", "n/a"]


@pytest.mark.slow
@pytest.mark.skipif(
    not FIXTURE_WEIGHTS.is_file(),
    reason=f"{FIXTURE_WEIGHTS} not found: training needs extractor weights and there is no internet",
)
def test_tiny_demo_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPGEN_WEIGHTS_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        DROPGEN_CACHE_DIR=str(tmp_path / "empty_cache"),
    )
    workdir = tmp_path / "demo"
    command = [sys.executable, "-m", "nnunetv2_dropgen.cli.main", "demo", "--tiny", "--workdir", str(workdir)]
    done = subprocess.run(
        [*command, "--weights", str(FIXTURE_WEIGHTS), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = done.stdout

    dice = json.loads((workdir / "dice.json").read_text())
    assert list(dice) == ["source", "inverted"]
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("Dice ")).split() == ["Dice", "DropGen", "nnU-Net"]
    trainers = ("DropGenTrainer_demoTiny", "nnUNetTrainer_demoTiny")
    for domain, scores in dice.items():
        row = next(line for line in lines if line.startswith(f"{domain} ")).split()[-2:]
        for cell, trainer in zip(row, trainers, strict=True):
            assert 0.0 <= scores[trainer] <= 1.0
            assert float(cell) == pytest.approx(scores[trainer], abs=5e-4)
    target_row = next(line for line in lines if line.startswith(TARGET_MEAN_ROW)).split()[-2:]
    assert [float(v) for v in target_row] == pytest.approx([dice["inverted"][t] for t in trainers], abs=5e-4)
    assert "UNVERIFIED" in out and "do not reflect the published anatomix model" in out

    for trainer in trainers:
        model = workdir / "nnUNet_results" / "Dataset501_DropGenDemo" / f"{trainer}__nnUNetPlans__3d_fullres"
        assert (model / "fold_all" / "checkpoint_final.pth").is_file()

    figure = Path(next(line for line in lines if line.startswith("Figure: ")).removeprefix("Figure: "))
    assert figure == (workdir / "dropgen_demo.png").resolve() and figure.stat().st_size > 20_000
    pixels = matplotlib.image.imread(figure)
    width, height = figure_inches(len(dice), 1 + run.FIGURE_FEATURES + 1 + len(trainers))
    assert pixels.shape[:2] == (round(height * DPI), round(width * DPI))
    assert pixels[..., :3].std() > 0.05
