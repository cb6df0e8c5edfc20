"""New training label maps at every step: many structures of the pool, each under its own random affine.

As anatomix composes its training label maps (20 to 40 structures, each scaled, rotated, sheared and
reflected, placed with wrap-around tiling so structures fragment across the volume, later ones drawn over
earlier ones, then median-filtered), every step here sees a layout no step saw before, so a handful of
label maps suffices. Labels are identities within one map only (structure k of a map is label k), which is
all the contrastive loss needs. Everything runs batched in torch on the pool's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnunetv2_dropgen.pretraining.pool import StructurePool


@dataclass(frozen=True)
class CompositionSettings:
    """How label maps are composed (the defaults are anatomix's, see REFERENCE_FACTS).

    structures: (fewest, most) structures per map, drawn uniformly; later ones are drawn over earlier ones.
    scale: range of the per-axis scale factor applied to each structure (anatomix: 0.5 to 1.5).
    shear: largest shear factor of each structure's affine (anatomix: 0.5).
    wrap: place structures on a periodic tile the size of the patch (anatomix's "grid-wrap"): a structure
        crossing one side of the patch goes on at the other, shrunk ones repeat, so structures fragment.
    median_filter: smooth the composed map with a 3x3x3 median, as anatomix does.
    foreground_probability: chance that a map gets a smooth random foreground region (anatomix: 2/3);
        outside it everything is background, inside uncovered voxels get a label of their own.
    envelope_probability: chance that such a foreground region also gets a rim with a label of its own.
    """

    structures: tuple[int, int] = (20, 40)
    scale: tuple[float, float] = (0.5, 1.5)
    shear: float = 0.5
    wrap: bool = True
    median_filter: bool = True
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


def _to_structure_frames(
    count: int, patch_size: Sequence[int], generator: torch.Generator, settings: CompositionSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per structure, (count, 3, 3) matrices and (count, 3) centres taking patch voxels to its frame.

    A patch voxel p (x, y, z, in voxels) lies at `matrix @ (p - centre)` in the structure's frame, in voxels of
    the unscaled structure; the inverse of a random reflection, rotation, shear and per-axis scale.
    """
    device = generator.device
    scales = uniform(*settings.scale, (count, 3), generator)
    shear = torch.eye(3, device=device).repeat(count, 1, 1)
    upper = torch.triu_indices(3, 3, offset=1, device=device)
    shear[:, upper[0], upper[1]] = uniform(-settings.shear, settings.shear, (count, 3), generator)
    flips = torch.where(torch.rand((count, 3), generator=generator, device=device) < 0.5, -1.0, 1.0)
    forward = random_rotations(count, generator) @ shear @ torch.diag_embed(scales * flips)
    sides = torch.tensor([float(s) for s in reversed(patch_size)], device=device)  # x, y, z
    if settings.wrap:
        centres = torch.rand((count, 3), generator=generator, device=device) * sides
    else:  # the middle 80 % of the patch
        centres = (0.1 + 0.8 * torch.rand((count, 3), generator=generator, device=device)) * sides
    return torch.linalg.inv(forward), centres


def _structure_grid(
    extents: torch.Tensor,
    patch_size: Sequence[int],
    generator: torch.Generator,
    settings: CompositionSettings,
) -> torch.Tensor:
    """(B, *patch_size, 3) grid_sample coordinates of each patch voxel in each chosen structure's canvas."""
    matrix, centres = _to_structure_frames(extents.shape[0], patch_size, generator, settings)
    device = generator.device
    local = torch.zeros((), device=device)
    # matrix @ (p - centre) as a sum of one term per axis: three small tensors broadcast, not a (B, D, H, W, 3) product
    for axis, size in enumerate(reversed(patch_size)):  # x, y, z
        offsets = torch.arange(size, device=device, dtype=torch.float32) + 0.5 - centres[:, axis, None]  # (B, size)
        term = offsets[:, :, None] * matrix[:, None, :, axis]  # (B, size, 3)
        shape = [term.shape[0], 1, 1, 1, 3]
        shape[3 - axis] = size
        local = local + term.view(shape)
    if settings.wrap:
        period = float(max(patch_size))
        local = torch.remainder(local + period / 2, period) - period / 2
    return local / (extents[:, None, None, None, None] / 2)


def _centres(size: int, device: torch.device) -> torch.Tensor:
    """Normalised voxel-centre coordinates of one axis (align_corners=False convention)."""
    return torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=device)


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
    for k in range(int(counts.max())):
        chosen = torch.randint(len(pool), (batch_size,), generator=generator, device=device)
        grid = _structure_grid(pool.extents[chosen], patch_size, generator, settings)
        # binary masks, so trilinear sampling thresholded at 1/2 gives smooth boundaries and never mixes labels
        covered = F.grid_sample(pool.masks[chosen].float(), grid, mode="bilinear", align_corners=False) >= 0.5
        labels[covered & (k < counts).view(-1, 1, 1, 1, 1)] = k + 1
    if settings.median_filter:
        labels = median_filter(labels)
    if settings.foreground_probability > 0:
        labels = _add_foreground(labels, generator, settings)
    return labels


def median_filter(labels: torch.Tensor) -> torch.Tensor:
    """3x3x3 median of (B, 1, *spatial) integer label maps (edges replicated), as anatomix smooths its maps.

    It removes slivers and single voxels that overwriting left behind; done slab by slab to bound memory.
    """
    padded = F.pad(labels.float(), (1, 1, 1, 1, 1, 1), mode="replicate")
    out = torch.empty_like(labels)
    for start in range(0, labels.shape[2], 16):
        stop = min(start + 16, labels.shape[2])
        slab = padded[:, :, start : stop + 2].unfold(2, 3, 1).unfold(3, 3, 1).unfold(4, 3, 1)
        out[:, :, start:stop] = slab.flatten(-3).median(dim=-1).values.to(labels.dtype)
    return out
