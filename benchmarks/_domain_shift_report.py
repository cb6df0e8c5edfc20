"""What bench_domain_shift.py reports: Dice tables, DropGen minus ERM and DA5 with intervals, convergence, curves,
verdict.

Kept apart from the running of trainings so that each part stays readable; everything here works on plain
numbers collected from nnU-Net's own files (checkpoint logging, evaluate's summary.json per prediction folder).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

CONVERGED_CHANGE = 0.02
"""An arm counts as converged when its EMA pseudo Dice moved by less than this over the last fifth of training."""
TARGETS = {"ERM": 0.20, "DA5": 0.05}
"""DropGen's mean target-domain Dice must beat these arms by these margins."""
SOURCE_TOLERANCE = 0.02
"""...with its source-domain Dice within this distance of ERM's."""
TARGET_MEAN = "mean over targets"
"""The row of a difference table that pairs each test case's Dice averaged over the target domains."""
FEATURES_ONLY_TARGETS = {"source": 0.70, "inverted": 0.60, "remapped": 0.60}
"""featuresOnly (features alone) must segment these domains at least this well: features that cannot segment
cannot carry DropGen."""


def training_curve(checkpoint: Path) -> dict[str, list[float]]:
    """nnU-Net's per-epoch logging from a final checkpoint: EMA and raw pseudo Dice, train loss."""
    logging = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    return {key: [float(v) for v in logging[key]] for key in ("ema_fg_dice", "mean_fg_dice", "train_losses")}


def training_seconds(logging: Mapping) -> float:
    """Time spent in epochs (s), from nnU-Net's per-epoch timestamps: start-up and any gap between a stopped
    run and its continuation (--c) excluded."""
    epochs = zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"], strict=True)
    return float(sum(end - start for start, end in epochs))


