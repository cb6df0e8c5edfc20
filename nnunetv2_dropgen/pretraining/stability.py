"""Domain stability of an extractor's features: what decides whether an extractor is worth using in DropGen.

On held-out label maps rendered in several random appearances, with the features normalised as DropGen
feeds them to the segmentation network (the spec's normalization of the final output):
(a) the mean cosine similarity of a voxel's features across two appearances, against the mean cosine
    between voxels of different labels (the gap between them: large for appearance-invariant features
    that still tell structures apart);
(b) a linear probe (a 1x1x1 convolution) fitted on one rendering of a map and scored with the mean
    foreground Dice on the other renderings (what a segmentation head trained on one domain keeps on
    another).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_dropgen.pretraining.composition import CompositionSettings, compose_label_maps
from nnunetv2_dropgen.pretraining.loss import balanced_voxel_sample
from nnunetv2_dropgen.pretraining.pool import StructurePool
from nnunetv2_dropgen.pretraining.views import AppearanceSettings, render_views

EVALUATION_STREAM = 1_000_003
"""Mixed into the seed of the held-out maps, so they never come from the training stream."""


@dataclass(frozen=True)
class StabilitySettings:
    """Size of the held-out set and of the linear probe's fit.

    structures: structures per held-out map; labels covering less than min_label_fraction of a map become
    background, so that Dice is not an average dominated by slivers a few voxels large.
    patch_size: side of the held-out maps (voxels); 32 as the synthetic benchmark's images. The maps hold a
    few whole structures on background, as the benchmark's label maps do, not pretraining's crowded tiling.
    """

    maps: int = 8
    appearances: int = 3
    structures: tuple[int, int] = (3, 6)
    min_label_fraction: float = 0.01
    patch_size: int = 32
    samples: int = 512
    probe_samples: int = 4096
    probe_steps: int = 100
    probe_lr: float = 0.1


def _without_slivers(labels: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Labels 0..K-1 of one map, those covering less than `min_fraction` of it merged into background."""
    values, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    kept = (counts >= min_fraction * labels.numel()) & (values > 0)
    new_ids = torch.where(kept, torch.cumsum(kept.long(), 0), torch.zeros_like(counts))
    return new_ids[inverse]


@dataclass(frozen=True)
class StabilityBenchmark:
    """Held-out label maps (contiguous labels per map) and their renderings, fixed once built.

    labels: (E, 1, *spatial) int64; images: (A, E, 1, *spatial) in [0, 1]; samples: (E, n) voxel indices.
    """

    labels: torch.Tensor
    images: torch.Tensor
    samples: torch.Tensor
    settings: StabilitySettings
    description: str = ""

    @staticmethod
    def build(
        pool: StructurePool,
        seed: int,
        settings: StabilitySettings = StabilitySettings(),
        appearance: AppearanceSettings = AppearanceSettings(),
    ) -> StabilityBenchmark:
        """Compose and render the held-out set from `pool` with a seed stream of its own."""
        if settings.maps < 1 or settings.appearances < 2:
            raise ValueError("the stability metric needs at least 1 held-out map and 2 appearances of it.")
        generator = torch.Generator(device=pool.masks.device)
        generator.manual_seed(int(np.random.SeedSequence([seed, EVALUATION_STREAM]).generate_state(1)[0]))
        composition = CompositionSettings(
            structures=settings.structures, wrap=False, median_filter=False, foreground_probability=0.0
        )
        patch = (settings.patch_size,) * 3
        composed = compose_label_maps(pool, settings.maps, patch, generator, composition)
        labels = torch.stack([_without_slivers(m, settings.min_label_fraction) for m in composed])
        images = render_views(labels, generator, appearance, views=settings.appearances)
        samples = balanced_voxel_sample(labels.flatten(1), settings.samples, generator)
        description = (
            f"{settings.maps} held-out maps of {list(patch)} voxels, {settings.structures[0]}-{settings.structures[1]}"
            f" structures each from {'; '.join(pool.sources)}, in {settings.appearances} appearances"
        )
        return StabilityBenchmark(labels, images, samples, settings, description)


