"""Random 3D label maps whose structures vary in shape, size, pose and position from case to case.

Varied geometry matters: a network that only ever sees one fixed sphere can segment it by memorised
position or size; a domain-generalisation test should instead make it recognise structures by appearance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

SHAPE_KINDS: tuple[str, ...] = ("ellipsoid", "shell", "torus", "rounded_box", "blob")
"""The structure primitives; every structure of every case picks one at random."""

MIN_LABEL_FRACTION = 0.005
"""Smallest share of the volume each label must keep after later labels have been drawn over it."""


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3D rotation (QR of a Gaussian matrix, signs fixed so it is not biased)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _local_coordinates(shape: Sequence[int], center: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Voxel centres in a structure's own frame, in units where the volume spans 1 along every axis.

    Normalised units make structure sizes a share of the volume, so the same generator works for any grid.
    """
    axes = [(np.arange(n) + 0.5) / n for n in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1) - center
    return coords @ rotation


def _ellipsoid(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    radii = rng.uniform(0.14, 0.28, size=3)
    return np.sum((x / radii) ** 2, axis=-1) <= 1.0


def _shell(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hollow ellipsoid: the cavity shows whatever lies beneath (background or an earlier structure)."""
    radii = rng.uniform(0.18, 0.3, size=3)
    thickness = rng.uniform(0.35, 0.55)
    r = np.sqrt(np.sum((x / radii) ** 2, axis=-1))
    return (r <= 1.0) & (r >= 1.0 - thickness)


def _torus(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    major = rng.uniform(0.15, 0.25)
    minor = rng.uniform(0.06, 0.1)
    return (np.hypot(x[..., 0], x[..., 1]) - major) ** 2 + x[..., 2] ** 2 <= minor**2


def _rounded_box(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A superellipsoid: box-like with rounded edges, sharper the higher the exponent."""
    half_sides = rng.uniform(0.1, 0.22, size=3)
    exponent = rng.uniform(4.0, 10.0)
    return np.sum(np.abs(x / half_sides) ** exponent, axis=-1) <= 1.0


def _blob(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lumpy ellipsoid: its boundary is pushed in and out by smoothed noise; the largest piece is kept."""
    radii = rng.uniform(0.15, 0.28, size=3)
    shape = x.shape[:-1]
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=0.06 * min(shape))
    noise /= max(float(noise.std()), 1e-12)
    mask = np.sqrt(np.sum((x / radii) ** 2, axis=-1)) + 0.3 * noise <= 1.0
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


_BUILDERS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "ellipsoid": _ellipsoid,
    "shell": _shell,
    "torus": _torus,
    "rounded_box": _rounded_box,
    "blob": _blob,
}


def structure_mask(kind: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one randomly sized, oriented and placed structure of the given kind.

    The centre of the structure's own frame lies in the middle 40 % of each axis; for `shell` and `torus`
    that centre is outside the structure (the cavity or the hole).
    """
    if kind not in _BUILDERS:
        raise ValueError(f"Unknown structure kind {kind!r}; choose one of {', '.join(SHAPE_KINDS)}.")
    center = rng.uniform(0.3, 0.7, size=3)
    return _BUILDERS[kind](_local_coordinates(shape, center, _random_rotation(rng)), rng)


def random_label_map(
    shape: Sequence[int] = (48, 48, 48),
    num_labels: int = 3,
    rng: np.random.Generator | None = None,
    max_attempts: int = 100,
    kinds: Sequence[str] | None = None,
) -> np.ndarray:
    """A uint8 label map (background 0, structures 1..num_labels).

    kinds: the structure kind of each label (label i is always a `kinds[i - 1]`, of random size, pose and
    place), so a label has an identity beyond its intensity, as an organ has its shape; None: every
    structure picks a random kind (label maps for pretraining, where only the layout matters).
    Structures are drawn in label order and later ones overwrite earlier ones; a map where any label keeps
    less than MIN_LABEL_FRACTION of the volume is drawn again, so every label is present in every case.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {shape}.")
    if not 1 <= num_labels <= 255:
        raise ValueError(f"num_labels must be between 1 and 255 (stored as uint8), got {num_labels}.")
    if kinds is not None:
        kinds = tuple(kinds)
        unknown = sorted(set(kinds) - set(SHAPE_KINDS))
        if len(kinds) != num_labels or unknown:
            raise ValueError(
                f"kinds must name one structure kind per label ({num_labels}) from {', '.join(SHAPE_KINDS)}; "
                f"got {list(kinds)}."
            )
    rng = np.random.default_rng() if rng is None else rng
    min_voxels = max(1, int(MIN_LABEL_FRACTION * np.prod(shape)))
    for _ in range(max_attempts):
        labels = np.zeros(shape, dtype=np.uint8)
        for label in range(1, num_labels + 1):
            kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))] if kinds is None else kinds[label - 1]
            labels[structure_mask(kind, shape, rng)] = label
        if np.bincount(labels.ravel(), minlength=num_labels + 1)[1:].min() >= min_voxels:
            return labels
    raise RuntimeError(
        f"Could not place {num_labels} structures that each keep {min_voxels} voxels in a {shape} volume "
        f"after {max_attempts} attempts; use fewer labels or a larger shape."
    )
