"""The structure pool: every labelled structure of the given label maps, each stored in a small cube with its size.

Pretraining never trains on a label map as it was read. It keeps each label of each map as one structure
(cropped to its bounding box, resampled isotropically so its longest side spans the cube) together with its
physical size, and composes new label maps from random structures of the pool at every step
(`composition`), so a few label maps go far. As in anatomix, a structure keeps its physical size: a liver
stays larger than a vertebra, whether it came from a multi-label map or from a one-structure-per-file
folder (TotalSegmentator's layout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunetv2_dropgen.synthetic import SHAPE_KINDS, structure_mask
from nnunetv2_dropgen.synthetic.families import PRETRAINING_FAMILIES, family_mask

DEFAULT_CANVAS = 32
"""Side of the cube each structure is stored in (voxels): 32 KiB per structure, smooth enough once placed."""

SYNTHETIC_EXTENT = (8.0, 80.0)
"""Longest side of a synthetic pretraining structure, in voxels of the pretraining grid (drawn log-uniformly):
from a small vessel segment to more than the side of a 64^3 patch (wrapped, it fragments)."""

HELD_OUT_IMAGE_SIDE = 32
"""Held-out structures of SHAPE_KINDS are drawn in a cube of this side, as the synthetic benchmark draws them
in its 32^3 images, so the stability metric sees them at the size the benchmark's extractor sees them."""

LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")
"""File types read from a label folder (3D formats SimpleITK reads; nnU-Net's labelsTr uses .nii.gz)."""
MAX_LABELS = 1000
"""More distinct values than this and a file is an image, not a label map (TotalSegmentator has 117 classes,
FreeSurfer's aparc+aseg about 110 values up to 2035)."""
MIN_NEIGHBOUR_AGREEMENT = 0.5
"""Below this share of neighbouring labelled voxels holding the same value, a file is an image stored as integers
(an 8-bit MR has at most 256 values): label maps are regions (the benchmark's 32^3 maps: 0.92; thin tubes: 1.0),
while an image's neighbours differ (the benchmark's images quantized to 8 bits: 0.05, to 6 bits: 0.21)."""
MAX_LABEL_VALUE = 100_000
"""The largest label value read: finding the structures costs memory for every value up to the largest."""


HELD_OUT_STREAM = 7_919
"""Mixed into the seed of the held-out synthetic label maps, so they are never training maps."""


class LabelMapError(ValueError):
    """Label-map input that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class StructurePool:
    """Binary structures in cubes of side `canvas`, and each one's size.

    masks: (P, 1, canvas, canvas, canvas) bool, the structure's longest side spanning the cube.
    extents: (P,) float32, the structure's longest side in voxels of the pretraining grid (its physical
    size over the pool's voxel size). sources: what the pool was built from.
    """

    masks: torch.Tensor
    extents: torch.Tensor
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.masks.ndim != 5 or self.masks.shape[0] == 0 or self.masks.shape[0] != self.extents.shape[0]:
            raise LabelMapError(
                f"a structure pool needs at least one structure and one extent per structure; got masks "
                f"{tuple(self.masks.shape)} and {tuple(self.extents.shape)} extents."
            )

    @property
    def canvas(self) -> int:
        return int(self.masks.shape[-1])

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def to(self, device: torch.device | str) -> StructurePool:
        return StructurePool(self.masks.to(device), self.extents.to(device), self.sources)

    @staticmethod
    def concatenate(pools: Sequence[StructurePool]) -> StructurePool:
        """One pool holding the structures of all `pools` (which must share the canvas)."""
        if len({pool.canvas for pool in pools}) != 1:
            raise LabelMapError("structure pools with different canvas sizes cannot be combined; use one canvas.")
        return StructurePool(
            torch.cat([pool.masks for pool in pools]),
            torch.cat([pool.extents for pool in pools]),
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


def structures_of(
    labels: np.ndarray, spacing: Sequence[float], canvas: int, voxel_size: float, ignore_label: int | None = None
) -> tuple[list[torch.Tensor], list[float]]:
    """Every non-zero label of one (z, y, x) label map but `ignore_label` as a fitted cube, with its longest side
    in voxels of `voxel_size` (the pretraining grid's spacing, in the units of `spacing`)."""
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    cubes, extents = [], []
    for value, box in enumerate(boxes, start=1):
        if box is None or value == ignore_label:
            continue
        mask = labels[box] == value
        cubes.append(fit_structure(mask, spacing, canvas))
        extents.append(max(float(n * d) for n, d in zip(mask.shape, spacing, strict=True)) / voxel_size)
    return cubes, extents


def _unreadable(path: Path, exc: RuntimeError) -> LabelMapError:
    """SimpleITK's error in its first two lines (the second often says why, e.g. a zero spacing)."""
    message = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2]) or type(exc).__name__
    return LabelMapError(
        f"SimpleITK cannot read the label map {path} ({message}); fix or remove the file from the folder."
    )


