"""The synthetic domain-shift dataset: nnU-Net accepts it, it is reproducible, and each domain shifts
what it claims to shift, measured on rendered images rather than read from the configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_dropgen.cli import synthetic_command
from nnunetv2_dropgen.synthetic import (
    DEFAULT_DOMAINS,
    LABEL_KINDS,
    SHAPE_KINDS,
    SOURCE_DOMAIN,
    Domain,
    default_domains,
    generate_dataset,
    list_domains,
    random_label_map,
    render,
    structure_mask,
)

SMALL = {"num_train": 2, "num_test_per_domain": 1, "shape": (16, 20, 24)}


@pytest.fixture(autouse=True)
def nnunet_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net reads its folders from the environment; point them at scratch folders, never the user's."""
    base = tmp_path_factory.getbasetemp()
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(base / variable))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset with a non-cubic grid and anisotropic spacing, so axis-order mistakes would show."""
    return generate_dataset(
        tmp_path_factory.mktemp("raw"),
        dataset_id=7,
        name="Synth",
        num_train=3,
        num_test_per_domain=2,
        shape=(24, 32, 40),
        spacing=(2.0, 1.0, 0.75),
        seed=3,
    )


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): _read(p) for p in sorted(folder.rglob("*.nii.gz"))}


def test_dataset_passes_nnunet_integrity_check(dataset: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), num_processes=1)  # raises on any problem

    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "blob": 1, "shell": 2, "torus": 3}, "labels named by their kind"
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert len(list((dataset / "imagesTr").glob("*_0000.nii.gz"))) == 3
    for name in list_domains():
        assert sorted(p.name for p in (dataset / f"imagesTs_{name}").iterdir()) == [
            "test_000_0000.nii.gz",
            "test_001_0000.nii.gz",
        ]
        assert sorted(p.name for p in (dataset / f"labelsTs_{name}").iterdir()) == [
            "test_000.nii.gz",
            "test_001.nii.gz",
        ]
    described = json.loads((dataset / "domains.json").read_text())["domains"]
    assert described["lowres"]["downsample"] == 2 and set(described) == set(list_domains())


def test_nnunet_reads_the_intended_spacing_and_shape(dataset: Path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    images, properties = SimpleITKIO().read_images([str(dataset / "imagesTr" / "case_000_0000.nii.gz")])
    seg, seg_properties = SimpleITKIO().read_seg(str(dataset / "labelsTr" / "case_000.nii.gz"))
    assert images.shape == seg.shape == (1, 24, 32, 40)
    assert np.allclose(properties["spacing"], (2.0, 1.0, 0.75))
    assert np.allclose(seg_properties["spacing"], (2.0, 1.0, 0.75))
    assert images.dtype == np.float32 and np.isfinite(images).all()


def test_every_label_is_present_in_every_case(dataset: Path) -> None:
    label_files = sorted(dataset.glob("labelsT*/*.nii.gz"))
    assert len(label_files) == 3 + 2 * len(list_domains())
    for path in label_files:
        assert set(np.unique(_read(path))) == {0, 1, 2, 3}, path


def test_paired_test_cases_share_anatomy_across_domains(dataset: Path) -> None:
    source = _read(dataset / f"labelsTs_{SOURCE_DOMAIN}" / "test_000.nii.gz")
    for name in list_domains():
        assert np.array_equal(_read(dataset / f"labelsTs_{name}" / "test_000.nii.gz"), source)
    assert not np.array_equal(_read(dataset / f"labelsTs_{SOURCE_DOMAIN}" / "test_001.nii.gz"), source)


def test_same_seed_reproduces_and_another_seed_differs(tmp_path: Path) -> None:
    first = _arrays(generate_dataset(tmp_path / "a", seed=11, domains=["noisy"], **SMALL))
    again = _arrays(generate_dataset(tmp_path / "b", seed=11, domains=["noisy"], **SMALL))
    other = _arrays(generate_dataset(tmp_path / "c", seed=12, domains=["noisy"], **SMALL))
    assert first.keys() == again.keys() == other.keys() and len(first) == 2 * 2 + 2 * 2
    for key, array in first.items():
        assert array.tobytes() == again[key].tobytes(), key
        assert not np.array_equal(array, other[key]), key


def test_a_case_does_not_depend_on_how_many_cases_are_generated(tmp_path: Path) -> None:
    few = generate_dataset(tmp_path / "few", num_train=1, num_test_per_domain=1, shape=(16, 16, 16))
    many = generate_dataset(tmp_path / "many", num_train=3, num_test_per_domain=2, shape=(16, 16, 16))
    for relative in (
        "imagesTr/case_000_0000.nii.gz",
        "labelsTr/case_000.nii.gz",
        "imagesTs_bias/test_000_0000.nii.gz",
    ):
        assert np.array_equal(_read(few / relative), _read(many / relative)), relative


def _hollow_at_centre(mask: np.ndarray) -> bool:
    return not mask[tuple(np.round(ndimage.center_of_mass(mask)).astype(int))]


def test_structure_kinds_differ_in_topology() -> None:
    """Shell and torus are hollow at their centre of mass; ellipsoid and rounded box are solid there."""
    shape = (40, 40, 40)
    for kind in SHAPE_KINDS:
        for seed in range(4):
            mask = structure_mask(kind, shape, np.random.default_rng(seed))
            assert 0.002 * mask.size < mask.sum() < 0.5 * mask.size, kind
            if kind in ("shell", "torus"):
                assert _hollow_at_centre(mask), kind
            elif kind in ("ellipsoid", "rounded_box"):
                assert not _hollow_at_centre(mask), kind
    shell = structure_mask("shell", shape, np.random.default_rng(0))
    assert ndimage.binary_fill_holes(shell).sum() > 1.1 * shell.sum()  # an enclosed cavity
    with pytest.raises(ValueError, match="Unknown structure kind"):
        structure_mask("sphere", shape, np.random.default_rng(0))


def test_label_maps_vary_between_cases() -> None:
    maps = [random_label_map((32, 32, 32), 4, np.random.default_rng(seed)) for seed in range(6)]
    for labels in maps:
        assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3, 4}
    for label in range(1, 5):
        volumes = [int((labels == label).sum()) for labels in maps]
        assert len(set(volumes)) == len(volumes), (label, volumes)
        boxes = {tuple(map(str, ndimage.find_objects((labels == label).astype(int))[0])) for labels in maps}
        assert len(boxes) == len(maps), label


def test_label_kinds_fix_each_labels_shape() -> None:
    """With kinds, the last-drawn label (never overwritten) is always of its kind; without, kinds vary."""
    shape = (32, 32, 32)
    seeds = range(6)
    tori = [random_label_map(shape, 3, np.random.default_rng(s), kinds=("blob", "shell", "torus")) for s in seeds]
    boxes = [random_label_map(shape, 3, np.random.default_rng(s), kinds=("torus", "blob", "ellipsoid")) for s in seeds]
    assert all(_hollow_at_centre(labels == 3) for labels in tori)
    assert not any(_hollow_at_centre(labels == 3) for labels in boxes)
    free = [random_label_map(shape, 3, np.random.default_rng(s)) for s in range(12)]
    assert 0 < sum(_hollow_at_centre(labels == 3) for labels in free) < len(free)
    for bad in (("blob", "shell"), ("blob", "shell", "sphere")):
        with pytest.raises(ValueError, match="one structure kind per label"):
            random_label_map(shape, 3, np.random.default_rng(0), kinds=bad)


def test_dataset_labels_keep_their_kind_in_every_case(dataset: Path) -> None:
    """A label is recognisable by its shape in every case and every domain (LABEL_KINDS: label 3 is a torus)."""
    assert LABEL_KINDS[2] == "torus"
    label_files = sorted(dataset.glob("labelsT*/*.nii.gz"))
    assert len(label_files) >= 3 + 2 * len(list_domains())
    for path in label_files:
        assert _hollow_at_centre(_read(path) == 3), path


def test_dataset_refuses_more_labels_than_structure_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"num_labels must be between 1 and {len(LABEL_KINDS)}"):
        generate_dataset(tmp_path, num_labels=len(LABEL_KINDS) + 1, **SMALL)
    assert not any(tmp_path.iterdir())


# --- domains, measured on renders of one label map ---------------------------------------------------

LABELS = random_label_map((40, 40, 40), 3, np.random.default_rng(1))


def _render(name: str, seed: int, **changes: float) -> np.ndarray:
    return render(LABELS, dataclasses.replace(DEFAULT_DOMAINS[name], **changes), np.random.default_rng(seed))


def _class_means(image: np.ndarray) -> np.ndarray:
    return np.array([image[LABELS == k].mean() for k in range(4)])


def _interior(label: int, margin: int = 2) -> np.ndarray:
    return ndimage.binary_erosion(LABELS == label, iterations=margin)


def test_inverted_contrast_is_anticorrelated_with_source() -> None:
    r = np.corrcoef(_class_means(_render("source", 0)), _class_means(_render("inverted", 1)))[0, 1]
    assert r < -0.9


def test_noisy_has_much_more_voxel_noise() -> None:
    def residual_std(image: np.ndarray) -> float:
        residual = image - ndimage.gaussian_filter(image, 1.0)
        inside = np.any([_interior(k) for k in range(4)], axis=0)
        return float(residual[inside].std())

    assert residual_std(_render("noisy", 1)) > 4 * residual_std(_render("source", 0))


def test_bias_adds_low_frequency_variation() -> None:
    def low_frequency_variation(image: np.ndarray) -> float:
        """Coefficient of variation of the background after masked smoothing (structures excluded)."""
        mask = _interior(0, margin=1).astype(np.float64)
        weight = ndimage.gaussian_filter(mask, 4.0)
        smooth = ndimage.gaussian_filter(image * mask, 4.0) / np.maximum(weight, 1e-6)
        values = smooth[(weight > 0.5) & (mask > 0)]
        return float(values.std() / values.mean())

    assert low_frequency_variation(_render("bias", 1)) > 3 * low_frequency_variation(_render("source", 0))


def test_lowres_removes_high_frequencies() -> None:
    def high_frequency_energy(image: np.ndarray) -> float:
        return float(np.abs(ndimage.laplace(image.astype(np.float64))).mean())

    sharp = high_frequency_energy(_render("source", 0, noise_std=0.0))
    assert high_frequency_energy(_render("lowres", 1, noise_std=0.0)) < 0.4 * sharp


def test_scaled_changes_units_by_the_configured_factor() -> None:
    domain = DEFAULT_DOMAINS["scaled"]
    source, scaled = _render("source", 0), _render("scaled", 1)
    spread = np.subtract(*np.percentile(scaled, [99, 1])) / np.subtract(*np.percentile(source, [99, 1]))
    mean = (scaled.mean() - domain.intensity_offset) / source.mean()
    assert spread == pytest.approx(domain.intensity_scale, rel=0.1)
    assert mean == pytest.approx(domain.intensity_scale, rel=0.1)
    assert scaled.max() > 100 * source.max()


def test_remapped_contrast_is_non_monotonic() -> None:
    source, remapped = _class_means(_render("source", 0)), _class_means(_render("remapped", 1))
    assert not np.array_equal(np.argsort(source), np.argsort(remapped))
    steps = np.diff(remapped[np.argsort(source)])  # remapped means in order of source brightness
    assert (steps > 0).any() and (steps < 0).any()  # neither an increasing nor a decreasing mapping


@pytest.mark.parametrize("name", list(DEFAULT_DOMAINS))
def test_every_domain_has_within_class_texture(name: str) -> None:
    image = _render(name, 0, noise_std=0.0)
    for label in range(4):
        values = image[_interior(label)]
        assert values.std() > 0.01 * abs(values.mean()), label


def test_default_domains_follow_the_number_of_labels() -> None:
    for num_labels in (1, 2, 5):
        domains = default_domains(num_labels)
        assert list(domains) == list_domains()
        assert all(len(d.intensities) == num_labels + 1 for d in domains.values())
        assert domains["remapped"].intensities != domains[SOURCE_DOMAIN].intensities
    with pytest.raises(ValueError, match="defines intensities for 0..1"):
        render(LABELS, Domain("two", (0.0, 1.0)), np.random.default_rng(0))


# --- reuse, overwrite and argument errors ------------------------------------------------------------


def test_existing_dataset_is_reused_or_refused(tmp_path: Path) -> None:
    folder = generate_dataset(tmp_path, domains=["bias"], **SMALL)
    marker = folder / "imagesTr" / "case_000_0000.nii.gz"
    stamp = marker.stat().st_mtime_ns
    assert generate_dataset(tmp_path, domains=["bias"], **SMALL) == folder
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten

    with pytest.raises(ValueError, match=r"different parameters \(seed\).*overwrite=True"):
        generate_dataset(tmp_path, domains=["bias"], seed=1, **SMALL)
    generate_dataset(tmp_path, domains=["bias"], seed=1, overwrite=True, **SMALL)
    assert json.loads((folder / "domains.json").read_text())["parameters"]["seed"] == 1

    (tmp_path / "Dataset501_Other").mkdir()
    with pytest.raises(ValueError, match="already uses dataset id 501"):
        generate_dataset(tmp_path, domains=["bias"], seed=1, **SMALL)


def test_incomplete_folder_is_not_mistaken_for_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "Dataset501_DropGenSynthetic" / "imagesTr").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no domains.json"):
        generate_dataset(tmp_path, **SMALL)


def test_a_generation_that_fails_half_way_leaves_nothing_and_keeps_the_old_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written aside and moved into place when complete: no half-written folder that the next run refuses."""
    from nnunetv2_dropgen.synthetic import dataset as dataset_module

    folder = generate_dataset(tmp_path, domains=["bias"], **SMALL)
    before = (folder / "domains.json").read_text()
    rendered = []

    def render_then_fail(*args: object, **kwargs: object) -> np.ndarray:
        rendered.append(1)
        if len(rendered) > 2:  # some cases written, then the disk is full
            raise OSError("No space left on device")
        return real_render(*args, **kwargs)

    real_render = dataset_module.render
    monkeypatch.setattr(dataset_module, "render", render_then_fail)
    with pytest.raises(OSError, match="No space left"):
        generate_dataset(tmp_path, domains=["bias"], seed=1, overwrite=True, **SMALL)
    assert (folder / "domains.json").read_text() == before  # the old dataset, untouched
    with pytest.raises(OSError, match="No space left"):
        generate_dataset(tmp_path, dataset_id=502, domains=["bias"], **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no partial, no Dataset502 folder
    monkeypatch.undo()
    assert generate_dataset(tmp_path, dataset_id=502, domains=["bias"], **SMALL).is_dir()


def test_unknown_or_mismatched_domains_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown domain 'mri'; the built-in"):
        generate_dataset(tmp_path, domains=["mri"], **SMALL)
    with pytest.raises(ValueError, match=r"'mr_t1' without the cross-modality case \(cross_modality=True"):
        generate_dataset(tmp_path, domains=["mr_t1"], **SMALL)
    with pytest.raises(ValueError, match="needs 4"):
        generate_dataset(tmp_path, domains=[Domain("custom", (0.0, 1.0))], **SMALL)


def test_custom_domain_gets_its_own_test_folders(tmp_path: Path) -> None:
    custom = Domain("dark", (0.05, 0.1, 0.15, 0.2), noise_std=0.01)
    folder = generate_dataset(tmp_path, domains=[custom], **SMALL)
    assert sorted(p.name for p in folder.glob("imagesTs_*")) == ["imagesTs_dark", "imagesTs_source"]
    assert _read(folder / "imagesTs_dark" / "test_000_0000.nii.gz").max() < 0.4


# --- command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2_dropgen")
    synthetic_command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(
        [
            "make-synthetic",
            "--out",
            str(tmp_path),
            "--dataset-id",
            "42",
            "--name",
            "Cli",
            "--num-train",
            "2",
            "--num-test",
            "1",
            "--shape",
            "16",
            "16",
            "20",
            "--seed",
            "5",
            "--domains",
            "inverted",
            "lowres",
        ]
    )
    assert args.func(args) == 0
    folder = tmp_path / "Dataset042_Cli"
    assert str(folder) in capsys.readouterr().out
    assert sorted(p.name for p in folder.glob("imagesTs_*")) == [
        "imagesTs_inverted",
        "imagesTs_lowres",
        "imagesTs_source",
    ]
    assert _read(folder / "imagesTr" / "case_001_0000.nii.gz").shape == (16, 16, 20)
    assert json.loads((folder / "domains.json").read_text())["parameters"]["seed"] == 5


def test_cli_out_defaults_to_nnunet_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    args = _parser().parse_args(["make-synthetic", "--num-train", "1", "--num-test", "0", "--shape", "16", "16", "16"])
    assert args.func(args) == 0
    assert (tmp_path / "Dataset501_DropGenSynthetic" / "dataset.json").is_file()

    monkeypatch.delenv("nnUNet_raw")
    with pytest.raises(SystemExit):
        _parser().parse_args(["make-synthetic"])


def tiny_cli_arguments(out: Path) -> list[str]:
    """make-synthetic writing one training case of 16^3 and no test case into `out`."""
    return ["make-synthetic", "--out", str(out), "--num-train", "1", "--num-test", "0", "--shape", "16", "16", "16"]


def test_cli_names_per_image_plans_for_cross_modality_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Following only nnU-Net's planning would train with CTNormalization and saturate the MR test domains."""
    base = tiny_cli_arguments(tmp_path)
    args = _parser().parse_args([*base, "--dataset-id", "7", "--cross-modality"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "nnunetv2_dropgen plans -d 7 --per-image-normalization" in out
    assert "nnUNetv2_train 7 3d_fullres FOLD -tr DropGenTrainer -p nnUNetPlansPerImageNorm" in out
    args = _parser().parse_args([*base, "--dataset-id", "8"])
    assert args.func(args) == 0
    assert "--per-image-normalization" not in capsys.readouterr().out, "CT statistics are right for CT test images"


def test_cli_reports_refused_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tiny_cli_arguments(tmp_path)
    args = _parser().parse_args(base)
    assert args.func(args) == 0
    args = _parser().parse_args([*base, "--seed", "9"])
    assert args.func(args) == 1
    assert "overwrite" in capsys.readouterr().err


def test_dataset_ids_nnunet_would_confuse_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net finds dataset 901 by the prefix Dataset901, so Dataset9010 is found as 901 too; and it looks ids up
    in nnUNet_preprocessed and nnUNet_results as well as in nnUNet_raw."""
    with pytest.raises(ValueError, match="between 1 and 999"):
        generate_dataset(tmp_path, dataset_id=9010, **SMALL)
    results = tmp_path / "results"
    (results / "Dataset502_Other").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    with pytest.raises(ValueError, match="Dataset502_Other already uses dataset id 502"):
        generate_dataset(tmp_path / "raw", dataset_id=502, **SMALL)
    assert generate_dataset(tmp_path / "demo_raw", dataset_id=502, **SMALL).is_dir(), "a folder of its own"
    (results / "Dataset503_DropGenSynthetic").mkdir()  # its own results: fine
    assert generate_dataset(tmp_path / "raw", dataset_id=503, **SMALL).is_dir()


def test_cli_notes_what_small_datasets_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tiny_cli_arguments(tmp_path)
    args = _parser().parse_args([*base, "--num-labels", "1", "--domains", "remapped"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "fewer than nnU-Net's 5 cross-validation folds need: train fold all" in out
    assert "remapped swaps structure and background, as inverted does" in out
    args = _parser().parse_args(
        [*base, "--num-train", "5", "--dataset-id", "9", "--cross-modality", "--num-labels", "2"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "mr_t1 and mr_t2 order the structures alike" in out and "cross-validation folds" not in out


def test_cross_modality_data_train_on_ct_and_test_on_mr_like_domains(tmp_path: Path) -> None:
    """A CT source in Hounsfield-like units with its channel named CT (so nnU-Net plans CTNormalization) and
    MR-like targets that no affine intensity map of the CT reaches: only shape carries a label across."""
    folder = generate_dataset(tmp_path, dataset_id=7, cross_modality=True, **SMALL)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert sorted(p.name for p in folder.glob("imagesTs_*")) == ["imagesTs_ct", "imagesTs_mr_t1", "imagesTs_mr_t2"]
    description = json.loads((folder / "domains.json").read_text())
    assert description["source_domain"] == "ct"

    def read(path: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    train_ct = read(next((folder / "imagesTr").iterdir()))
    assert -400 < float(train_ct.min()) < -100 and 500 < float(train_ct.max()) < 900, "Hounsfield-like range"
    labels = read(folder / "labelsTs_ct" / "test_000.nii.gz")
    means = {}
    for domain in ("ct", "mr_t1", "mr_t2"):
        assert np.array_equal(read(folder / f"labelsTs_{domain}" / "test_000.nii.gz"), labels), "paired anatomy"
        image = read(folder / f"imagesTs_{domain}" / "test_000_0000.nii.gz")
        means[domain] = [float(image[labels == k].mean()) for k in range(4)]
    assert min(means["mr_t1"]) > 0 and min(means["mr_t2"]) > 0, "MR-like intensities are positive"
    ct_order = np.argsort(means["ct"])
    for domain in ("mr_t1", "mr_t2"):
        assert not np.array_equal(np.argsort(means[domain]), ct_order), f"{domain} orders the structures as CT does"
        assert not np.array_equal(np.argsort(means[domain]), ct_order[::-1]), f"{domain} is an inverted CT"
