"""What the end-to-end tests share: nnU-Net's folders and environment for its commands, in subprocesses, with
-tr DropGenTrainer_minimix_quick on tiny synthetic datasets, and the checks of their predictions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _tiny_dataset import write_tiny_dataset

from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.feature_extractors import get_extractor_spec

TRAINER = "DropGenTrainer_minimix_quick"
SHORT = "DropGenTrainer_minimix_demoTiny"
"""The same network as TRAINER, two iterations and no final validation: for runs whose result is their log."""
ONE_CH, TWO_CH = 991, 992
EMBEDDED = get_extractor_spec("minimix").weights
UNUSABLE = "/nonexistent/minimix.pth"
"""DROPGEN_WEIGHTS_MINIMIX for runs that must take the extractor from the checkpoint: resolving it would fail."""


class Workspace:
    """nnU-Net folders plus the environment each command runs with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for folder in (self.raw, self.preprocessed, self.results):
            folder.mkdir(parents=True, exist_ok=True)

    def env(
        self, weights: str | None = None, results: Path | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """`weights`: DROPGEN_WEIGHTS_MINIMIX (None: the embedded file); `extra`: more variables."""
        environment = dict(os.environ)  # offline, no DROPGEN_WEIGHTS_* (conftest)
        environment.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(results or self.results),
            nnUNet_extTrainer=str(trainer_dir()),
            DROPGEN_CACHE_DIR=str(self.root / "empty_cache"),
        )
        if weights is not None:
            environment["DROPGEN_WEIGHTS_MINIMIX"] = weights
        return {**environment, **(extra or {})}

    def run(
        self,
        *args: str,
        weights: str | None = UNUSABLE,
        results: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        command = [str(Path(sys.executable).parent / args[0]), *args[1:]]
        environment = self.env(weights, results, extra_env)
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
        return output

    def model_folder(self, dataset: int, results: Path | None = None, trainer: str = TRAINER) -> Path:
        return next((results or self.results).glob(f"Dataset{dataset}_*")) / f"{trainer}__nnUNetPlans__3d_fullres"

    def train(self, dataset: int, *extra: str, weights: str | None = None) -> str:
        return self.run(
            "nnUNetv2_train", str(dataset), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", *extra, weights=weights
        )

    def predict(self, dataset: int, out: Path, *extra: str, results: Path | None = None) -> Path:
        images = next(self.raw.glob(f"Dataset{dataset}_*")) / "imagesTs"
        self.run(
            "nnUNetv2_predict",
            "-i",
            str(images),
            "-o",
            str(out),
            "-d",
            str(dataset),
            "-c",
            "3d_fullres",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
            "-npp",
            "1",
            "-nps",
            "1",
            *extra,
            results=results,
        )
        return images


def make_workspace(root: Path, *datasets: int) -> Workspace:
    """Tiny datasets (5 cases; ONE_CH: 1 image channel, TWO_CH: 2), planned and preprocessed for 3d_fullres."""
    ws = Workspace(root)
    for dataset in datasets:
        write_tiny_dataset(ws.raw, dataset, num_cases=5, num_channels=2 if dataset == TWO_CH else 1)
    ws.run(
        "nnUNetv2_plan_and_preprocess",
        "-d",
        *map(str, datasets),
        "-c",
        "3d_fullres",
        "-np",
        "1",
        "-npfp",
        "1",  # nnU-Net's default is 8 fingerprint processes
        "--verify_dataset_integrity",
    )
    return ws


def check_predictions(images: Path, predictions: Path) -> None:
    """One label map per test image, on its grid, with nnU-Net's labels, and foreground somewhere.

    Foreground in *some* case, not in each: the quick schedule trains 8 iterations, which leave a small structure
    unfound in a case now and then (torch builds differ); a network broken by its features predicts none anywhere.
    """
    cases = sorted(p.name.replace("_0000.nii.gz", "") for p in images.glob("*_0000.nii.gz"))
    assert cases
    foreground = {}
    for case in cases:
        source = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
        predicted = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        assert predicted.GetSize() == source.GetSize()
        assert np.allclose(predicted.GetSpacing(), source.GetSpacing())
        assert np.allclose(predicted.GetOrigin(), source.GetOrigin())
        assert np.allclose(predicted.GetDirection(), source.GetDirection())
        labels = sitk.GetArrayFromImage(predicted)
        assert set(np.unique(labels)) <= {0, 1, 2}
        foreground[case] = int((labels > 0).sum())
    assert any(foreground.values()), f"only background predicted in every case: {foreground}"