def read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3D integer label map as a (z, y, x) array and its voxel spacing in the same order."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _unreadable(path, exc) from exc
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
        raise LabelMapError(
            f"{path} holds negative values, so it is an image (a CT in Hounsfield units?) rather than a label map: "
            "label maps use 0 for background and positive integers. Point --labels at folders of label maps."
        )
    largest = int(array.max())
    if largest > MAX_LABEL_VALUE:
        raise LabelMapError(
            f"{path} holds label values up to {largest}; above {MAX_LABEL_VALUE} they cost memory for every "
            "value below them: renumber the labels (e.g. 1, 2, 3, ...)."
        )
    if largest > MAX_LABELS and np.unique(array).size > MAX_LABELS:
        raise LabelMapError(
            f"{path} holds more than {MAX_LABELS} distinct values, so it is an image stored as integers (an MR?) "
            "rather than a label map: every value would become a structure. Point --labels at folders of label maps."
        )
    agreement = neighbour_agreement(array)
    if agreement is not None and agreement < MIN_NEIGHBOUR_AGREEMENT:
        raise LabelMapError(
            f"{path} looks like an image stored as integers rather than a label map: only {agreement:.0%} of its "
            "neighbouring non-zero voxels hold the same value (a label map's structures are regions: most do), so "
            "every intensity would become a structure. Point --labels at folders of label maps."
        )
    return array, _zyx(image.GetSpacing())


def neighbour_agreement(array: np.ndarray, slab: int = 32) -> float | None:
    """The share of pairs of face-neighbouring voxels, both non-zero, that hold the same value (None with under
    1000 such pairs: too few to judge). Counted at full resolution, `slab` slices at a time (memory)."""
    same = pairs = 0
    for start in range(0, array.shape[0], slab):
        block = array[start : start + slab]
        following = array[start + 1 : start + slab + 1]  # each slice's neighbour along the first axis
        for first, second in (
            (block[: len(following)], following),
            (block[:, :-1], block[:, 1:]),
            (block[:, :, :-1], block[:, :, 1:]),
        ):
            both = (first != 0) & (second != 0)
            pairs += np.count_nonzero(both)
            same += np.count_nonzero(both & (first == second))
    return same / pairs if pairs >= 1000 else None


def _zyx(spacing: Sequence[float]) -> tuple[float, float, float]:
    return tuple(float(s) for s in reversed(spacing))


def label_map_spacing(path: Path) -> tuple[float, float, float]:
    """A label map's (z, y, x) voxel spacing, from its header alone (the voxels are not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from exc
    spacing = _zyx(reader.GetSpacing())
    if not all(s > 0 for s in spacing):
        raise LabelMapError(f"{path} has voxel spacing {spacing} in its header; spacings must be positive.")
    return spacing


def median_spacing(files: Sequence[Path]) -> float:
    """The median voxel spacing over every axis of `files` (headers only): the pretraining grid's default."""
    return float(np.median([s for path in files for s in label_map_spacing(path)]))


IMAGE_FOLDERS = ("imagestr", "imagests")
"""nnU-Net's image folders (compared lower-case): left out of a dataset root given as --labels, refused as one."""


def is_image_file(path: Path, folder: Path) -> bool:
    """Whether `path` (inside `folder`) is one of the images that sit beside label maps in the layouts users point
    --labels at: nnU-Net's imagesTr/imagesTs, and TotalSegmentator's `<case>/ct.nii.gz` beside `segmentations/`."""
    inside = path.relative_to(folder).parts[:-1]
    return any(part.lower() in IMAGE_FOLDERS for part in inside) or (path.parent / "segmentations").is_dir()


@dataclass(frozen=True)
class LabelFiles:
    """The label maps of a --labels folder, and the images found beside them and left out."""

    maps: list[Path]
    images_left_out: int


