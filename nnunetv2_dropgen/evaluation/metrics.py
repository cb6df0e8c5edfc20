"""Score a folder of predictions with nnU-Net's own evaluation, and summarize its Dice per label and overall.

The labels (or regions) and the ignore label come from nnU-Net's LabelManager for the model's plans and
dataset.json, exactly as nnU-Net's validation scores them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.configuration import default_num_processes
from nnunetv2.evaluation.evaluate_predictions import (
    compute_metrics,
    compute_metrics_on_folder,
    load_summary_json,
    save_summary_json,
)
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.utilities.json_export import recursive_fix_for_json_export
from nnunetv2.utilities.label_handling.label_handling import LabelManager

SUMMARY_FILE = "summary.json"
FOREGROUND = "foreground mean"
"""Name in tables of the foreground mean: per case, the mean Dice over the labels that case has a Dice for."""
STD_DDOF = 0
SPREAD = "population std (ddof 0)"
"""The spread in tables and figures: numpy's default np.std, as the benchmark reports label it."""

IN_PROCESS_MAX_CASES = 8
"""Folders with at most this many cases are scored in this process. nnU-Net's compute_metrics_on_folder always
starts a pool of spawned workers, each importing torch and nnU-Net (seconds per folder), which costs more than
scoring a few cases; larger folders still use it, in parallel."""

LabelOrRegion = int | tuple[int, ...]


@dataclass(frozen=True)
class DiceStats:
    """Dice of one label (or FOREGROUND) over the cases of a test set: mean and SPREAD of the same per-case values.

    num_cases counts the cases with a Dice; num_without_dice those nnU-Net gives none (NaN: the label is in
    neither reference nor prediction, outside the ignore label), which are left out of mean and spread.
    """

    mean: float
    std: float
    num_cases: int
    num_without_dice: int = 0

    @property
    def total_cases(self) -> int:
        return self.num_cases + self.num_without_dice


def scored_labels(label_manager: LabelManager) -> list[LabelOrRegion]:
    """What nnU-Net's validation scores: foreground regions for region-based training, else foreground labels."""
    if label_manager.has_regions:
        return [
            tuple(int(v) for v in r) if isinstance(r, list | tuple) else int(r)
            for r in label_manager.foreground_regions
        ]
    return [int(label) for label in label_manager.foreground_labels]


def label_names(dataset_json: Mapping, label_manager: LabelManager) -> dict[LabelOrRegion, str]:
    """dataset.json's name of each scored label or region, e.g. {1: 'liver'} or {(1, 2): 'whole tumor'}."""
    by_value: dict[LabelOrRegion, str] = {}
    for name, value in dataset_json["labels"].items():
        key = tuple(value) if isinstance(value, list | tuple) else int(value)
        if isinstance(key, tuple) and len(key) == 1 and not label_manager.has_regions:
            key = key[0]
        by_value.setdefault(key, name)
    return {key: by_value.get(key, str(key)) for key in scored_labels(label_manager)}


def score_folder(
    reference: Path, predictions: Path, file_ending: str, reader: BaseReaderWriter, label_manager: LabelManager
) -> dict:
    """nnU-Net's metrics of one prediction folder, summarized as nnU-Net's compute_metrics_on_folder does (its
    summary.json is written there too); few cases in this process (IN_PROCESS_MAX_CASES), more by nnU-Net's pool."""
    cases = sorted(p.name for p in predictions.iterdir() if p.name.endswith(file_ending))
    labels = scored_labels(label_manager)
    summary_file = predictions / SUMMARY_FILE
    if len(cases) > IN_PROCESS_MAX_CASES:
        return compute_metrics_on_folder(
            str(reference),
            str(predictions),
            str(summary_file),
            reader,
            file_ending,
            labels,
            label_manager.ignore_label,
            num_processes=min(default_num_processes, len(cases)),
            chill=False,
        )
    unpredicted = sorted(p.name for p in reference.iterdir() if p.name.endswith(file_ending) and p.name not in cases)
    if unpredicted:  # as compute_metrics_on_folder(chill=False)
        raise FileNotFoundError(f"{predictions} lacks predictions of {', '.join(unpredicted)} (in {reference}).")
    per_case = [
        compute_metrics(str(reference / case), str(predictions / case), reader, labels, label_manager.ignore_label)
        for case in cases
    ]
    metrics = list(per_case[0]["metrics"][labels[0]])
    means = {label: {m: np.nanmean([c["metrics"][label][m] for c in per_case]) for m in metrics} for label in labels}
    foreground = {m: np.mean([means[label][m] for label in labels if label != 0]) for m in metrics}
    for part in (*per_case, means, foreground):
        recursive_fix_for_json_export(part)
    summary = {"metric_per_case": per_case, "mean": means, "foreground_mean": foreground}
    save_summary_json(summary, str(summary_file))
    return summary


def _changed_ns(path: Path) -> int:
    stat = path.stat()
    return max(stat.st_mtime_ns, stat.st_ctime_ns)


def current_summary(
    reference: Path, predictions: Path, cases: Sequence[str], file_ending: str, labels: Sequence[LabelOrRegion]
) -> dict | None:
    """The summary.json of an earlier run if it scored exactly these cases and labels and no file changed since."""
    summary_file = predictions / SUMMARY_FILE
    files = [folder / f"{case}{file_ending}" for case in cases for folder in (reference, predictions)]
    if not summary_file.is_file() or not all(f.is_file() for f in files):
        return None
    if _changed_ns(summary_file) < max(_changed_ns(f) for f in files):
        return None
    try:
        summary = load_summary_json(str(summary_file))
        scored = {Path(entry["prediction_file"]).name for entry in summary["metric_per_case"]}
        keys = [set(entry["metrics"]) for entry in summary["metric_per_case"]]
    except (ValueError, KeyError, TypeError):
        return None
    if scored != {f"{case}{file_ending}" for case in cases} or any(k != set(labels) for k in keys):
        return None
    return summary


def _stats(per_case: list[float]) -> DiceStats:
    """Mean and SPREAD of the per-case values that are not NaN; spread NaN for fewer than two (none to show)."""
    values = np.asarray(per_case, dtype=float)
    finite = values[~np.isnan(values)]
    mean = float(np.mean(finite)) if finite.size else math.nan
    std = float(np.std(finite, ddof=STD_DDOF)) if finite.size > 1 else math.nan
    return DiceStats(mean, std, int(finite.size), int(values.size - finite.size))


def dice_statistics(summary: dict, labels: Mapping[LabelOrRegion, str]) -> dict[str, DiceStats]:
    """Dice per label name and FOREGROUND from nnU-Net's per-case metrics (`metric_per_case` of its summary).

    Mean and spread are of the same per-case values, NaN (no Dice) left out as nnU-Net's means leave it out. Per
    label the mean is nnU-Net's `mean` (its nanmean over cases). FOREGROUND is per case the mean over the labels
    with a Dice in that case, as the benchmark's per-case Dice; its mean over cases equals nnU-Net's
    `foreground_mean` (the mean over labels of each label's mean) when every case has a Dice for every label,
    and differs from it otherwise (nnU-Net's has no per-case values to take a spread of).
    """
    cases = [entry["metrics"] for entry in summary["metric_per_case"]]
    stats = {name: _stats([case[key]["Dice"] for case in cases]) for key, name in labels.items()}
    per_case_foreground = []
    for case in cases:
        values = [case[key]["Dice"] for key in labels if not math.isnan(case[key]["Dice"])]
        per_case_foreground.append(float(np.mean(values)) if values else math.nan)
    stats[FOREGROUND] = _stats(per_case_foreground)
    return stats
