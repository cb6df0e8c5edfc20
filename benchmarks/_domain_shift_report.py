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
NORMALIZED_AWAY = ("scaled",)
"""Target domains that are the source after normalization: `scaled` is an affine intensity change, which nnU-Net's
z-scoring and DropGen's [0, 1] scaling undo exactly (every arm's per-case Dice equals its source Dice there). They
stay in `TARGET_MEAN`, as issue 14's targets were set; `SHIFTED_MEAN` leaves them out."""
SHIFTED_MEAN = "mean over targets without " + ", ".join(NORMALIZED_AWAY)
"""`TARGET_MEAN` over the targets that are not `NORMALIZED_AWAY`: the domains that shift what a network sees."""
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
    """Mean and t-interval (n - 1 degrees of freedom) of paired differences; NaNs are left out."""
    values = np.asarray([d for d in differences if not math.isnan(d)], dtype=float)
    if values.size < 2:
        mean = float(values.mean()) if values.size else math.nan
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def cell(values: Sequence[float]) -> str:
    """Mean ± population standard deviation (ddof 0, as every report so far) over seeds; NaNs left out."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{np.mean(finite):.3f} ± {np.std(finite):.3f}"


def dice_table(
    results: Mapping, arms: Sequence[str], domains: Sequence[str], source: str, extra: Sequence[str] = ()
) -> list[str]:
    """Markdown rows: Dice per domain per arm (mean ± std over seeds), mean over targets (and, where some targets
    are `NORMALIZED_AWAY`, without them), train time."""
    header = " | ".join(f"{d} (training domain)" if d == source else d for d in domains)
    shifted = shifted_targets([d for d in domains if d != source])
    means = [TARGET_MEAN, SHIFTED_MEAN] if shifted else [TARGET_MEAN]
    lines = [
        f"| arm | trainer | {header} | " + " | ".join(means) + " | train time (s) |",
        "| --- | --- | " + " | ".join("---:" for _ in [*domains, *means]) + " | ---: |",
    ]
    for arm in arms:
        seconds = [s for s in results["train_s"][arm] if not math.isnan(s)]
        time_cell = f"{np.mean(seconds):.0f}" if seconds else "n/a"
        per_domain = " | ".join(cell(results["dice"][arm][d]) for d in domains)
        mean_cells = [cell(results["target_mean"][arm])]
        if shifted:
            mean_cells.append(cell(shifted_means(results, arm, shifted)))
        lines.append(
            f"| {arm} | `{results['trainers'][arm]}` | {per_domain} | {' | '.join(mean_cells)} | {time_cell} |"
        )
    return lines + list(extra)


def shifted_targets(targets: Sequence[str]) -> list[str]:
    """The `targets` that are not `NORMALIZED_AWAY`, or [] when none is left out (or none remains): the domains of
    `SHIFTED_MEAN`, which is reported only when it differs from `TARGET_MEAN`."""
    shifted = [d for d in targets if d not in NORMALIZED_AWAY]
    return shifted if 0 < len(shifted) < len(targets) else []


def shifted_means(results: Mapping, arm: str, domains: Sequence[str]) -> list[float]:
    """Per seed, `arm`'s Dice averaged over `domains` (each domain's Dice is already its test cases' mean)."""
    return [float(np.mean(per_seed)) for per_seed in zip(*(results["dice"][arm][d] for d in domains), strict=True)]


def difference_table(results: Mapping, domains: Sequence[str], arm: str, baseline: str) -> list[str]:
    """DropGen minus a baseline per domain (and the target means), paired per seed and test case, with two 95 %
    t-intervals: over the seed x case pairs, which holds test-case variation only (the cases of one seed share one
    trained model), and over the seeds' mean differences, which holds training variation too (n seeds - 1
    degrees of freedom; n/a with one seed, or in reports written before seeds' means were kept)."""
    if arm not in results["dice"] or baseline not in results["dice"]:
        missing = arm if arm not in results["dice"] else baseline
        return [f"Not measured: {missing} was not among this run's arms (--arms)."]
    lines = [
        f"| domain | {arm} minus {baseline} | 95 % interval, seed x case pairs | pairs | 95 % interval over seeds "
        "| seeds |",
        "| --- | ---: | --- | ---: | --- | ---: |",
    ]
    for domain in domains:
        key = f"{arm}|{baseline}|{domain}"
        differences = [d for d in results["paired"].get(key, []) if not math.isnan(d)]
        if not differences:
            continue
        seed_means = [d for d in results.get("paired_seeds", {}).get(key, []) if not math.isnan(d)]
        mean, low, high = paired_interval(differences)
        _, seeds_low, seeds_high = paired_interval(seed_means)
        lines.append(
            f"| {domain} | {mean:+.3f} | {_interval(low, high)} | {len(differences)} | "
            f"{_interval(seeds_low, seeds_high)} | {len(seed_means)} |"
        )
    return lines


def _interval(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def convergence_table(results: Mapping, arms: Sequence[str]) -> list[str]:
    """Per arm and seed: the final EMA pseudo Dice and how much it moved over the last fifth of training (max minus
    min over the last `len // 5` epochs); an arm is flat when every seed is."""
    lines = [
        f"| arm | final EMA pseudo Dice, per seed | change over the last fifth, per seed | flat (every seed < "
        f"{CONVERGED_CHANGE}) |",
        "| --- | --- | --- | --- |",
    ]
    for arm in arms:
        curves = results["curves"].get(arm, [])
        if not curves:
            lines.append(f"| {arm} | n/a | n/a | n/a |")
            continue
        finals = ", ".join(f"{c['ema_fg_dice'][-1]:.3f}" for c in curves)
        changes = [last_fifth_change(c["ema_fg_dice"]) for c in curves]
        flat = "yes" if max(changes) < CONVERGED_CHANGE else "NO"
        lines.append(f"| {arm} | {finals} | {', '.join(f'{c:.3f}' for c in changes)} | {flat} |")
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
        shifted = shifted_targets([d for d in results["dice"][arm] if d != source])
        if shifted:
            ours, theirs = (np.nanmean(shifted_means(results, a, shifted)) for a in ("DropGen", arm))
            met = "met" if ours >= theirs + margin else "MISSED"
            lines.append(f"  - {SHIFTED_MEAN}: {ours:.3f} vs {theirs:.3f} + {margin:.2f}: {met}")
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
