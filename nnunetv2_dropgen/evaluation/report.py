"""The result table: Dice per test set per model (mean and spread over cases), per label and foreground mean,
and each model's difference to a baseline model; as Markdown (printed), CSV and JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nnunetv2_dropgen.evaluation.metrics import FOREGROUND, SPREAD, DiceStats

MEAN_ROW = "mean over test sets"
HELD_OUT_MEAN_ROW = "mean over held-out test sets"
IN_DOMAIN_MARK = " (in-domain)"
CSV_COLUMNS = (
    "test_set",
    "model",
    "label",
    "dice_mean",
    "dice_std",
    "num_cases",
    "difference_to_baseline",
    "num_cases_without_dice",
)
STATISTICS = (
    f"mean ± {SPREAD} over the cases with a Dice (num_cases; nnU-Net gives none for a label in neither reference "
    "nor prediction: num_cases_without_dice); foreground mean: per case, the mean over its labels with a Dice"
)
"""What the numbers are, in the JSON."""


@dataclass(frozen=True)
class EvaluationTable:
    """Dice of every (test set, model), keyed by label name and FOREGROUND.

    `in_domain` names test sets from the training domain (site, scanner): the summary row averages the
    others, the held-out ones, which is what domain generalization is about.
    """

    models: tuple[str, ...]
    baseline: str
    test_sets: tuple[str, ...]
    labels: tuple[str, ...]
    dice: Mapping[str, Mapping[str, Mapping[str, DiceStats]]]
    in_domain: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.baseline not in self.models:
            raise ValueError(f"The baseline {self.baseline!r} is not one of the models ({', '.join(self.models)}).")

    def mean(self, test_set: str, model: str, label: str = FOREGROUND) -> float:
        return self.dice[test_set][model][label].mean

    def difference(self, test_set: str, model: str, label: str = FOREGROUND) -> float:
        """Mean Dice of `model` minus that of the baseline (0 for the baseline itself)."""
        return self.mean(test_set, model, label) - self.mean(test_set, self.baseline, label)

    @property
    def held_out(self) -> tuple[str, ...]:
        return tuple(t for t in self.test_sets if t not in self.in_domain)

    @property
    def mean_row(self) -> str:
        return HELD_OUT_MEAN_ROW if self.in_domain else MEAN_ROW

    def summary_mean(self, model: str) -> float:
        """Foreground-mean Dice of `model` averaged over the held-out test sets (all, if none is in-domain)."""
        values = [self.mean(t, model) for t in self.held_out]
        return float(np.mean(values)) if values else math.nan


def _number(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _cell(stats: DiceStats) -> str:
    """mean ± std, and how many cases have a Dice when some have none (`n=3`)."""
    cell = _number(stats.mean) if math.isnan(stats.std) else f"{_number(stats.mean)} ± {stats.std:.3f}"
    return f"{cell} (n={stats.num_cases})" if stats.num_without_dice else cell


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """A Markdown table: the first `left` columns left-aligned, numbers right-aligned, cells padded to line up."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + (":" if i >= left else "-") for i, w in enumerate(widths)) + " |"
    return [line(header), rule, *(line(row) for row in rows)]


def _model_columns(table: EvaluationTable) -> tuple[list[str], list[str]]:
    names = [f"{m} (baseline)" if m == table.baseline else m for m in table.models]
    others = [m for m in table.models if m != table.baseline]
    return names, [f"Δ {m}" for m in others]


def _row_name(table: EvaluationTable, test_set: str) -> str:
    return test_set + (IN_DOMAIN_MARK if test_set in table.in_domain else "")


def to_markdown(table: EvaluationTable) -> str:
    """Two tables: foreground-mean Dice per test set (with a summary row), then Dice per label."""
    names, differences = _model_columns(table)
    others = [m for m in table.models if m != table.baseline]
    rows = []
    for test_set in table.test_sets:
        cases = table.dice[test_set][table.models[0]][FOREGROUND].total_cases
        rows.append(
            [
                _row_name(table, test_set),
                str(cases),
                *(_cell(table.dice[test_set][m][FOREGROUND]) for m in table.models),
                *(_number(table.difference(test_set, m), signed=True) for m in others),
            ]
        )
    means = {m: table.summary_mean(m) for m in table.models}
    rows.append(
        [
            table.mean_row,
            "",
            *(_number(means[m]) for m in table.models),
            *(_number(means[m] - means[table.baseline], signed=True) for m in others),
        ]
    )
    lines = [
        f"Dice, foreground mean over labels (mean ± {SPREAD} over the cases with a Dice; (n=...): their number "
        f"where some case has none); Δ: difference to the baseline {table.baseline}",
        "",
        *_markdown(["test set", "cases", *names, *differences], rows, left=1),
        "",
        f"Dice per label (mean ± {SPREAD} over the cases with a Dice; Δ: difference to the baseline)",
        "",
    ]
    label_rows = [
        [
            _row_name(table, test_set),
            label,
            *(_cell(table.dice[test_set][m][label]) for m in table.models),
            *(_number(table.difference(test_set, m, label), signed=True) for m in others),
        ]
        for test_set in table.test_sets
        for label in table.labels
    ]
    lines += _markdown(["test set", "label", *names, *differences], label_rows, left=2)
    return "\n".join(lines)


def to_csv(table: EvaluationTable) -> str:
    """One row per (test set, model, label or foreground mean), then the summary mean per model."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for test_set in table.test_sets:
        for model in table.models:
            for label in (*table.labels, FOREGROUND):
                stats = table.dice[test_set][model][label]
                writer.writerow(
                    [
                        test_set,
                        model,
                        label,
                        _csv_number(stats.mean),
                        _csv_number(stats.std),
                        stats.num_cases,
                        _csv_number(table.difference(test_set, model, label)),
                        stats.num_without_dice,
                    ]
                )
    for model in table.models:
        mean = table.summary_mean(model)
        difference = mean - table.summary_mean(table.baseline)
        writer.writerow([table.mean_row, model, FOREGROUND, _csv_number(mean), "", "", _csv_number(difference), ""])
    return buffer.getvalue()


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def to_dict(table: EvaluationTable) -> dict:
    """The table as plain data for JSON: dice[test set][model] -> foreground and per-label statistics."""

    def entry(test_set: str, model: str, label: str) -> dict:
        stats = table.dice[test_set][model][label]
        return {
            "mean": stats.mean,
            "std": stats.std,
            "num_cases": stats.num_cases,
            "num_cases_without_dice": stats.num_without_dice,
            "difference_to_baseline": table.difference(test_set, model, label),
        }

    return {
        "baseline": table.baseline,
        "models": list(table.models),
        "test_sets": list(table.test_sets),
        "in_domain": list(table.in_domain),
        "labels": list(table.labels),
        "statistics": STATISTICS,
        "dice": {
            test_set: {
                model: {
                    "foreground_mean": entry(test_set, model, FOREGROUND),
                    "labels": {label: entry(test_set, model, label) for label in table.labels},
                }
                for model in table.models
            }
            for test_set in table.test_sets
        },
        "summary": {
            "row": table.mean_row,
            "test_sets": list(table.held_out),
            "foreground_mean": {m: table.summary_mean(m) for m in table.models},
        },
    }
