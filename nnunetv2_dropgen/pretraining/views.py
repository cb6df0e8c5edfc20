"""Render a label map as an image of random appearance: two such views of one map are a contrastive pair.

The appearance model follows anatomix's two stages (REFERENCE_FACTS). Stage 1 draws a mean and spread per
label (sometimes a black background), multiplies smooth multi-scale texture, then adds a bias field,
k-space spikes, gamma, slight smoothing, Gibbs ringing, sharpening and simulated low resolution, and
rescales to [0, 1]. Stage 2, as anatomix applies at training time, normalizes by the 99.99th percentile
and adds blur, strong Gaussian noise, another bias field, gamma and motion. Both views share the label
map, so they share geometry; every appearance parameter is drawn independently per view and per map.
Intensity effects are batched in torch on the label maps' device; the MR artefacts (spikes, Gibbs
ringing, sharpening: MONAI; motion: TorchIO, as anatomix uses them) run per volume, seeded from the same
torch.Generator, so a seed gives the same views.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

from nnunetv2_dropgen.feature_extractors import scale_to_unit_range
from nnunetv2_dropgen.pretraining.composition import uniform


@dataclass(frozen=True)
class AppearanceSettings:
    """Ranges and probabilities of the appearance model (intensities in units of the [0, 1] range).

    Stage 1 (anatomix's view synthesis):
    label_mean / label_std: mean and spread of intensities within a label (anatomix: 25 to 255 and 5 to 20
        on a 0-255 scale).
    background_zero_probability: chance the background label is black (anatomix: 0.25).
    texture_std / texture_strength: multi-scale smooth noise, image *= 1 + strength * noise
        (anatomix: noise std up to 5 per scale, strength 0.02).
    bias_probability / bias_std: smooth multiplicative bias field, exp(std * smooth noise).
    spike_probability: k-space spikes (MONAI RandKSpaceSpikeNoise with its default intensities).
    gamma: range of the gamma exponent (drawn log-uniformly).
    smoothing_sigma: slight Gaussian smoothing, voxels (anatomix: up to 1/3).
    gibbs_probability / gibbs_alpha: Gibbs ringing (MONAI RandGibbsNoise; anatomix: alpha up to 0.33).
    sharpen_probability: Gaussian sharpening (MONAI RandGaussianSharpen with its defaults).
    low_resolution_zoom: range of the per-axis zoom (< 1) used to simulate thicker voxels.
    Stage 2 (anatomix's training-time augmentation, TorchIO's defaults):
    percentile: the view is divided by this percentile and clipped to [0, 1] (anatomix: 99.99).
    blur_sigma: Gaussian blur, voxels; noise_std: additive Gaussian noise; second_bias_*: another bias
        field; second_gamma: gamma range; motion_probability: TorchIO RandomMotion with its defaults.
    """

    label_mean: tuple[float, float] = (25 / 255, 1.0)
    label_std: tuple[float, float] = (5 / 255, 20 / 255)
    background_zero_probability: float = 0.25
    texture_std: float = 5.0
    texture_strength: float = 0.02
    bias_probability: float = 0.98
    bias_std: tuple[float, float] = (0.0, 0.4)
    spike_probability: float = 0.2
    gamma_probability: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)
    smoothing_probability: float = 0.5
    smoothing_sigma: tuple[float, float] = (0.0, 1 / 3)
    gibbs_probability: float = 0.5
    gibbs_alpha: tuple[float, float] = (0.0, 1 / 3)
    sharpen_probability: float = 0.25
    low_resolution_probability: float = 1 / 3
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    second_stage: bool = True
    percentile: float = 99.99
    blur_probability: float = 1 / 3
    blur_sigma: tuple[float, float] = (0.0, 2.0)
    noise_probability: float = 1 / 3
    noise_std: tuple[float, float] = (0.0, 0.25)
    second_bias_probability: float = 0.5
    second_bias_std: tuple[float, float] = (0.0, 0.5)
    second_gamma_probability: float = 0.5
    second_gamma: tuple[float, float] = (math.exp(-0.4), math.exp(0.4))
    motion_probability: float = 1 / 3


def _coin(probability: float, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, 1, 1, 1, 1) float mask of samples for which an augmentation applies."""
    return (torch.rand(batch, generator=generator, device=generator.device) < probability).float().view(-1, 1, 1, 1, 1)


def _sometimes(
    value_range: tuple[float, float], probability: float, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """(batch, 1, 1, 1, 1) strengths drawn uniformly from `value_range` for a `probability` share of samples, else 0."""
    return uniform(*value_range, (batch, 1, 1, 1, 1), generator) * _coin(probability, batch, generator)


def _smooth_noise(batch: int, grid: Sequence[int], spatial: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise on a coarse grid, interpolated to `spatial`: smooth at the grid's scale."""
    coarse = torch.randn((batch, 1, *grid), generator=generator, device=generator.device)
    return F.interpolate(coarse, size=tuple(spatial), mode="trilinear", align_corners=False)


def _texture(
    batch: int, spatial: Sequence[int], generator: torch.Generator, settings: AppearanceSettings
) -> torch.Tensor:
    """Multi-scale smooth noise (anatomix: 4 scales from 1/32 to 1/4 of the volume), each with a random std."""
    texture = torch.zeros((batch, 1, *spatial), device=generator.device)
    for points_at_128 in (32, 16, 8, 4):
        grid = [max(2, math.ceil(n * points_at_128 / 128)) for n in spatial]
        std = uniform(0.0, settings.texture_std, (batch, 1, 1, 1, 1), generator)
        texture += std * _smooth_noise(batch, grid, spatial, generator)
    return texture


def _blur_matrices(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) matrices applying a Gaussian of each sample's sigma along one axis, edges replicated."""
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, device=sigmas.device)
    weights = torch.exp(-0.5 * (offsets[None, :] / sigmas.clamp_min(1e-3)[:, None]).square())
    weights = weights / weights.sum(dim=1, keepdim=True)  # (B, 2r+1)
    sources = (torch.arange(size, device=sigmas.device)[:, None] + offsets[None, :]).clamp(0, size - 1)
    matrices = torch.zeros((len(sigmas), size, size), device=sigmas.device)
    index = sources[None].expand(len(sigmas), -1, -1)
    return matrices.scatter_add_(2, index, weights[:, None, :].expand(-1, size, -1))


def _gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each sample with its own sigma (voxels); a sigma near 0 leaves it unchanged.

    Each axis is one batched matrix product (fast on CPU and GPU alike, unlike per-sample grouped 3D convolutions).
    """
    depth, height, width = images.shape[2:]
    out = images[:, 0]
    out = torch.einsum("bdhw,bvw->bdhv", out, _blur_matrices(sigmas, width))
    out = torch.einsum("bdhw,bvh->bdvw", out, _blur_matrices(sigmas, height))
    out = torch.einsum("bdhw,bvd->bvhw", out, _blur_matrices(sigmas, depth))
    return out[:, None]


def _low_resolution(images: torch.Tensor, generator: torch.Generator, settings: AppearanceSettings) -> torch.Tensor:
    """Some samples: downsample (averaging) by a random zoom per axis and interpolate back (thick voxels)."""
    batch, _, *spatial = images.shape
    chosen = _coin(settings.low_resolution_probability, batch, generator).flatten()
    zooms = uniform(*settings.low_resolution_zoom, (batch, 3), generator)
    out = images.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        coarse = [max(2, round(n * float(z))) for n, z in zip(spatial, zooms[index], strict=True)]
        small = F.interpolate(images[index : index + 1], size=coarse, mode="area")
        out[index : index + 1] = F.interpolate(small, size=tuple(spatial), mode="trilinear", align_corners=False)
    return out


@cache
def _library_transform(name: str, alpha: tuple[float, float] = (0.0, 1.0)) -> Callable[[torch.Tensor], torch.Tensor]:
    """A library transform that always applies (imported on first use: MONAI takes seconds to import)."""
    import monai.transforms
    import torchio

    transforms = {
        "spikes": lambda: monai.transforms.RandKSpaceSpikeNoise(prob=1.0),
        "gibbs": lambda: monai.transforms.RandGibbsNoise(prob=1.0, alpha=alpha),
        "sharpen": lambda: monai.transforms.RandGaussianSharpen(prob=1.0),
        "motion": lambda: torchio.RandomMotion(p=1.0),
    }
    return transforms[name]()


def _apply_artefact(
    images: torch.Tensor, transform: Callable, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Apply `transform` to a `probability` share of the (B, 1, *spatial) volumes, each seeded from `generator`.

    The coin and each volume's seed come from `generator`, so a seed gives the same result.
    """
    chosen = torch.rand(images.shape[0], generator=generator, device=generator.device) < probability
    seeds = torch.randint(2**31 - 1, (images.shape[0],), generator=generator, device=generator.device).tolist()
    out = images.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        if hasattr(transform, "set_random_state"):  # MONAI: a random state of its own
            transform.set_random_state(seed=seeds[index])
            changed = torch.as_tensor(transform(images[index]))
        else:  # TorchIO draws from torch's global RNG, on the CPU (SimpleITK resampling)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[index])
                changed = transform(images[index].cpu())
        out[index] = changed.to(images.device, images.dtype)
    return out


def _gamma(
    images: torch.Tensor, value_range: tuple[float, float], probability: float, g: torch.Generator
) -> torch.Tensor:
    """Gamma of a `probability` share of the volumes, each min-max scaled first (as MONAI's and TorchIO's gamma)."""
    log_gamma = _sometimes(tuple(map(math.log, value_range)), probability, images.shape[0], g)
    return scale_to_unit_range(images).clamp_min(0.0) ** torch.exp(log_gamma)


def _bias(images: torch.Tensor, std: tuple[float, float], probability: float, g: torch.Generator) -> torch.Tensor:
    """A smooth multiplicative field exp(s * noise on a 4^3 grid) on a `probability` share of the volumes."""
    batch, _, *spatial = images.shape
    return images * torch.exp(_sometimes(std, probability, batch, g) * _smooth_noise(batch, (4, 4, 4), spatial, g))


def _first_stage(labels: torch.Tensor, generator: torch.Generator, settings: AppearanceSettings) -> torch.Tensor:
    """anatomix's view synthesis: per-label intensities with texture, then the artefacts, in [0, 1]."""
    batch, _, *spatial = labels.shape
    device = labels.device
    num_labels = int(labels.max()) + 1
    means = uniform(*settings.label_mean, (batch, num_labels), generator)
    stds = uniform(*settings.label_std, (batch, num_labels), generator)
    black = torch.rand(batch, generator=generator, device=device) < settings.background_zero_probability
    means[:, 0] = torch.where(black, 0.0, means[:, 0])
    stds[:, 0] = torch.where(black, 0.0, stds[:, 0])
    flat = labels.flatten(1)
    images = torch.gather(means, 1, flat) + torch.gather(stds, 1, flat) * torch.randn(
        flat.shape, generator=generator, device=device
    )
    images = images.view(labels.shape).clamp_min(0.0)
    images = images * (1 + settings.texture_strength * _texture(batch, spatial, generator, settings))
    images = scale_to_unit_range(images.clamp_min(0.0))
    images = _bias(images, settings.bias_std, settings.bias_probability, generator)
    images = _apply_artefact(images, _library_transform("spikes"), settings.spike_probability, generator)
    images = _gamma(images, settings.gamma, settings.gamma_probability, generator)
    sigmas = _sometimes(settings.smoothing_sigma, settings.smoothing_probability, batch, generator)
    images = _gaussian_blur(images, sigmas.flatten())
    gibbs = _library_transform("gibbs", settings.gibbs_alpha)
    images = _apply_artefact(images, gibbs, settings.gibbs_probability, generator)
    images = _apply_artefact(images, _library_transform("sharpen"), settings.sharpen_probability, generator)
    images = _low_resolution(images, generator, settings)
    return scale_to_unit_range(images.clamp_min(0.0))


def _percentile_normalized(images: torch.Tensor, percentile: float) -> torch.Tensor:
    """Each volume divided by its `percentile`-th percentile, clipped to [0, 1] (anatomix's normalize_img)."""
    flat = images.flatten(1).float()
    high = torch.quantile(flat, percentile / 100, dim=1) if flat.shape[1] <= 2**24 else flat.amax(dim=1)
    return (images / high.clamp_min(1e-8).view(-1, 1, 1, 1, 1)).clamp(0.0, 1.0)


def _second_stage(images: torch.Tensor, generator: torch.Generator, settings: AppearanceSettings) -> torch.Tensor:
    """anatomix's training-time augmentation of each view: blur, noise, bias, gamma, motion."""
    batch = images.shape[0]
    images = _percentile_normalized(images, settings.percentile)
    sigmas = _sometimes(settings.blur_sigma, settings.blur_probability, batch, generator)
    images = _gaussian_blur(images, sigmas.flatten())
    noise = _sometimes(settings.noise_std, settings.noise_probability, batch, generator)
    images = images + noise * torch.randn(images.shape, generator=generator, device=images.device)
    images = _bias(images, settings.second_bias_std, settings.second_bias_probability, generator)
    images = _gamma(images, settings.second_gamma, settings.second_gamma_probability, generator)
    images = _apply_artefact(images, _library_transform("motion"), settings.motion_probability, generator)
    return scale_to_unit_range(images)


def render(
    labels: torch.Tensor, generator: torch.Generator, settings: AppearanceSettings = AppearanceSettings()
) -> torch.Tensor:
    """One image per label map, (B, 1, *spatial) float32 in [0, 1], of independent random appearance."""
    images = _first_stage(labels, generator, settings)
    return _second_stage(images, generator, settings) if settings.second_stage else images


def render_views(
    labels: torch.Tensor,
    generator: torch.Generator,
    settings: AppearanceSettings = AppearanceSettings(),
    views: int = 2,
) -> torch.Tensor:
    """(views, B, 1, *spatial): `views` renderings of the same label maps, each of its own appearance."""
    return torch.stack([render(labels, generator, settings) for _ in range(views)])
