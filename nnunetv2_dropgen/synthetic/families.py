"""Shape families for pretraining an extractor: kinds of structure the synthetic benchmark never segments.

An extractor pretrained on the very kinds of structure a benchmark segments (SHAPE_KINDS: ellipsoids,
shells, tori, rounded boxes, lumpy ellipsoids) would be flattered by it: its features could name those
shapes rather than describe any anatomy. These families share no construction with SHAPE_KINDS, so the
benchmark and the stability metric judge the extractor on shapes outside its pretraining pool.
Every mask fills its cube: the caller decides the structure's size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

PRETRAINING_FAMILIES: tuple[str, ...] = ("noise_blob", "tube", "sheet", "fragments")
"""noise_blob: thresholded smooth noise, irregular and sometimes in pieces; tube: a winding tube of varying
radius, sometimes branched; sheet: a thin curved plate; fragments: scattered small islands of one label."""


def _centred_coordinates(size: int) -> np.ndarray:
    """(size, size, size, 3) voxel centres in [-1, 1]."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def _smooth_noise(size: int, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise smoothed over `correlation` (a share of the cube side), unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size,) * 3), sigma=max(0.5, correlation * size), mode="wrap")
    return field / max(float(field.std()), 1e-12)


def _noise_blob(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise above a threshold under a soft spherical window: one or several irregular lobes."""
    radius = np.linalg.norm(_centred_coordinates(size), axis=-1)
    field = _smooth_noise(size, rng.uniform(0.08, 0.2), rng) - rng.uniform(1.5, 3.0) * radius**2
    mask = field > np.quantile(field, 1 - rng.uniform(0.1, 0.35))
    if rng.random() < 0.5:
        components, count = ndimage.label(mask)
        if count > 1:
            mask = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return mask


def _curve(rng: np.random.Generator, points: int = 96) -> np.ndarray:
    """(points, 3) a smooth random space curve in [-0.85, 0.85]^3 (a few random Fourier modes per axis)."""
    t = np.linspace(0, 1, points)[:, None]
    curve = np.zeros((points, 3))
    for frequency in range(1, 4):
        amplitude = rng.normal(0, 1 / frequency, size=(1, 3))
        curve += amplitude * np.sin(2 * np.pi * frequency * t / 2 + rng.uniform(0, 2 * np.pi, size=(1, 3)))
    curve -= curve.mean(axis=0)
    return 0.85 * curve / max(float(np.abs(curve).max()), 1e-6)


def _tube(size: int, rng: np.random.Generator) -> np.ndarray:
    """A winding tube whose radius varies along it; with probability 1/2 a second, thinner branch."""
    curves = [_curve(rng)]
    if rng.random() < 0.5:
        branch = _curve(rng)
        start = curves[0][rng.integers(len(curves[0]))]
        curves.append(start + 0.6 * (branch - branch[0]))
    mask = np.zeros((size,) * 3, dtype=bool)
    for index, curve in enumerate(curves):
        base = rng.uniform(0.06, 0.16) * (0.6 if index else 1.0)
        radius = base * (1 + 0.35 * np.sin(2 * np.pi * rng.uniform(1, 3) * np.linspace(0, 1, len(curve))))
        seeds = np.zeros((size,) * 3, dtype=bool)
        voxels = np.clip(((curve + 1) / 2 * size).astype(int), 0, size - 1)
        seeds[tuple(voxels.T)] = True
        distance, nearest = ndimage.distance_transform_edt(~seeds, return_indices=True)
        lookup = np.zeros((size,) * 3)
        lookup[tuple(voxels.T)] = radius * size / 2
        mask |= distance <= lookup[tuple(nearest)]
    return mask


def _sheet(size: int, rng: np.random.Generator) -> np.ndarray:
    """A thin curved plate: the zero level of a tilted plane plus smooth noise, thickened, inside a ball."""
    coordinates = _centred_coordinates(size)
    normal = rng.standard_normal(3)
    normal /= np.linalg.norm(normal)
    level = coordinates @ normal + rng.uniform(0.1, 0.4) * _smooth_noise(size, rng.uniform(0.15, 0.3), rng)
    thickness = rng.uniform(0.06, 0.18)
    return (np.abs(level) < thickness / 2) & (np.linalg.norm(coordinates, axis=-1) < rng.uniform(0.7, 1.0))


def _fragments(size: int, rng: np.random.Generator) -> np.ndarray:
    """Scattered small islands of one structure: the highest peaks of fine smooth noise inside a ball."""
    coordinates = _centred_coordinates(size)
    field = _smooth_noise(size, rng.uniform(0.04, 0.08), rng)
    inside = np.linalg.norm(coordinates, axis=-1) < 0.95
    return (field > np.quantile(field[inside], 1 - rng.uniform(0.04, 0.12))) & inside


_BUILDERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "noise_blob": _noise_blob,
    "tube": _tube,
    "sheet": _sheet,
    "fragments": _fragments,
}


def family_mask(family: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, size) boolean mask of one random structure of `family`, spanning most of the cube.

    Raises ValueError for an unknown family. Never empty: a degenerate draw is drawn again.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown shape family {family!r}; choose from {', '.join(PRETRAINING_FAMILIES)}.")
    for _ in range(20):
        mask = _BUILDERS[family](size, rng)
        if mask.sum() >= 8:
            return mask
    raise RuntimeError(f"could not draw a non-empty {family!r} structure in a {size}^3 cube.")
