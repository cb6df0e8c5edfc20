"""The demo's figure: per test domain one row of slices (image, features, ground truth, predictions), then Dice bars.

Rows share a slice index, and test cases are paired across domains, so each row shows the same anatomy
under a different acquisition: what changes between rows is the domain alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from nnunetv2_dropgen.demo.report import TARGET_MEAN_ROW, target_mean

DPI = 100
PANEL_INCHES = 1.6
BAR_CHART_INCHES = 3.0
TITLE_INCHES = 1.0  # two title lines and the column headings
BOTTOM_INCHES = 0.5  # bar labels (two lines for the training domain)
_LABEL_COLORS = ["black", "tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan"]


@dataclass(frozen=True)
class DomainRow:
    """One domain's 2D slices: image, a few feature channels, ground truth and each trainer's prediction."""

    domain: str
    image: np.ndarray
    features: Sequence[np.ndarray]
    ground_truth: np.ndarray
    predictions: Sequence[np.ndarray]


def figure_inches(num_rows: int, num_columns: int) -> tuple[float, float]:
    """(width, height) of the figure; saved without trimming, so pixels = inches * DPI."""
    return num_columns * PANEL_INCHES, TITLE_INCHES + num_rows * PANEL_INCHES + BAR_CHART_INCHES + BOTTOM_INCHES


def best_slice(ground_truth: np.ndarray) -> int:
    """Index along the first axis of the slice with the most foreground: the most to look at."""
    return int(np.argmax((ground_truth > 0).reshape(ground_truth.shape[0], -1).sum(axis=1)))


def save_figure(
    path: Path,
    rows: Sequence[DomainRow],
    dice: Mapping[str, Mapping[str, float]],
    trainers: Sequence[str],
    headers: Sequence[str],
    source: str,
    num_labels: int,
    title: str,
) -> Path:
    """Draw the slice grid and the Dice bar chart and write a PNG to `path`."""
    num_features = len(rows[0].features)
    columns = ["image", *(f"feature {i + 1}" for i in range(num_features)), "ground truth", *headers]
    width, height = figure_inches(len(rows), len(columns))
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg directly, not pyplot: no global backend switch, no open-figure registry
    grid = fig.add_gridspec(
        len(rows) + 1,
        len(columns),
        height_ratios=[PANEL_INCHES] * len(rows) + [BAR_CHART_INCHES],
        top=1 - TITLE_INCHES / height,
        bottom=BOTTOM_INCHES / height,
        left=0.06,
        right=0.99,
        hspace=0.25,
        wspace=0.05,
    )
    labels_cmap = ListedColormap(_LABEL_COLORS[: num_labels + 1])
    for r, row in enumerate(rows):
        panels = [
            (row.image, "gray", None),
            *((feature, "magma", None) for feature in row.features),
            (row.ground_truth, labels_cmap, num_labels),
            *((prediction, labels_cmap, num_labels) for prediction in row.predictions),
        ]
        for c, (array, cmap, vmax) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(array, cmap=cmap, vmin=0 if vmax else None, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row.domain, fontsize=9)

    bars = fig.add_subplot(grid[len(rows), :])
    groups = [*dice, TARGET_MEAN_ROW]
    x = np.arange(len(groups))
    width = 0.8 / len(trainers)
    for i, (trainer, header) in enumerate(zip(trainers, headers, strict=True)):
        values = [dice[d][trainer] for d in dice] + [target_mean(dice, trainer, source)]
        bars.bar(x + (i - (len(trainers) - 1) / 2) * width, values, width, label=header)
    bars.set_xticks(x, [f"{g}\n(training)" if g == source else g for g in groups], fontsize=8)
    bars.set_ylim(0, 1)
    bars.set_ylabel("Dice")
    bars.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
