"""The structure pool: every labelled structure of the given label maps, each fitted into a small cube.

Pretraining never trains on a label map as it was read. It keeps each label of each map as one structure
(cropped to its bounding box, resampled isotropically so its longest side spans the cube) and composes new
label maps from random structures of the pool at every step (`composition`), so a few label maps go far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunetv2_dropgen.synthetic import random_label_map

DEFAULT_CANVAS = 32
"""Side of the cube each structure is stored in (voxels): 32 KiB per structure, smooth enough once placed."""

LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")
"""File types read from a label folder (3D formats SimpleITK reads; nnU-Net's labelsTr uses .nii.gz)."""


HELD_OUT_STREAM = 7_919
"""Mixed into the seed of the held-out synthetic label maps, so they are never training maps."""


class LabelMapError(ValueError):
    """Label-map input that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class StructurePool:
    """Binary structures in cubes of side `canvas`, and each one's size relative to the map it came from.

    masks: (P, 1, canvas, canvas, canvas) bool. relative_sizes: (P,) float32, the structure's longest
    physical side over the longest side of its map's foreground. sources: what the pool was built from.
    """

    masks: torch.Tensor
    relative_sizes: torch.Tensor
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.masks.ndim != 5 or self.masks.shape[0] == 0 or self.masks.shape[0] != self.relative_sizes.shape[0]:
            raise LabelMapError(
                f"a structure pool needs at least one structure and one relative size per structure; got masks "
                f"{tuple(self.masks.shape)} and {tuple(self.relative_sizes.shape)} sizes."
            )

    @property
    def canvas(self) -> int:
        return int(self.masks.shape[-1])

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def to(self, device: torch.device | str) -> StructurePool:
        return StructurePool(self.masks.to(device), self.relative_sizes.to(device), self.sources)

    @staticmethod
    def concatenate(pools: Sequence[StructurePool]) -> StructurePool:
        """One pool holding the structures of all `pools` (which must share the canvas)."""
        if len({pool.canvas for pool in pools}) != 1:
            raise LabelMapError("structure pools with different canvas sizes cannot be combined; use one canvas.")
        return StructurePool(
            torch.cat([pool.masks for pool in pools]),
            torch.cat([pool.relative_sizes for pool in pools]),
            tuple(source for pool in pools for source in pool.sources),
        )


def fit_structure(mask: np.ndarray, spacing: Sequence[float], canvas: int) -> torch.Tensor:
    """Resample a cropped boolean mask (z, y, x; voxel `spacing` in the same order) into a centred canvas cube.

    The longest physical side spans the cube and the other sides keep their physical proportion, so
    anisotropic voxels become isotropic. Downsampling averages (a thin structure keeps at least one voxel).
    """
    extent = np.asarray(mask.shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    target = [int(min(canvas, max(1, round(e * canvas / extent.max())))) for e in extent]
    volume = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    mode = "trilinear" if all(t >= s for t, s in zip(target, mask.shape, strict=True)) else "area"
    resampled = F.interpolate(volume, size=target, mode=mode, **({"align_corners": False} if mode != "area" else {}))
    fitted = resampled >= 0.5 if bool((resampled >= 0.5).any()) else resampled > 0
    cube = torch.zeros((canvas, canvas, canvas), dtype=torch.bool)
    starts = [(canvas - t) // 2 for t in target]
    cube[tuple(slice(s, s + t) for s, t in zip(starts, target, strict=True))] = fitted[0, 0]
    return cube


def structures_of(labels: np.ndarray, spacing: Sequence[float], canvas: int) -> tuple[list[torch.Tensor], list[float]]:
    """Every non-zero label of one (z, y, x) label map as a fitted cube, with its relative size."""
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    present = [(value, box) for value, box in enumerate(boxes, start=1) if box is not None]
    if not present:
        return [], []
    spacing = np.asarray(spacing, dtype=np.float64)
    foreground = ndimage.find_objects((labels > 0).astype(np.int8))[0]
    map_extent = max(float((s.stop - s.start) * d) for s, d in zip(foreground, spacing, strict=True))
    cubes, sizes = [], []
    for value, box in present:
        mask = labels[box] == value
        cubes.append(fit_structure(mask, spacing, canvas))
        sizes.append(max(float(n * d) for n, d in zip(mask.shape, spacing, strict=True)) / map_extent)
    return cubes, sizes


def read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3D integer label map as a (z, y, x) array and its voxel spacing in the same order."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabelMapError(
            f"SimpleITK cannot read the label map {path} ({first}); fix or remove the file from the folder."
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise LabelMapError(
            f"{path} is not a 3D single-channel label map (dimension {image.GetDimension()}, "
            f"{image.GetNumberOfComponentsPerPixel()} components); pretraining needs 3D label maps."
        )
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise LabelMapError(
                f"{path} holds non-integer values, so it is an image rather than a label map; give a folder of "
                "label maps (an nnU-Net labelsTr), not imagesTr."
            )
        array = array.astype(np.int64)
    if array.min() < 0:
        raise LabelMapError(f"{path} holds negative labels; label maps use 0 for background and positive integers.")
    return array, tuple(float(s) for s in reversed(image.GetSpacing()))


def label_map_files(folder: str | Path) -> list[Path]:
    """The label-map files of `folder` (not recursive), sorted; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelMapError(
            f"the label folder {folder} does not exist or is not a folder; give a folder of label maps."
        )
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(LABEL_MAP_SUFFIXES)
    )
    if not files:
        raise LabelMapError(
            f"the label folder {folder} holds no label maps (files ending in {', '.join(LABEL_MAP_SUFFIXES)}); "
            "point --labels at a folder such as an nnU-Net dataset's labelsTr."
        )
    return files


