"""The domain-shift benchmark's report: intervals that hold training variation, per-seed flatness, the target mean
without domains that normalization undoes. The verdict in benchmarks/RESULTS.md rests on these tables."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "_domain_shift_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("_domain_shift_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(lines: list[str], first_cell: str) -> list[str]:
    (row,) = [line for line in lines if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_the_interval_over_seeds_holds_what_the_cases_of_one_model_share(report) -> None:
    """Two seeds whose models differ (+0.3 and +0.02 on every case): the pairs' interval excludes 0, as if 7
    independent models had been measured; two seeds' means cannot establish that, and their interval says so."""
    results = {
        "dice": {"DropGen": {}, "ERM": {}},
        "paired": {"DropGen|ERM|inverted": [0.31, 0.29, 0.3, 0.3, 0.01, 0.03, 0.02, math.nan]},
        "paired_seeds": {"DropGen|ERM|inverted": [0.3, 0.02]},
    }
    cells = _row(report.difference_table(results, ["inverted"], "DropGen", "ERM"), "inverted")
    _, mean, pairs_interval, pairs, seeds_interval, seeds = cells
    low, high = (float(v) for v in pairs_interval.strip("[]").split(","))
    seeds_low, seeds_high = (float(v) for v in seeds_interval.strip("[]").split(","))
    assert pairs == "7" and seeds == "2"  # the NaN pair is not counted
    assert 0 < low < high and seeds_low < 0 < seeds_high
    assert mean == f"{(1.2 + 0.06) / 7:+.3f}"


def test_an_arm_is_flat_only_when_every_seed_is(report) -> None:
    flat = [0.9] * 16
    rising = [0.9] * 15 + [0.935]  # 0.035 over the last fifth: the three seeds' mean change (0.012) is below 0.02
    results = {"curves": {"DropGen": [{"ema_fg_dice": [0.5] * 64 + curve} for curve in (flat, flat, rising)]}}
    cells = _row(report.convergence_table(results, ["DropGen"]), "DropGen")
    assert cells[2] == "0.000, 0.000, 0.035" and cells[3] == "NO"


def test_the_target_mean_without_domains_that_normalization_undoes(report) -> None:
    """`scaled` is the source after z-scoring: the table gives the mean over targets with it (issue 14's) and
    without it, per seed, and the verdict judges both."""
    domains = ["source", "inverted", "scaled"]
    results = {
        "trainers": {"ERM": "nnUNetTrainer", "DA5": "nnUNetTrainerDA5", "DropGen": "DropGenTrainer"},
        "train_s": {"ERM": [1.0], "DA5": [1.0], "DropGen": [1.0]},
        "dice": {
            "ERM": {"source": [0.98], "inverted": [0.0], "scaled": [0.98]},
            "DA5": {"source": [0.98], "inverted": [0.1], "scaled": [0.98]},
            "DropGen": {"source": [0.9], "inverted": [0.4], "scaled": [0.9]},
        },
        "target_mean": {"ERM": [0.49], "DA5": [0.54], "DropGen": [0.65]},
    }
    lines = report.dice_table(results, list(results["dice"]), domains, "source")
    assert report.SHIFTED_MEAN in lines[0] and _row(lines, "DropGen")[-2] == "0.400"
    verdict = report.verdict(results, "source")
    assert f"  - {report.SHIFTED_MEAN}: 0.400 vs 0.000 + 0.20: met" in verdict
    assert f"  - {report.SHIFTED_MEAN}: 0.400 vs 0.100 + 0.05: met" in verdict
    assert "- DropGen mean over targets 0.650 vs ERM 0.490 + 0.20: MISSED" in verdict