def _candidate_files(folder: Path) -> Iterator[Path]:
    """Files below `folder`, symlinked folders followed (each real folder once, so a cycle ends)."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in names:
            if not name.startswith(".") and name.endswith(LABEL_MAP_SUFFIXES):
                yield Path(root) / name


def label_map_files(folder: str | Path) -> LabelFiles:
    """The label-map files in `folder` and its subfolders, sorted; a clear error when there are none.

    Recursive (symlinked folders followed), so TotalSegmentator's layout (one folder per case, one file per
    structure) reads as it is, and a dataset's root may be given: its images (`is_image_file`) are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelMapError(
            f"the label folder {folder} does not exist or is not a folder; give a folder of label maps."
        )
    if folder.resolve().name.lower() in IMAGE_FOLDERS:
        raise LabelMapError(
            f"{folder} is nnU-Net's image folder; --labels takes label maps: give the dataset's labelsTr (or its root)."
        )
    found = sorted(p for p in _candidate_files(folder) if p.is_file())
    maps = [p for p in found if not is_image_file(p, folder)]
    if not maps:
        left_out = (
            f" ({len(found)} files were left out as images: those under imagesTr/imagesTs, and TotalSegmentator's "
            "beside segmentations/)"
            if found
            else ""
        )
        raise LabelMapError(
            f"the label folder {folder} holds no label maps (files ending in {', '.join(LABEL_MAP_SUFFIXES)}"
            f"){left_out}; point --labels at a folder such as an nnU-Net dataset's labelsTr."
        )
    return LabelFiles(maps, len(found) - len(maps))


def _refuse_overlapping(listed: dict[Path, LabelFiles]) -> None:
    """--labels folders that share a label map (the same folder twice, one inside another, or through a symlink)
    would count its structures twice."""
    owner: dict[str, Path] = {}
    for folder, files in listed.items():
        for path in files.maps:
            first = owner.setdefault(os.path.realpath(path), folder)
            if first != folder:
                raise LabelMapError(
                    f"--labels {first} and {folder} overlap ({path} is in both), so their label maps would count "
                    "twice; give each folder once, and not a folder together with one inside it."
                )


def dataset_ignore_label(folder: Path) -> int | None:
    """nnU-Net's ignore label (sparse annotations: the unannotated voxels) from the dataset.json in `folder` or
    beside it (a labelsTr's dataset root), or None: unannotated voxels are no structure to learn."""
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                labels = json.loads(candidate.read_text()).get("labels", {})
            except (OSError, ValueError) as exc:
                raise LabelMapError(f"{candidate} cannot be read as nnU-Net's dataset.json ({exc}).") from exc
            ignore = labels.get("ignore") if isinstance(labels, dict) else None
            return int(ignore) if isinstance(ignore, int) and not isinstance(ignore, bool) else None
    return None


def pool_from_folder(
    folder: str | Path, canvas: int = DEFAULT_CANVAS, voxel_size: float | None = None
) -> StructurePool:
    """The structures of every label map in `folder` and its subfolders (an nnU-Net labelsTr, TotalSegmentator).

    voxel_size: the pretraining grid's spacing (in the label maps' units, mm for NIfTI); default the median
    voxel spacing of the maps, so structures keep their native size in voxels, as anatomix's templates do.
    Maps are read one at a time (the default spacing comes from their headers).
    """
    return _pool_of_label_maps(Path(folder), label_map_files(folder), canvas, voxel_size)


def _pool_of_label_maps(folder: Path, listed: LabelFiles, canvas: int, voxel_size: float | None) -> StructurePool:
    """`pool_from_folder` for a folder already listed (the folder is walked once)."""
    files = listed.maps
    if voxel_size is None:
        voxel_size = median_spacing(files)
    if voxel_size <= 0:
        raise LabelMapError(f"the voxel size of the pretraining grid must be positive; got {voxel_size}.")
    cubes: list[torch.Tensor] = []
    extents: list[float] = []
    ignore_label = dataset_ignore_label(folder)
    for path in files:
        found, sizes = structures_of(*read_label_map(path), canvas, voxel_size, ignore_label)
        cubes += found
        extents += sizes
    if not cubes:
        raise LabelMapError(
            f"the {len(files)} label maps in {folder} are all background (no label above 0); nothing to learn from."
        )
    return StructurePool(
        torch.stack(cubes)[:, None],
        torch.tensor(extents, dtype=torch.float32),
        (
            f"{len(files)} label maps in {folder.resolve()} ({len(cubes)} structures, grid spacing "
            f"{voxel_size:g}"
            + (f"; {listed.images_left_out} images beside them left out" if listed.images_left_out else "")
            + (f"; ignore label {ignore_label} left out" if ignore_label is not None else "")
            + ")",
        ),
    )


