"""The evaluation figure: per test set one row of slices (image, each model's prediction, ground truth), then Dice bars.

Every row shows the slice of its example case with the most foreground. When test sets are paired (the same
cases under different acquisitions, as in the synthetic data), rows show the same anatomy and differ only by
the domain. Drawn with Agg directly (no pyplot): no global backend switch, no open-figure registry.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from nnunetv2_dropgen.evaluation.files import replace_atomic
from nnunetv2_dropgen.evaluation.metrics import FOREGROUND, SPREAD
from nnunetv2_dropgen.evaluation.report import EvaluationTable

DPI = 100
PANEL_INCHES = 1.6
BAR_CHART_INCHES = 3.0
TITLE_INCHES = 1.0  # two title lines and the column headings
BOTTOM_INCHES = 0.5  # bar labels (two lines for in-domain test sets)
LEFT_INCHES = 0.6  # row names, and the bar chart's axis label
TITLE_CHARACTERS = 22  # column titles (model names) wrap at this width
MIN_COLUMNS = 4  # so a figure of one model still has room for the bar chart's legend
_LABEL_COLORS = ["black", "tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:olive"]


@dataclass(frozen=True)
class SliceRow:
    """One test set's example: 2D slices of the image, each model's prediction and the ground truth.

    `extra` panels (title, 2D array) are drawn after the image, e.g. the demo's extractor features.
    """

    test_set: str
    case: str
    index: int
    image: np.ndarray
    predictions: Sequence[np.ndarray]
    ground_truth: np.ndarray
    extra: Sequence[tuple[str, np.ndarray]] = field(default_factory=tuple)


def annotated(ground_truth: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """The reference as drawn: nnU-Net's ignore label (unannotated voxels) as background, so it neither takes the
    colour of a label nor counts as foreground when the slice is picked."""
    return ground_truth if ignore_label is None else np.where(ground_truth == ignore_label, 0, ground_truth)


def best_slice(ground_truth: np.ndarray) -> int:
    """Index along the first axis of the slice with the most foreground: the most to look at."""
    return int(np.argmax((ground_truth > 0).reshape(ground_truth.shape[0], -1).sum(axis=1)))


def figure_inches(num_rows: int, num_columns: int) -> tuple[float, float]:
    """(width, height) of the figure; saved without trimming, so pixels = inches * DPI."""
    width = max(num_columns, MIN_COLUMNS) * PANEL_INCHES
    return width, TITLE_INCHES + num_rows * PANEL_INCHES + BAR_CHART_INCHES + BOTTOM_INCHES


def _label_colormap(max_label: int) -> ListedColormap:
    """Background black, labels 1..max_label in distinct colors (cycling when there are many)."""
    background, *colors = _LABEL_COLORS
    return ListedColormap([background, *(colors[i % len(colors)] for i in range(max_label))])


def save_figure(path: Path, rows: Sequence[SliceRow], table: EvaluationTable, max_label: int, title: str) -> Path:
    """Draw the slice grid and the Dice bar chart (bars: mean, whiskers: SPREAD over cases) and write a PNG.

    A mean that is NaN (no case with a Dice) gets no bar but an 'n/a' mark: a bar of 0 would read as a failure.
    """
    extra_titles = [name for name, _ in rows[0].extra] if rows else []
    columns = ["image", *extra_titles, *table.models, "ground truth"]
    width, height = figure_inches(len(rows), len(columns))
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        len(rows) + 1,
        max(len(columns), MIN_COLUMNS),
        height_ratios=[PANEL_INCHES] * len(rows) + [BAR_CHART_INCHES],
        top=1 - TITLE_INCHES / height,
        bottom=BOTTOM_INCHES / height,
        left=LEFT_INCHES / width,
        right=1 - 0.1 / width,
        hspace=0.25,
        wspace=0.05,
    )
    labels_cmap = _label_colormap(max_label)
    for r, row in enumerate(rows):
        panels = [
            (row.image, "gray", None),
            *((array, "magma", None) for _, array in row.extra),
            *((prediction, labels_cmap, max_label) for prediction in row.predictions),
            (row.ground_truth, labels_cmap, max_label),
        ]
        for c, (array, cmap, vmax) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(array, cmap=cmap, vmin=0 if vmax else None, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(textwrap.fill(columns[c], TITLE_CHARACTERS), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{row.test_set}\n{row.case}, slice {row.index}", fontsize=8)

    bars = fig.add_subplot(grid[len(rows), :])
    groups = [*table.test_sets, table.mean_row]
    x = np.arange(len(groups))
    bar_width = 0.8 / len(table.models)
    for i, model in enumerate(table.models):
        stats = [table.dice[t][model][FOREGROUND] for t in table.test_sets]
        values = np.array([s.mean for s in stats] + [table.summary_mean(model)])
        spread = np.nan_to_num([s.std for s in stats] + [0.0])
        at = x + (i - (len(table.models) - 1) / 2) * bar_width
        drawn = ~np.isnan(values)
        color = f"C{i}"
        bars.bar(at[drawn], values[drawn], bar_width, yerr=spread[drawn], capsize=2, label=model, color=color)
        for position in at[~drawn]:
            bars.text(position, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color=color)
    names = [f"{g}\n(in-domain)" if g in table.in_domain else g for g in groups]
    bars.set_xticks(x, names, fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.set_xlim(-0.5, len(groups) - 0.5)  # room for an 'n/a' mark at either end
    bars.set_ylabel("Dice (foreground mean)")
    bars.legend(fontsize=8, loc="upper right", title=f"whiskers: ± {SPREAD}", title_fontsize=7)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    return replace_atomic(path, lambda temporary: fig.savefig(temporary, dpi=DPI, format=path.suffix.lstrip(".")))
