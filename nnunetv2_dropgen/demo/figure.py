"""What the demo adds to the evaluation figure: a few feature channels of the trained DropGen network's extractor.

The figure itself (slices of image, predictions and ground truth per test domain, Dice bars) is
`nnunetv2_dropgen.evaluation.figure`; this module only supplies the extra panels, computed from the same
image the row shows, so a reader sees what the segmentation network sees besides the image.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_dropgen.evaluation.evaluate import SlicePanels
from nnunetv2_dropgen.evaluation.test_sets import TestSet

FIGURE_FEATURES = 3
"""How many extractor feature channels the figure shows per domain."""


def load_network(model_folder: Path, fold: str) -> torch.nn.Module:
    """The trained network, restored the way nnUNetv2_predict restores it (the trainer found by its name).

    nnU-Net finds the trainer through nnUNet_extTrainer in this process's environment; the predictor prints
    CPU notices and every folder it searches, which is no news to a demo user.
    """
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        predictor = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,))
    return predictor.network


def feature_panels(model_folder: Path, fold: str, count: int = FIGURE_FEATURES) -> SlicePanels:
    """Panels "feature 1".."feature N" of the DropGen model in `model_folder`, loaded on first use."""
    network: list[torch.nn.Module] = []

    def panels(test_set: TestSet, image: np.ndarray, index: int) -> Sequence[tuple[str, np.ndarray]]:
        if not network:
            network.append(load_network(model_folder, fold))
        volume = torch.from_numpy(np.ascontiguousarray(image[:1], dtype=np.float32))[None]
        features = network[0].compute_features(volume)[0, :count, index].numpy()
        return [(f"feature {i + 1}", feature) for i, feature in enumerate(features)]

    return panels