@dataclass(frozen=True)
class StabilityMetrics:
    """same_voxel_cosine - different_label_cosine is the gap; probe Dice on the fitted and on other renderings."""

    same_voxel_cosine: float
    different_label_cosine: float
    probe_dice_fitted: float
    probe_dice_other: float

    @property
    def gap(self) -> float:
        return self.same_voxel_cosine - self.different_label_cosine

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "gap": self.gap}

    def describe(self) -> str:
        return (
            f"cosine same voxel across appearances {self.same_voxel_cosine:.3f}, different labels "
            f"{self.different_label_cosine:.3f}, gap {self.gap:.3f}; linear probe Dice on other appearances "
            f"{self.probe_dice_other:.3f} (on the fitted one {self.probe_dice_fitted:.3f})"
        )


def _fit_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, settings: StabilitySettings) -> nn.Linear:
    """Class-balanced logistic regression of (N, F) features onto (N,) labels, from zero weights (deterministic)."""
    probe = nn.Linear(features.shape[1], classes).to(features.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    counts = torch.bincount(labels, minlength=classes).float()
    weights = torch.where(counts > 0, counts.sum() / counts.clamp_min(1) / classes, torch.zeros_like(counts))
    optimizer = torch.optim.Adam(probe.parameters(), lr=settings.probe_lr)
    with torch.enable_grad():
        for _ in range(settings.probe_steps):
            optimizer.zero_grad()
            F.cross_entropy(probe(features), labels, weight=weights).backward()
            optimizer.step()
    return probe


def _foreground_dice(prediction: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    """Mean Dice over the foreground labels present in `truth`."""
    scores = []
    for label in range(1, classes):
        target = truth == label
        if bool(target.any()):
            predicted = prediction == label
            scores.append(2 * float((predicted & target).sum()) / float(predicted.sum() + target.sum()))
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def measure_stability(
    extractor: nn.Module,
    benchmark: StabilityBenchmark,
    preprocessing: Callable[[torch.Tensor], torch.Tensor],
    normalization: Callable[[torch.Tensor], torch.Tensor],
) -> StabilityMetrics:
    """The stability metrics of `extractor` (put in eval mode, restored afterwards) on the benchmark."""
    was_training = extractor.training
    extractor.eval()
    device = next(extractor.parameters()).device
    same, different, fitted, other = [], [], [], []
    generator = torch.Generator(device=device).manual_seed(0)
    try:
        for index in range(benchmark.labels.shape[0]):
            labels = benchmark.labels[index].flatten().to(device)
            classes = int(labels.max()) + 1
            images = benchmark.images[:, index].to(device)
            with torch.autocast(device.type, enabled=False):
                features = normalization(extractor(preprocessing(images.float())).float()).flatten(2)  # (A, F, S)
            chosen = benchmark.samples[index].to(device)
            vectors = F.normalize(features[:, :, chosen].transpose(1, 2), dim=-1)  # (A, n, F)
            for a in range(len(vectors)):
                for b in range(a + 1, len(vectors)):
                    same.append(float((vectors[a] * vectors[b]).sum(-1).mean()))
            unlike = labels[chosen][:, None] != labels[chosen][None, :]
            for view in vectors:
                different.append(float((view @ view.T)[unlike].mean()) if bool(unlike.any()) else float("nan"))
            fit_voxels = balanced_voxel_sample(
                labels[None], min(benchmark.settings.probe_samples, labels.numel()), generator
            )[0]
            probe = _fit_probe(features[0][:, fit_voxels].T, labels[fit_voxels], classes, benchmark.settings)
            for view, view_features in enumerate(features):
                dice = _foreground_dice(probe(view_features.T).argmax(dim=1), labels, classes)
                (fitted if view == 0 else other).append(dice)
    finally:
        extractor.train(was_training)
    return StabilityMetrics(
        float(np.nanmean(same)), float(np.nanmean(different)), float(np.nanmean(fitted)), float(np.nanmean(other))
    )