def _pool_of_masks(masks: list[np.ndarray], extents: list[float], canvas: int, source: str) -> StructurePool:
    cubes = []
    for mask in masks:
        box = ndimage.find_objects(mask.astype(np.int8))[0]
        cubes.append(fit_structure(mask[box], (1.0, 1.0, 1.0), canvas))
    return StructurePool(torch.stack(cubes)[:, None], torch.tensor(extents, dtype=torch.float32), (source,))


def pool_from_synthetic(
    count: int,
    seed: int,
    canvas: int = DEFAULT_CANVAS,
    families: Sequence[str] = PRETRAINING_FAMILIES,
    extent: tuple[float, float] = SYNTHETIC_EXTENT,
) -> StructurePool:
    """`count` structures of the pretraining shape families (`synthetic.families`), in turn, of random size.

    Their longest side is drawn log-uniformly from `extent` (voxels of the pretraining grid).
    """
    if count < 1:
        raise LabelMapError(f"--synthetic needs a positive number of structures, got {count}.")
    rng = np.random.default_rng(seed)
    masks = [family_mask(families[index % len(families)], canvas, rng) for index in range(count)]
    extents = np.exp(rng.uniform(np.log(extent[0]), np.log(extent[1]), size=count)).tolist()
    return _pool_of_masks(
        masks,
        extents,
        canvas,
        f"{count} synthetic structures ({', '.join(families)}; longest side {extent[0]:g}-{extent[1]:g} voxels; "
        f"seed {seed})",
    )


def pool_from_shape_kinds(count: int, seed: int, canvas: int = DEFAULT_CANVAS) -> StructurePool:
    """`count` structures of the synthetic benchmark's kinds (SHAPE_KINDS), in turn, at the benchmark's size.

    Pretraining's held-out maps are composed from these: kinds that no synthetic pretraining pool contains.
    """
    rng = np.random.default_rng(seed)
    side = (HELD_OUT_IMAGE_SIDE,) * 3
    masks = [structure_mask(SHAPE_KINDS[index % len(SHAPE_KINDS)], side, rng) for index in range(count)]
    masks = [mask if mask.any() else structure_mask("ellipsoid", side, rng) for mask in masks]
    extents = [float(max(s.stop - s.start for s in ndimage.find_objects(m.astype(np.int8))[0])) for m in masks]
    return _pool_of_masks(
        masks, extents, canvas, f"{count} structures of the benchmark's kinds ({', '.join(SHAPE_KINDS)}; seed {seed})"
    )


def training_and_held_out_pools(
    label_folders: Sequence[str | Path], synthetic: int, seed: int, canvas: int = DEFAULT_CANVAS
) -> tuple[StructurePool, StructurePool]:
    """The training pool and the pool the held-out stability maps are composed from.

    Training: the structures of the label folders and `synthetic` structures of the pretraining families.
    Held-out: structures of the synthetic benchmark's kinds, which no pretraining pool of synthetic
    families contains, drawn with a seed of their own, so the metric judges features on unseen shapes.
    """
    if not label_folders and synthetic <= 0:
        raise LabelMapError(
            "give label maps to pretrain on: --labels DIR (e.g. an nnU-Net labelsTr) and/or --synthetic N."
        )
    if len(set(map(str, label_folders))) < len(label_folders):
        raise LabelMapError("a --labels folder was given twice, so its label maps would count twice; give it once.")
    listed = {Path(folder): label_map_files(folder) for folder in label_folders}
    _refuse_overlapping(listed)
    # one grid for every folder, so that a structure's size in voxels is its physical size wherever it comes from
    maps = [path for files in listed.values() for path in files.maps]
    voxel_size = median_spacing(maps) if maps else None
    training = [_pool_of_label_maps(folder, files, canvas, voxel_size) for folder, files in listed.items()]
    training += [pool_from_synthetic(synthetic, seed, canvas)] if synthetic > 0 else []
    return StructurePool.concatenate(training), held_out_pool(seed, canvas)


def held_out_pool(seed: int, canvas: int = DEFAULT_CANVAS, count: int = 40) -> StructurePool:
    """`count` structures of the benchmark's kinds from a seed stream that no training pool uses."""
    return pool_from_shape_kinds(
        count, int(np.random.SeedSequence([seed, HELD_OUT_STREAM]).generate_state(1)[0]), canvas
    )
