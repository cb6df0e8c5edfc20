"""The demo's result table: Dice per test domain (rows) per trainer (columns), plus the mean over targets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TARGET_MEAN_ROW = "mean (targets)"


def target_mean(dice: Mapping[str, Mapping[str, float]], trainer: str, source: str) -> float:
    """Mean Dice of `trainer` over the held-out domains (every domain but `source`); nan if there are none."""
    values = [scores[trainer] for domain, scores in dice.items() if domain != source]
    return sum(values) / len(values) if values else math.nan


def format_table(
    dice: Mapping[str, Mapping[str, float]],
    trainers: Sequence[str],
    headers: Sequence[str],
    source: str,
) -> str:
    """A fixed-width text table; `dice[domain][trainer]` is nnU-Net's foreground-mean Dice of that test set."""
    first = max(len(TARGET_MEAN_ROW), *(len(f"{d} (training domain)") for d in dice))
    width = max(8, *(len(h) for h in headers))
    rule = "-" * (first + (width + 2) * len(headers))

    def row(label: str, values: Sequence[float]) -> str:
        cells = "".join(f"  {_number(v):>{width}}" for v in values)
        return f"{label:<{first}}{cells}"

    lines = [f"{'Dice':<{first}}" + "".join(f"  {h:>{width}}" for h in headers), rule]
    for domain, scores in dice.items():
        label = f"{domain} (training domain)" if domain == source else domain
        lines.append(row(label, [scores[t] for t in trainers]))
    lines.append(rule)
    lines.append(row(TARGET_MEAN_ROW, [target_mean(dice, t, source) for t in trainers]))
    return "\n".join(lines)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
