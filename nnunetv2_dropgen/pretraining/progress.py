"""The pretraining curve: held-out stability over steps, written beside the weights as nnU-Net writes progress.png.

A run is judged by how its held-out stability metrics move (flat, still rising, collapsing), which a log of
numbers hides. Two panels share the step axis: the cosine gap (same voxel across appearances minus different
labels) and the linear probe's Dice on other appearances and on the fitted one; the random-weights reference
of the same architecture is drawn dashed once the run has measured it, and the weights kept as the best are
marked. Drawn with Agg directly (no pyplot), like the evaluation figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nnunetv2_dropgen.weights.files import temporary_beside

PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("cosine gap", (("gap", "gap: same voxel - different labels"),)),
    (
        "linear probe Dice",
        (("probe_dice_other", "probe, other appearances (selects)"), ("probe_dice_fitted", "probe, fitted appearance")),
    ),
)
"""Per panel: its y label and the (history key, legend) pairs it draws."""


def progress_path(out: Path) -> Path:
    """Where a run's curve goes: `model.pth` -> `model.progress.png`."""
    return out.with_name(f"{out.stem}.progress.png")


def progress_figure(
    history: Sequence[Mapping[str, float]],
    best: Mapping[str, float] | None = None,
    random_weights: Mapping[str, float] | None = None,
    title: str = "",
) -> Figure:
    """The curve of `history` (one dict of StabilityMetrics.as_dict() plus "step" per evaluation).

    `best` (a history entry) is marked; `random_weights` (as_dict() of the same architecture, untrained) is
    drawn as dashed horizontal lines. Raises ValueError on an empty history: there is nothing to draw.
    """
    if not history:
        raise ValueError("no held-out evaluation yet: a curve needs at least one (pretrain --evaluate-every)")
    steps = [entry["step"] for entry in history]
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for ax, (ylabel, curves) in zip(axes, PANELS, strict=True):
        for key, legend in curves:
            (line,) = ax.plot(steps, [entry[key] for entry in history], marker="o", markersize=3, label=legend)
            if random_weights is not None:
                ax.axhline(
                    random_weights[key],
                    color=line.get_color(),
                    linestyle="--",
                    linewidth=1,
                    label=f"{legend.split(' (')[0]}, random weights",
                )
            if best is not None:
                ax.plot([best["step"]], [best[key]], marker="*", markersize=12, color=line.get_color(), linestyle="")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("pretraining step" + (f" (star: kept as best, step {best['step']})" if best else ""))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def write_progress(
    path: Path,
    history: Sequence[Mapping[str, float]],
    best: Mapping[str, float] | None = None,
    random_weights: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """Draw `progress_figure` to `path` (PNG) atomically: a reader never sees half a file."""
    figure = progress_figure(history, best, random_weights, title)
    with temporary_beside(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
        os.replace(temporary, path)
    return path
