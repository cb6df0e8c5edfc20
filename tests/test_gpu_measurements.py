"""The one-call GPU measurement script runs every part on tiny CPU sizes, and keeps to its time budget.

CI has no GPU: `--device cpu --tiny` runs the same code paths (nnU-Net training with resume, prediction,
the benchmark scripts with --json) so that a lent GPU machine finds nothing left to prepare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_measurements.py"


def run_script(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_every_part_runs_on_tiny_cpu_sizes_and_reports_its_figures(tmp_path: Path) -> None:
    done = run_script(tmp_path, "--budget", "1200")  # generous: CI machines differ; the budget has its own test
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(status.startswith("done") for status in report["statuses"].values()), report["statuses"]
    results = report["results"]
    assert {"torch", "nnunetv2", "device_name"} <= set(results["environment"])
    assert results["network"]["extractor_forward_ms"] > 0 and results["network"]["train_step_ratio"] > 0
    trainer = results["trainer"]
    assert trainer["train_step_ratio"] > 0 and trainer["inference_ratio"] > 0
    assert (
        trainer["DropGenTrainer"]["recompilations"] == 0 and "RANDOM" in trainer["DropGenTrainer"]["extractor_weights"]
    )
    run = results["nnunet_run"]
    assert run["resumed_to_epoch"] == 1 and {"train", "resume", "predict_cpu"} <= set(run["seconds"])
    assert results["pretraining"]["minimix_32"]["runs"][0]["steps_per_s"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "## Targets" in markdown and "extractor_forward_ms" in markdown


def test_parts_that_would_overrun_the_budget_are_skipped_and_reported(tmp_path: Path) -> None:
    done = run_script(tmp_path, "--budget", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = json.loads((tmp_path / "report.json").read_text())["statuses"]
    assert statuses["environment"].startswith("done")
    assert all(statuses[part].startswith("skipped") for part in ("network", "trainer", "nnunet_run", "pretraining"))
    assert "not measured" in (tmp_path / "report.md").read_text()
