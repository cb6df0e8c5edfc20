"""A tiny nnU-Net raw dataset for end-to-end tests: a bright ellipsoid (label 1) with a core (label 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json


def _case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    center = np.array([s / 2 for s in shape])[:, None, None, None] + rng.uniform(-3, 3, (3, 1, 1, 1))
    radii = np.array([s / 4 for s in shape])[:, None, None, None] * rng.uniform(0.7, 1.2, (3, 1, 1, 1))
    dist = np.sqrt((((grid - center) / radii) ** 2).sum(0))
    seg = (dist < 1).astype(np.uint8) + (dist < 0.5).astype(np.uint8)
    return seg, dist


def write_tiny_dataset(
    raw_dir: Path,
    dataset_id: int,
    num_cases: int = 4,
    num_channels: int = 1,
    shape=(24, 40, 40),
    seed: int = 0,
    channel_names: tuple[str, ...] | None = None,
) -> Path:
    """Write `Dataset{id}_Tiny` with `num_cases` training cases and one test case per channel layout.

    channel_names: dataset.json's names (default MR0, MR1, ...; a channel named CT gets CTNormalization).
    """
    rng = np.random.default_rng(seed)
    folder = Path(raw_dir) / f"Dataset{dataset_id:03d}_Tiny{num_channels}ch"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    spacing = (1.0, 0.8, 0.8)  # numpy (z, y, x)

    def write(array: np.ndarray, path: Path) -> None:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing[::-1])
        sitk.WriteImage(image, str(path))

    for i in range(num_cases + 1):
        seg, dist = _case(rng, shape)
        target = "imagesTs" if i == num_cases else "imagesTr"
        for c in range(num_channels):
            contrast = np.float32(100 if c == 0 else -60)
            image = contrast * np.exp(-dist) + rng.normal(0, 5, shape).astype(np.float32)
            write(image.astype(np.float32), folder / target / f"case{i:03d}_{c:04d}.nii.gz")
        if i < num_cases:
            write(seg, folder / "labelsTr" / f"case{i:03d}.nii.gz")
    generate_dataset_json(
        str(folder),
        channel_names=dict(enumerate(channel_names or [f"MR{c}" for c in range(num_channels)])),
        labels={"background": 0, "shell": 1, "core": 2},
        num_training_cases=num_cases,
        file_ending=".nii.gz",
        dataset_name=folder.name,
    )
    return folder
