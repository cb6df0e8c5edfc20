"""New training label maps at every step: random structures of the pool, each under its own random affine.

As anatomix composes its training label maps from many templates, each placed with a random scale,
rotation and flip, every step here sees a layout no step saw before, so a handful of label maps suffices.
Labels are identities within one map only (structure k of a map is label k), which is all the
contrastive loss needs. Everything runs batched in torch on the pool's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnunetv2_dropgen.pretraining.pool import StructurePool


@dataclass(frozen=True)
class CompositionSettings:
    """How label maps are composed.

    structures: (fewest, most) structures per map, drawn uniformly; later ones are drawn over earlier ones.
    scale: range of the per-axis scale factor applied to each structure (anatomix: 0.5 to 1.5).
    min_relative_size: a structure spans at least this share of the patch before scaling, so small
        structures of a large map stay visible.
    foreground_probability: chance that a map gets a smooth random foreground region (anatomix: 2/3);
        outside it everything is background, inside uncovered voxels get a label of their own.
    envelope_probability: chance that such a foreground region also gets a rim with a label of its own.
    """

    structures: tuple[int, int] = (4, 12)
    scale: tuple[float, float] = (0.5, 1.5)
    min_relative_size: float = 0.2
    foreground_probability: float = 2 / 3
    envelope_probability: float = 0.5


def uniform(low: float, high: float, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Uniform samples on the generator's device."""
    return low + (high - low) * torch.rand(tuple(shape), generator=generator, device=generator.device)


def random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3, 3) rotations distributed uniformly (QR of Gaussian matrices with the signs fixed)."""
    gaussian = torch.randn((count, 3, 3), generator=generator, device=generator.device)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.where(torch.linalg.det(q) < 0, -1.0, 1.0)
    q[:, :, 0] = q[:, :, 0] * flip[:, None]
    return q


def _placements(
    relative_sizes: torch.Tensor,
    patch_size: Sequence[int],
    generator: torch.Generator,
    settings: CompositionSettings,
) -> torch.Tensor:
    """(B, 3, 4) affine_grid matrices mapping patch coordinates to the canvas of each chosen structure.

    A structure's local frame is scaled per axis, flipped, rotated and centred anywhere in the middle 80 %
    of the patch; all lengths are in voxels so non-cubic patches keep structures undistorted.
    """
    count = relative_sizes.shape[0]
    half_patch = torch.tensor([s / 2 for s in reversed(patch_size)], device=generator.device)  # x, y, z
    longest = max(patch_size) * relative_sizes.clamp(settings.min_relative_size, 1.0)
    half_extent = longest[:, None] / 2 * uniform(*settings.scale, (count, 3), generator)
    flips = torch.where(torch.rand((count, 3), generator=generator, device=generator.device) < 0.5, -1.0, 1.0)
    centre = uniform(-0.8, 0.8, (count, 3), generator) * half_patch
    to_canvas = (flips / half_extent)[:, :, None] * random_rotations(count, generator).transpose(1, 2)
    matrix = to_canvas * half_patch[None, None, :]
    offset = -(to_canvas @ centre[:, :, None])
    return torch.cat([matrix, offset], dim=2)


def _centres(size: int, device: torch.device) -> torch.Tensor:
    """Normalised voxel-centre coordinates of one axis (align_corners=False convention)."""
    return torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=device)


def affine_grid(theta: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """F.affine_grid(theta, (B, 1, *spatial), align_corners=False) as a sum of per-axis terms (several times faster)."""
    depth, height, width = spatial
    device = theta.device
    x = _centres(width, device).view(1, 1, 1, width, 1) * theta[:, None, None, None, :, 0]
    y = _centres(height, device).view(1, 1, height, 1, 1) * theta[:, None, None, None, :, 1]
    z = _centres(depth, device).view(1, depth, 1, 1, 1) * theta[:, None, None, None, :, 2]
    return x + y + z + theta[:, None, None, None, :, 3]


def _add_foreground(labels: torch.Tensor, generator: torch.Generator, settings: CompositionSettings) -> torch.Tensor:
    """Give some maps a smooth random foreground: background outside, labels shifted by one inside, maybe a rim."""
    batch, _, *spatial = labels.shape
    device = labels.device
    chosen = torch.rand(batch, generator=generator, device=device) < settings.foreground_probability
    if not bool(chosen.any()):
        return labels
    coords = torch.stack(torch.meshgrid(*[_centres(n, device) for n in spatial], indexing="ij"), dim=0)[
        None
    ]  # (1, 3, *spatial)
    centre = uniform(-0.25, 0.25, (batch, 3, 1, 1, 1), generator)
    radii = uniform(0.6, 1.0, (batch, 3, 1, 1, 1), generator)
    wobble = F.interpolate(
        0.25 * torch.randn((batch, 1, 4, 4, 4), generator=generator, device=device),
        size=spatial,
        mode="trilinear",
        align_corners=False,
    )
    inside = ((coords - centre) / radii).square().sum(dim=1, keepdim=True).sqrt() + wobble <= 1.0
    chosen = chosen.view(batch, 1, 1, 1, 1)
    labels = torch.where(chosen, torch.where(inside, labels + 1, torch.zeros_like(labels)), labels)
    rim_label = settings.structures[1] + 2
    enveloped = chosen.flatten() & (
        torch.rand(batch, generator=generator, device=device) < settings.envelope_probability
    )
    max_width = max(1, round(min(spatial) / 32))
    widths = torch.randint(1, max_width + 1, (batch,), generator=generator, device=device)
    for index in torch.nonzero(enveloped).flatten().tolist():
        width = int(widths[index])
        region = inside[index : index + 1].float()
        dilated = F.max_pool3d(region, 2 * width + 1, stride=1, padding=width) > 0
        eroded = -F.max_pool3d(-region, 2 * width + 1, stride=1, padding=width) > 0
        labels[index : index + 1][dilated & ~eroded] = rim_label
    return labels


def compose_label_maps(
    pool: StructurePool,
    batch_size: int,
    patch_size: Sequence[int],
    generator: torch.Generator,
    settings: CompositionSettings = CompositionSettings(),
) -> torch.Tensor:
    """(batch_size, 1, *patch_size) int64 label maps composed from the pool, on the pool's device.

    `generator` must live on the pool's device; the same generator state gives the same maps.
    """
    fewest, most = settings.structures
    if not 1 <= fewest <= most:
        raise ValueError(f"structures per map must be a range 1 <= fewest <= most; got {settings.structures}.")
    device = pool.masks.device
    shape = (batch_size, 1, *patch_size)
    labels = torch.zeros(shape, dtype=torch.long, device=device)
    counts = torch.randint(fewest, most + 1, (batch_size,), generator=generator, device=device)
    for k in range(most):
        chosen = torch.randint(len(pool), (batch_size,), generator=generator, device=device)
        grid = affine_grid(_placements(pool.relative_sizes[chosen], patch_size, generator, settings), patch_size)
        # binary masks, so trilinear sampling thresholded at 1/2 gives smooth boundaries and never mixes labels
        covered = F.grid_sample(pool.masks[chosen].float(), grid, mode="bilinear", align_corners=False) >= 0.5
        labels[covered & (k < counts).view(-1, 1, 1, 1, 1)] = k + 1
    if settings.foreground_probability > 0:
        labels = _add_foreground(labels, generator, settings)
    return labels
