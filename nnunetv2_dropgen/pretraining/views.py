"""Render a label map as an image of random appearance: two such views of one map are a contrastive pair.

The appearance model follows the facts of anatomix's synthetic views: a random mean and spread per label
(sometimes a black background), smooth multi-scale multiplicative texture, then a bias field, gamma,
blur, noise and simulated low resolution, each view rescaled to [0, 1]. Both views share the label map,
so they share geometry; every appearance parameter is drawn independently per view and per map.
Batched in torch on the label maps' device, driven by one torch.Generator (seeded, reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnunetv2_dropgen.feature_extractors import scale_to_unit_range
from nnunetv2_dropgen.pretraining.composition import uniform


@dataclass(frozen=True)
class AppearanceSettings:
    """Ranges and probabilities of the appearance model (intensities in units of the [0, 1] range).

    label_std: spread of intensities within a label (anatomix: 5 to 20 on a 0-255 scale).
    background_zero_probability: chance the background label is black (anatomix: 0.25).
    texture_std / texture_strength: multi-scale smooth noise, image *= 1 + strength * noise
        (anatomix: noise std up to 5 per scale, strength 0.02).
    bias_std: standard deviation of the smooth log bias field.
    gamma: range of the gamma exponent (drawn log-uniformly).
    blur_sigma: range of the Gaussian blur sigma, in voxels.
    noise_std: range of the additive Gaussian noise standard deviation.
    low_resolution_zoom: range of the per-axis zoom (< 1) used to simulate thicker voxels.
    """

    label_std: tuple[float, float] = (0.02, 0.08)
    background_zero_probability: float = 0.25
    texture_std: float = 5.0
    texture_strength: float = 0.02
    bias_probability: float = 0.9
    bias_std: tuple[float, float] = (0.0, 0.4)
    gamma_probability: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.25, 1.5)
    noise_probability: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.1)
    low_resolution_probability: float = 1 / 3
    low_resolution_zoom: tuple[float, float] = (1 / 3, 1.0)


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


def render(
    labels: torch.Tensor, generator: torch.Generator, settings: AppearanceSettings = AppearanceSettings()
) -> torch.Tensor:
    """One image per label map, (B, 1, *spatial) float32 in [0, 1], of independent random appearance."""
    batch, _, *spatial = labels.shape
    device = labels.device
    num_labels = int(labels.max()) + 1
    means = torch.rand((batch, num_labels), generator=generator, device=device)
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

    bias = _sometimes(settings.bias_std, settings.bias_probability, batch, generator)
    images = images * torch.exp(bias * _smooth_noise(batch, (4, 4, 4), spatial, generator))
    log_gamma = _sometimes(tuple(map(math.log, settings.gamma)), settings.gamma_probability, batch, generator)
    images = images.clamp_min(0.0) ** torch.exp(log_gamma)
    sigmas = _sometimes(settings.blur_sigma, settings.blur_probability, batch, generator)
    images = _gaussian_blur(images, sigmas.flatten())
    noise = _sometimes(settings.noise_std, settings.noise_probability, batch, generator)
    images = images + noise * torch.randn(images.shape, generator=generator, device=device)
    images = _low_resolution(images, generator, settings)
    return scale_to_unit_range(images.clamp_min(0.0))


def render_views(
    labels: torch.Tensor,
    generator: torch.Generator,
    settings: AppearanceSettings = AppearanceSettings(),
    views: int = 2,
) -> torch.Tensor:
    """(views, B, 1, *spatial): `views` renderings of the same label maps, each of its own appearance."""
    return torch.stack([render(labels, generator, settings) for _ in range(views)])
