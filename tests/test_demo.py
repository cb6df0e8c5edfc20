"""`nnunetv2_dropgen demo`: the tiny setting end to end, and every way it must stop early and clearly."""

from __future__ import annotations

import dataclasses
import inspect
import json
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
from nnunetv2_dropgen.demo import run
from nnunetv2_dropgen.demo.figure import FIGURE_FEATURES
from nnunetv2_dropgen.demo.trainers import DEMO_SCHEDULES, demo_trainer_names
from nnunetv2_dropgen.evaluation.figure import DPI, figure_inches
from nnunetv2_dropgen.evaluation.report import HELD_OUT_MEAN_ROW
from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.trainers import DropGenTrainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache (conftest already clears DROPGEN_WEIGHTS_* and sets HF_HUB_OFFLINE); returns its folder."""
    monkeypatch.setenv("DROPGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_offline_without_anatomix_the_demo_says_so_in_one_line_and_uses_the_embedded_extractor(
    no_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extractor, weights = run.choose_extractor(None, None)
    assert (extractor, weights.name, weights.origin, weights.verified) == ("minimix2", "minimix2", "package", True)
    said = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(said) == 1 and "anatomix weights are not on this machine" in said[0], said
    assert "using the embedded extractor minimix2" in said[0] and "--extractor anatomix" in said[0]


def test_insisting_on_anatomix_offline_stops_before_writing_anything(
    no_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "demo"
    assert main(["demo", "--tiny", "--extractor", "anatomix", "--workdir", str(workdir)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    assert "anatomix.pth" in error and str(no_weights) in error, error
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


@pytest.mark.parametrize("extractor", [run.PREFERRED_EXTRACTOR, run.EMBEDDED_EXTRACTOR])
def test_nnunet_finds_demo_pairs_that_share_their_schedule_and_nnunets_init_signature(
    extractor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    signature = list(inspect.signature(nnUNetTrainer.__init__).parameters)
    for schedule in DEMO_SCHEDULES:
        names = demo_trainer_names(schedule, extractor)
        dropgen, baseline = (recursive_find_trainer_class_by_name(name) for name in names)
        assert (dropgen.__name__, baseline.__name__) == names
        assert issubclass(dropgen, DropGenTrainer) and not issubclass(baseline, DropGenTrainer)
        assert dropgen.extractor_name == extractor
        assert dropgen.schedule == baseline.schedule
        for trainer in (dropgen, baseline):
            assert list(inspect.signature(trainer.__init__).parameters) == signature


@pytest.mark.slow
def test_tiny_demo_end_to_end_offline(tmp_path: Path) -> None:
    """What a new user without internet gets: the embedded extractor, said once, and every step to the end."""
    env = dict(os.environ)  # offline, no DROPGEN_WEIGHTS_* (conftest)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        DROPGEN_CACHE_DIR=str(tmp_path / "empty_cache"),
    )
    workdir = tmp_path / "demo"
    command = [sys.executable, "-m", "nnunetv2_dropgen.cli.main", "demo", "--tiny", "--workdir", str(workdir)]
    done = subprocess.run(
        [*command, "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = done.stdout
    assert "using the embedded extractor minimix2" in done.stdout + done.stderr
    dropgen = "DropGen (minimix2)"

    data = json.loads((workdir / "dice.json").read_text())
    assert data["test_sets"] == ["source", "inverted"] and data["in_domain"] == ["source"]
    assert data["models"] == [dropgen, "nnU-Net"] and data["baseline"] == "nnU-Net"
    trainers = demo_trainer_names("tiny", "minimix2")
    assert [m["trainer"] for m in data["model_details"]] == list(trainers)
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| test set ") and "| cases " in line)
    assert [c.strip() for c in header.strip("|").split("|")][2:] == [dropgen, "nnU-Net (baseline)", f"Δ {dropgen}"]
    for domain, shown in (("source", "source (in-domain)"), ("inverted", "inverted")):
        labels = ("blob", "shell", "torus")  # per-label rows; the foreground mean is the one without a label name
        row = next(line for line in lines if line.startswith(f"| {shown} ") and not any(k in line for k in labels))
        cells = [c.strip() for c in row.strip("|").split("|")]
        for cell, model in zip(cells[2:4], (dropgen, "nnU-Net"), strict=True):
            stats = data["dice"][domain][model]["foreground_mean"]
            assert 0.0 <= stats["mean"] <= 1.0
            spread = "" if stats["std"] is None else f" ± {stats['std']:.3f}"  # one test case: no spread
            assert cell == f"{stats['mean']:.3f}{spread}"
    mean_row = next(line for line in lines if line.startswith(f"| {HELD_OUT_MEAN_ROW} "))
    means = [float(c) for c in mean_row.strip("|").split("|")[2:4]]
    expected = [data["dice"]["inverted"][m]["foreground_mean"]["mean"] for m in (dropgen, "nnU-Net")]
    assert means == pytest.approx(expected, abs=5e-4)
    assert "UNVERIFIED" not in out

    for trainer in trainers:
        model = workdir / "nnUNet_results" / "Dataset501_DropGenDemo" / f"{trainer}__nnUNetPlansCPU__3d_fullres"
        assert (model / "fold_all" / "checkpoint_final.pth").is_file()

    figures = [Path(line.removeprefix("Figure: ")) for line in lines if line.startswith("Figure: ")]
    assert figures[0] == (workdir / "dropgen_demo.png").resolve() and figures[0].stat().st_size > 20_000
    pixels = matplotlib.image.imread(figures[0])
    width, height = figure_inches(2, 1 + FIGURE_FEATURES + len(trainers) + 1)
    assert pixels.shape[:2] == (round(height * DPI), round(width * DPI))
    assert pixels[..., :3].std() > 0.05

    # The models shipped with the package, on the same test cases: trained 20,000 iterations, they segment the source.
    shipped = workdir / "shipped_models"
    assert figures[1] == (shipped / "dropgen_demo_shipped.png").resolve() and figures[1].stat().st_size > 20_000
    evaluated = json.loads((shipped / "dice.json").read_text())
    assert evaluated["models"] == [dropgen, "nnU-Net (ERM)", "nnU-Net DA5"] and evaluated["baseline"] == "nnU-Net (ERM)"
    assert evaluated["test_sets"] == data["test_sets"]
    source = {m: evaluated["dice"]["source"][m]["foreground_mean"]["mean"] for m in evaluated["models"]}
    assert source[dropgen] > 0.8 and source["nnU-Net (ERM)"] > 0.9 and source["nnU-Net DA5"] > 0.9, source
    assert "## Shipped with the package: the same comparison after 20000 iterations per model" in out
    assert "These models come from benchmarks/bench_domain_shift.py" in out and "over the last fifth: flat" in out


def test_a_stopped_demo_step_stops_its_nnunet_command(tmp_path: Path) -> None:
    """Ctrl-C (or a stop sent to the demo alone) while a step runs: the child, e.g. nnUNetv2_train, must not go
    on writing into the model folder a rerun trains again."""
    from nnunetv2_dropgen.demo.commands import run_logged

    class StopWhenItRuns:
        n = 0

        def update(self, count: int) -> None:
            raise KeyboardInterrupt

    log = tmp_path / "step.log"
    child = "import os, time; print('pid', os.getpid(), flush=True); print('Epoch time', flush=True); time.sleep(60)"
    with pytest.raises(KeyboardInterrupt):
        run_logged("a step", [sys.executable, "-c", child], log, dict(os.environ), StopWhenItRuns(), r"Epoch time")
    pid = int(log.read_text().split("pid ")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_demos_data_messages_name_what_applies(tmp_path: Path) -> None:
    """The generator's refusal named --overwrite, which the demo does not have, and every error said the demo
    reuses a dataset, also when nothing existed to reuse."""
    from nnunetv2_dropgen.demo import run

    settings = run.DemoSettings(tmp_path, "tiny", "cpu", 1, 1, (16, 16, 16))
    run._generate(settings, tmp_path / "nnUNet_raw")
    with pytest.raises(run.DemoError) as changed:
        run._generate(dataclasses.replace(settings, num_train=2), tmp_path / "nnUNet_raw")
    assert "--overwrite" not in str(changed.value) and f"delete {tmp_path} to start over" in str(changed.value)
    with pytest.raises(run.DemoError) as small:
        run._generate(dataclasses.replace(settings, shape=(4, 4, 4)), tmp_path / "other" / "nnUNet_raw")
    assert "reuses" not in str(small.value)
