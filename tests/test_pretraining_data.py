"""Pretraining's data and supervision as anatomix has them, each step checked for what it changes.

Composition (20-40 structures, wrap-around tiling, shear, median filter), structures that keep their physical
size (also from TotalSegmentator's one-structure-per-file folders, read recursively), the two appearance
stages with MR artefacts from MONAI and TorchIO, the shape families that keep the benchmark's kinds out of
pretraining, anatomix's six supervised taps, and the learning-rate schedule. CPU only, seconds each.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _core_helpers import one_torch_thread  # noqa: F401  (module-wide fixture)
from scipy import ndimage

from nnunetv2_dropgen.feature_extractors import ANATOMIX, MINIMIX, AnatomixUNet
from nnunetv2_dropgen.pretraining import (
    AppearanceSettings,
    CompositionSettings,
    LabelMapError,
    compose_label_maps,
    pool_from_folder,
    pool_from_synthetic,
    render_views,
)
from nnunetv2_dropgen.pretraining.composition import _structure_grid, _to_structure_frames, median_filter
from nnunetv2_dropgen.pretraining.loop import (
    autocast_dtype,
    cpu_has_native_bf16,
    learning_rate_factor,
    memory_format,
)
from nnunetv2_dropgen.pretraining.views import _apply_artefact, _library_transform, _percentile_normalized
from nnunetv2_dropgen.synthetic import SHAPE_KINDS
from nnunetv2_dropgen.synthetic.families import PRETRAINING_FAMILIES, family_mask


@pytest.fixture(scope="module")
def pool():
    return pool_from_synthetic(40, seed=0)


# ---------------------------------------------------------------------------------------------------------
# shape families and pools


def test_pretraining_families_never_include_the_benchmark_kinds() -> None:
    assert not set(PRETRAINING_FAMILIES) & set(SHAPE_KINDS)
    rng = np.random.default_rng(0)
    for family in PRETRAINING_FAMILIES:
        masks = [family_mask(family, 24, rng) for _ in range(3)]
        assert all(mask.shape == (24, 24, 24) and mask.sum() >= 8 for mask in masks), family
        assert not np.array_equal(masks[0], masks[1]), f"{family}: every draw is a new structure"
    with pytest.raises(ValueError, match="unknown shape family 'torus'"):
        family_mask("torus", 24, rng)


def test_family_shapes_differ_measurably() -> None:
    """Tubes and sheets are thin (most voxels at the surface), noise blobs are bulky: not one shape in disguise."""
    rng = np.random.default_rng(1)

    def surface_share(family: str) -> float:
        shares = []
        for _ in range(4):
            mask = family_mask(family, 32, rng)
            shares.append(1 - ndimage.binary_erosion(mask).sum() / mask.sum())
        return float(np.mean(shares))

    assert surface_share("sheet") > 0.6 and surface_share("tube") > 0.4
    assert surface_share("noise_blob") < 0.3


def _write_structure(path: Path, extent_voxels: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[tuple(slice(2, 2 + n) for n in extent_voxels)] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(tuple(reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_structures_keep_their_physical_size_from_one_structure_per_file_folders(tmp_path: Path) -> None:
    """TotalSegmentator's layout: a folder per case, one file per structure. Each file's foreground is the
    structure itself, so a size relative to the map would make every structure the same size."""
    root = tmp_path / "totalsegmentator"
    _write_structure(root / "s0001" / "segmentations" / "liver.nii.gz", (30, 30, 30), (1.5, 1.5, 1.5))  # 45 mm
    _write_structure(root / "s0002" / "segmentations" / "vertebra.nii.gz", (5, 6, 6), (1.5, 1.5, 1.5))  # 9 mm
    _write_structure(root / "s0003" / "segmentations" / "kidney.nii.gz", (6, 16, 16), (3.0, 1.0, 1.0))  # 18 mm
    pool = pool_from_folder(root, canvas=16)
    assert len(pool) == 3, "label maps in subfolders are read"
    by_size = sorted(pool.extents.tolist())
    # the median spacing (1.5 mm) is the grid: 9 mm -> 6 voxels, 18 mm -> 12, 45 mm -> 30
    assert by_size == pytest.approx([6.0, 12.0, 30.0])
    explicit = pool_from_folder(root, canvas=16, voxel_size=3.0)
    assert sorted(explicit.extents.tolist()) == pytest.approx([3.0, 6.0, 15.0])


def test_label_folders_of_different_spacings_share_one_grid(tmp_path: Path) -> None:
    """Two --labels folders: a 16 mm cube at 1 mm in one and at 0.5 mm in the other is the same structure. Each
    folder on its own median spacing made the second twice as large."""
    from nnunetv2_dropgen.pretraining.pool import training_and_held_out_pools

    _write_structure(tmp_path / "coarse" / "a.nii.gz", (16, 16, 16), (1.0, 1.0, 1.0))
    _write_structure(tmp_path / "fine" / "b.nii.gz", (32, 32, 32), (0.5, 0.5, 0.5))
    training, _ = training_and_held_out_pools([tmp_path / "coarse", tmp_path / "fine"], 0, seed=0, canvas=16)
    first, second = training.extents.tolist()
    assert first == pytest.approx(second)


def test_a_dataset_root_gives_its_label_maps_not_its_images(tmp_path: Path) -> None:
    """nnU-Net's dataset root (imagesTr beside labelsTr) and TotalSegmentator's (`ct.nii.gz` beside
    `segmentations/`): the images are left out. An MR stored as integers read as a label map made every
    intensity a structure."""
    rng = np.random.default_rng(0)
    mr = sitk.GetImageFromArray(rng.integers(0, 3000, size=(20, 20, 20)).astype(np.int16))
    root = tmp_path / "Dataset001_Mr"
    (root / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(mr, str(root / "imagesTr" / "case_000_0000.nii.gz"))
    _write_structure(root / "labelsTr" / "case_000.nii.gz", (6, 6, 6), (1.0, 1.0, 1.0))
    pool = pool_from_folder(root, canvas=16)
    assert len(pool) == 1 and "1 images beside them left out" in pool.sources[0]
    total = tmp_path / "totalsegmentator"
    _write_structure(total / "s0001" / "segmentations" / "liver.nii.gz", (6, 6, 6), (1.0, 1.0, 1.0))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 8), -1000, np.int16)), str(total / "s0001" / "ct.nii.gz"))
    assert len(pool_from_folder(total, canvas=16)) == 1
    with pytest.raises(LabelMapError, match="is nnU-Net's image folder; --labels takes label maps"):
        pool_from_folder(root / "imagesTr", canvas=16)
    scans = tmp_path / "scans"
    scans.mkdir()
    sitk.WriteImage(mr, str(scans / "case_000_0000.nii.gz"))
    with pytest.raises(LabelMapError, match="more than 1000 distinct values, so it is an image"):
        pool_from_folder(scans, canvas=16)
    smooth = ndimage.gaussian_filter(rng.random((24, 24, 24)), 2)
    eight_bit = np.round((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)  # 256 values at most
    sitk.WriteImage(sitk.GetImageFromArray(eight_bit), str(scans / "case_000_0000.nii.gz"))
    with pytest.raises(LabelMapError, match=r"looks like an image stored as integers.*\d+% of its neighbouring"):
        pool_from_folder(scans, canvas=16)
    thin = np.zeros((24, 24, 24), np.uint8)
    thin[:, 11:13, 11:13], thin[4:20, 5, 4:20] = 1, 2  # a tube and a sheet: thin structures are still regions
    sitk.WriteImage(sitk.GetImageFromArray(thin), str(scans / "case_000_0000.nii.gz"))
    assert len(pool_from_folder(scans, canvas=16)) == 2
    only_images = tmp_path / "only_images"
    (only_images / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(mr, str(only_images / "imagesTr" / "case_000_0000.nii.gz"))
    with pytest.raises(LabelMapError, match="1 files were left out as images"):
        pool_from_folder(only_images, canvas=16)


def test_the_ignore_label_of_sparse_annotations_is_no_structure(tmp_path: Path) -> None:
    """nnU-Net's ignore label marks unannotated voxels: read from the dataset.json beside labelsTr, it is left out
    (it was learnt as a 'shape', usually the largest of all)."""
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[2:8, 2:8, 2:8] = 1
    labels[10:, :, :] = 2  # unannotated
    root = tmp_path / "Dataset004_Sparse"
    (root / "labelsTr").mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(root / "labelsTr" / "case_000.nii.gz"))
    assert len(pool_from_folder(root / "labelsTr", canvas=16)) == 2
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "ignore": 2}}))
    pool = pool_from_folder(root / "labelsTr", canvas=16)
    assert len(pool) == 1 and "ignore label 2 left out" in pool.sources[0]
    assert len(pool_from_folder(root, canvas=16)) == 1


def test_symlinked_label_folders_are_followed_and_overlapping_ones_refused(tmp_path: Path) -> None:
    """A dataset root whose labelsTr is a symlink (data kept elsewhere) is read; a folder given twice, or with a
    folder inside it, would count its maps twice."""
    from nnunetv2_dropgen.pretraining.pool import training_and_held_out_pools

    _write_structure(tmp_path / "elsewhere" / "case_000.nii.gz", (6, 6, 6), (1.0, 1.0, 1.0))
    root = tmp_path / "Dataset002_Linked"
    root.mkdir()
    (root / "labelsTr").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "labelsTr" / "loop").symlink_to(root, target_is_directory=True)  # a cycle ends
    assert len(pool_from_folder(root, canvas=16)) == 1
    with pytest.raises(LabelMapError, match="given twice"):
        training_and_held_out_pools([root, root], 0, seed=0, canvas=16)
    for folders in ([tmp_path / "elsewhere", root / "labelsTr"], [root, tmp_path / "elsewhere"]):
        with pytest.raises(LabelMapError, match="overlap .* so their label maps would count twice"):
            training_and_held_out_pools(folders, 0, seed=0, canvas=16)


def test_composed_structures_keep_their_relative_size(pool) -> None:
    """A structure twice as large in the pool covers about eight times the voxels once placed."""
    small = dataclasses.replace(pool, extents=torch.full_like(pool.extents, 8.0))
    large = dataclasses.replace(pool, extents=torch.full_like(pool.extents, 16.0))
    settings = CompositionSettings(structures=(1, 1), wrap=False, median_filter=False, foreground_probability=0.0)
    cover = [
        float((compose_label_maps(p, 16, (48, 48, 48), torch.Generator().manual_seed(0), settings) > 0).sum())
        for p in (small, large)
    ]
    assert 5 < cover[1] / cover[0] < 11, cover


# ---------------------------------------------------------------------------------------------------------
# composition


def test_default_composition_is_anatomix_crowded_and_fragmented(pool) -> None:
    generator = torch.Generator().manual_seed(0)
    maps = compose_label_maps(pool, 4, (48, 48, 48), generator)
    visible = []
    for label_map in maps:
        labels = torch.unique(label_map)
        visible.append(len(labels))
        pieces = sum(ndimage.label((label_map[0] == value).numpy())[1] for value in labels[1:].tolist())
        assert pieces > len(labels), "wrap-around tiling and overwriting fragment structures"
    assert np.mean(visible) >= 15, f"20-40 structures are drawn; most must stay visible, got {visible}"


def test_wrap_around_tiling_is_periodic_over_the_patch() -> None:
    """The grid is the structure frame's coordinates folded onto one period (the patch's longest side)."""
    settings, patch, extent = CompositionSettings(wrap=True), (24, 32, 40), 20.0
    grid = _structure_grid(torch.full((2,), extent), patch, torch.Generator().manual_seed(0), settings)
    matrix, centres = _to_structure_frames(2, patch, torch.Generator().manual_seed(0), settings)
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) + 0.5 for n in patch], indexing="ij")
    voxels = torch.stack([x, y, z], dim=-1)  # grid_sample's x, y, z order
    unwrapped = torch.einsum("bij,bdhwj->bdhwi", matrix, voxels[None] - centres[:, None, None, None, :])
    folds = (unwrapped - grid * extent / 2) / max(patch)
    torch.testing.assert_close(folds, folds.round(), atol=1e-3, rtol=0)
    assert bool((folds.round() != 0).any()), "some voxels lie in another period and are folded back"
    assert bool((grid.abs() <= max(patch) / extent + 1e-4).all())


def test_affines_have_shear_scale_and_reflection() -> None:
    generator = torch.Generator().manual_seed(0)
    sheared, _ = _to_structure_frames(256, (32, 32, 32), generator, CompositionSettings())
    rigid, _ = _to_structure_frames(
        256, (32, 32, 32), torch.Generator().manual_seed(0), CompositionSettings(scale=(1.0, 1.0), shear=0.0)
    )
    identity = torch.eye(3).expand(256, 3, 3)
    torch.testing.assert_close(rigid @ rigid.transpose(1, 2), identity, atol=1e-5, rtol=0)
    assert float((sheared @ sheared.transpose(1, 2) - identity).abs().amax(dim=(1, 2)).min()) > 0.05
    assert bool((torch.linalg.det(rigid) < 0).any()) and bool((torch.linalg.det(rigid) > 0).any()), "reflections"


def test_median_filter_is_scipys_and_removes_single_voxels() -> None:
    labels = torch.randint(0, 5, (2, 1, 12, 10, 14), generator=torch.Generator().manual_seed(0))
    expected = ndimage.median_filter(labels.numpy(), size=(1, 1, 3, 3, 3), mode="nearest")
    assert torch.equal(median_filter(labels), torch.from_numpy(expected))
    speck = torch.zeros((1, 1, 9, 9, 9), dtype=torch.long)
    speck[0, 0, 4, 4, 4] = 3
    assert int(median_filter(speck).max()) == 0


# ---------------------------------------------------------------------------------------------------------
# appearance


def _edges_volume() -> torch.Tensor:
    """A bright cube with a little texture on a dark background, in [0, 1] (MONAI's default spike intensity
    scales with the mean log k-space magnitude, which a noiseless binary volume makes vanish)."""
    volume = torch.zeros((1, 1, 32, 32, 32))
    volume[:, :, 8:24, 8:24, 8:24] = 0.8
    return volume + 0.1 * torch.rand(volume.shape, generator=torch.Generator().manual_seed(0))


def _high_frequency_share(volume: torch.Tensor) -> float:
    spectrum = torch.fft.fftshift(torch.fft.fftn(volume[0, 0])).abs() ** 2
    centre = spectrum[8:24, 8:24, 8:24].sum()
    return float(1 - centre / spectrum.sum())


@pytest.mark.parametrize("name", ["spikes", "gibbs", "sharpen", "motion"])
def test_each_library_artefact_changes_the_image_and_follows_the_seed(name: str) -> None:
    volumes = _edges_volume().repeat(2, 1, 1, 1, 1)
    transform = _library_transform(name, (0.3, 0.6)) if name == "gibbs" else _library_transform(name)
    first = _apply_artefact(volumes, transform, 1.0, torch.Generator().manual_seed(0))
    again = _apply_artefact(volumes, transform, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(first, again), "the same seed must give the same artefact"
    assert float((first - volumes).abs().mean()) > 1e-4, f"{name} left the image unchanged"
    assert torch.equal(_apply_artefact(volumes, transform, 0.0, torch.Generator().manual_seed(0)), volumes)
    if name == "gibbs":  # k-space truncation: less high-frequency energy, ringing beside the edges
        assert _high_frequency_share(first[:1]) < 0.8 * _high_frequency_share(volumes[:1])
    if name == "sharpen":
        assert float(first.diff(dim=-1).abs().max()) > 1.2 * float(volumes.diff(dim=-1).abs().max())
    if name == "spikes":  # one bright k-space point: a stripe pattern over the whole volume
        changed = (first[0] - volumes[0]).abs() > 1e-4
        assert float(changed.float().mean()) > 0.5


def test_second_stage_adds_strong_noise_and_normalizes_by_a_percentile(pool) -> None:
    labels = compose_label_maps(pool, 8, (32, 32, 32), torch.Generator().manual_seed(0))
    first_only = AppearanceSettings(second_stage=False)
    noisy = AppearanceSettings(noise_probability=1.0, noise_std=(0.2, 0.25), motion_probability=0.0)

    def roughness(settings: AppearanceSettings) -> float:
        views = render_views(labels, torch.Generator().manual_seed(1), settings)
        return float(views.diff(dim=-1).abs().mean())

    assert roughness(noisy) > 1.5 * roughness(first_only)
    bright = torch.rand((2, 1, 16, 16, 16))
    bright[0, 0, 0, 0, 0] = 50.0  # one outlier voxel must not set the scale
    normalized = _percentile_normalized(bright, 99.0)
    assert float(normalized.max()) == 1.0 and float(normalized[0].median()) > 0.3


# ---------------------------------------------------------------------------------------------------------
# supervision and training settings


def test_taps_are_anatomix_six_convolutions_before_normalization() -> None:
    network = AnatomixUNet(MINIMIX).eval()
    assert network._taps == [27, 31, 38, 45, 52], "anatomix's --nce_layers 27,31,38,45,52 (then the output, 65)"
    assert AnatomixUNet(ANATOMIX)._taps == network._taps
    captured = {}
    hooks = [
        network.model[i].register_forward_hook(lambda m, _i, out, i=i: captured.__setitem__(i, out))
        for i in network._taps
    ]
    x = torch.rand((1, 1, 32, 32, 32))
    with torch.no_grad():
        levels = network.forward_levels(x)
        output = network(x)
    for hook in hooks:
        hook.remove()
    assert [tuple(level.shape[2:]) for level in levels] == [
        (4,) * 3,
        (2,) * 3,
        (4,) * 3,
        (8,) * 3,
        (16,) * 3,
        (32,) * 3,
    ]
    for index, level in zip(network._taps, levels, strict=False):
        assert isinstance(network.model[index], torch.nn.Conv3d) and torch.equal(level, captured[index])
        assert float(level.min()) < 0, "a tap before normalization and ReLU takes negative values too"
    torch.testing.assert_close(levels[-1], output)


def test_learning_rate_is_kept_then_decays_linearly() -> None:
    factors = [learning_rate_factor(step, 100, 0.2) for step in range(100)]
    assert factors[:80] == [1.0] * 80
    assert factors[80] == pytest.approx(1 - 1 / 21) and factors[99] == pytest.approx(1 / 21)
    assert all(a > b for a, b in zip(factors[79:], factors[80:], strict=False)) and min(factors) > 0
    assert [learning_rate_factor(s, 100, 0.0) for s in (0, 99)] == [1.0, 1.0]


def test_cpu_precision_and_memory_format_follow_what_was_measured() -> None:
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert autocast_dtype("auto", cpu) == expected and autocast_dtype("fp32", cpu) is None
    assert memory_format(cpu, torch.bfloat16, (48, 48, 48)) == torch.channels_last_3d
    assert memory_format(cpu, torch.bfloat16, (32, 32, 32)) == torch.contiguous_format
    assert memory_format(cpu, None, (64, 64, 64)) == torch.contiguous_format