def pool_from_folder(folder: str | Path, canvas: int = DEFAULT_CANVAS) -> StructurePool:
    """The structures of every label map in `folder` (e.g. an nnU-Net labelsTr)."""
    files = label_map_files(folder)
    cubes: list[torch.Tensor] = []
    sizes: list[float] = []
    for path in files:
        labels, spacing = read_label_map(path)
        found, relative = structures_of(labels, spacing, canvas)
        cubes += found
        sizes += relative
    if not cubes:
        raise LabelMapError(
            f"the {len(files)} label maps in {folder} are all background (no label above 0); nothing to learn from."
        )
    return StructurePool(
        torch.stack(cubes)[:, None],
        torch.tensor(sizes, dtype=torch.float32),
        (f"{len(files)} label maps in {Path(folder).resolve()} ({len(cubes)} structures)",),
    )


def pool_from_synthetic(count: int, seed: int, canvas: int = DEFAULT_CANVAS, num_labels: int = 4) -> StructurePool:
    """The structures of `count` label maps from the package's synthetic shape generator."""
    if count < 1:
        raise LabelMapError(f"--synthetic needs a positive number of label maps, got {count}.")
    rng = np.random.default_rng(seed)
    cubes: list[torch.Tensor] = []
    sizes: list[float] = []
    for _ in range(count):
        found, relative = structures_of(random_label_map((canvas,) * 3, num_labels, rng), (1.0, 1.0, 1.0), canvas)
        cubes += found
        sizes += relative
    return StructurePool(
        torch.stack(cubes)[:, None],
        torch.tensor(sizes, dtype=torch.float32),
        (f"{count} synthetic label maps (nnunetv2_dropgen.synthetic, {num_labels} labels each, seed {seed})",),
    )


def training_and_held_out_pools(
    label_folders: Sequence[str | Path], synthetic: int, seed: int, canvas: int = DEFAULT_CANVAS
) -> tuple[StructurePool, StructurePool]:
    """The training pool and the pool the held-out stability maps are composed from.

    Synthetic structures for the held-out maps are freshly generated with a seed of their own; a label
    folder's structures serve both (held-out maps then differ in layout and appearance, not in structures).
    """
    if not label_folders and synthetic <= 0:
        raise LabelMapError(
            "give label maps to pretrain on: --labels DIR (e.g. an nnU-Net labelsTr) and/or --synthetic N."
        )
    folders = [pool_from_folder(folder, canvas) for folder in label_folders]
    training = folders + ([pool_from_synthetic(synthetic, seed, canvas)] if synthetic > 0 else [])
    held_out_seed = int(np.random.SeedSequence([seed, HELD_OUT_STREAM]).generate_state(1)[0])
    held_out = folders + ([pool_from_synthetic(max(8, synthetic // 4), held_out_seed, canvas)] if synthetic > 0 else [])
    return StructurePool.concatenate(training), StructurePool.concatenate(held_out)