def last_fifth_change(ema: Sequence[float]) -> float:
    """How far the EMA pseudo Dice moved over the last fifth of the epochs (max minus min there)."""
    tail = ema[-max(2, len(ema) // 5) :]
    return float(max(tail) - min(tail))


def per_case_dice(summary_file: Path) -> dict[str, float]:
    """case id -> foreground-mean Dice from evaluate's summary.json (nnU-Net's own per-case metrics)."""
    summary = json.loads(summary_file.read_text())
    result = {}
    for entry in summary["metric_per_case"]:
        values = [m["Dice"] for m in entry["metrics"].values() if not math.isnan(m["Dice"])]
        result[Path(entry["reference_file"]).name] = float(np.mean(values)) if values else math.nan
    return result


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval of paired differences (one per seed and test case)."""
    values = np.asarray([d for d in differences if not math.isnan(d)], dtype=float)
    if values.size < 2:
        mean = float(values.mean()) if values.size else math.nan
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def cell(values: Sequence[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{np.mean(finite):.3f} ± {np.std(finite):.3f}"


def dice_table(
    results: Mapping, arms: Sequence[str], domains: Sequence[str], source: str, extra: Sequence[str] = ()
) -> list[str]:
    """Markdown rows: Dice per domain per arm (mean ± std over seeds), mean over targets, train time."""
    header = " | ".join(f"{d} (training domain)" if d == source else d for d in domains)
    lines = [
        f"| arm | trainer | {header} | mean over targets | train time (s) |",
        "| --- | --- | " + " | ".join("---:" for _ in domains) + " | ---: | ---: |",
    ]
    for arm in arms:
        seconds = [s for s in results["train_s"][arm] if not math.isnan(s)]
        time_cell = f"{np.mean(seconds):.0f}" if seconds else "n/a"
        per_domain = " | ".join(cell(results["dice"][arm][d]) for d in domains)
        target_mean = cell(results["target_mean"][arm])
        lines.append(f"| {arm} | `{results['trainers'][arm]}` | {per_domain} | {target_mean} | {time_cell} |")
    return lines + list(extra)


def difference_table(results: Mapping, domains: Sequence[str], arm: str, baseline: str) -> list[str]:
    """DropGen minus a baseline per domain (and `TARGET_MEAN`), paired per seed and test case, 95 % t-interval."""
    if arm not in results["dice"] or baseline not in results["dice"]:
        missing = arm if arm not in results["dice"] else baseline
        return [f"Not measured: {missing} was not among this run's arms (--arms)."]
    lines = [
        f"| domain | {arm} minus {baseline} | 95 % interval | pairs (seed x case) |",
        "| --- | ---: | --- | ---: |",
    ]
    for domain in domains:
        differences = results["paired"].get(f"{arm}|{baseline}|{domain}", [])
        mean, low, high = paired_interval(differences)
        interval = "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"
        lines.append(f"| {domain} | {mean:+.3f} | {interval} | {len(differences)} |")
    return lines


def convergence_table(results: Mapping, arms: Sequence[str]) -> list[str]:
    """Per arm: how much the EMA pseudo Dice moved over the last fifth of training (mean over seeds)."""
    lines = [
        f"| arm | final EMA pseudo Dice | change over the last fifth | flat (< {CONVERGED_CHANGE}) |",
        "| --- | ---: | ---: | --- |",
    ]
    for arm in arms:
        curves = results["curves"].get(arm, [])
        if not curves:
            lines.append(f"| {arm} | n/a | n/a | n/a |")
            continue
        final = np.mean([c["ema_fg_dice"][-1] for c in curves])
        change = np.mean([last_fifth_change(c["ema_fg_dice"]) for c in curves])
        lines.append(f"| {arm} | {final:.3f} | {change:.3f} | {'yes' if change < CONVERGED_CHANGE else 'NO'} |")
    return lines


def verdict(results: Mapping, source: str) -> list[str]:
    """The targets against what was measured."""
    lines = []
    if "DropGen" not in results["dice"]:
        return ["- DropGen was not among this run's arms (--arms): no verdict"]
    dropgen = np.nanmean(results["target_mean"]["DropGen"])
    for arm, margin in TARGETS.items():
        if arm not in results["target_mean"]:
            lines.append(f"- DropGen vs {arm} + {margin:.2f}: not measured ({arm} was not among this run's arms)")
            continue
        other = np.nanmean(results["target_mean"][arm])
        met = "met" if dropgen >= other + margin else "MISSED"
        lines.append(f"- DropGen mean over targets {dropgen:.3f} vs {arm} {other:.3f} + {margin:.2f}: {met}")
    gap = np.nanmean(results["dice"]["DropGen"][source]) - np.nanmean(results["dice"]["ERM"][source])
    lines.append(
        f"- DropGen source Dice minus ERM's: {gap:+.3f} (at least -{SOURCE_TOLERANCE}): "
        + ("met" if gap >= -SOURCE_TOLERANCE else "MISSED")
    )
    if "featuresOnly" in results["dice"]:
        for domain, target in FEATURES_ONLY_TARGETS.items():
            if domain in results["dice"]["featuresOnly"]:
                value = np.nanmean(results["dice"]["featuresOnly"][domain])
                met = "met" if value >= target else "MISSED"
                lines.append(f"- featuresOnly on {domain}: {value:.3f} (at least {target:.2f}): {met}")
    return lines


def save_curves(results: Mapping, arms: Sequence[str], path: Path, iterations_per_epoch: int) -> Path:
    """One panel: each arm's EMA pseudo Dice over training iterations (mean over seeds, band = min to max)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for arm in arms:
        curves = [c["ema_fg_dice"] for c in results["curves"].get(arm, [])]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        stacked = np.asarray([c[:length] for c in curves])
        x = (np.arange(length) + 1) * iterations_per_epoch
        (line,) = axes.plot(x, stacked.mean(axis=0), label=arm)
        if len(curves) > 1:
            axes.fill_between(x, stacked.min(axis=0), stacked.max(axis=0), color=line.get_color(), alpha=0.15)
    axes.set_xlabel("training iterations")
    axes.set_ylabel("nnU-Net EMA pseudo Dice (training domain)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path
