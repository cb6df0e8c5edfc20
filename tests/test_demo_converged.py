"""The converged models shipped for the demo: checked before use, rebuilt exactly, refused on data they do not suit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from nnunetv2_dropgen.cli.demo_command import DEFAULT_DATA, GPU_SHAPE
from nnunetv2_dropgen.demo.converged import (
    EXTRACTOR_PREFIX,
    ConvergedModelsError,
    converged_dir,
    install_converged_models,
    load_manifest,
)
from nnunetv2_dropgen.demo.figure import load_network
from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.synthetic.dataset import GENERATOR_VERSION
from nnunetv2_dropgen.weights import packaged_path


def _generation(shape: tuple[int, int, int]) -> dict[str, object]:
    """domains.json's parameters as the demo writes them (generator version, shape, spacing, labels)."""
    return {"generator_version": GENERATOR_VERSION, "shape": list(shape), "spacing": [1.0, 1.0, 1.0], "num_labels": 3}


def test_the_shipped_models_suit_the_cpu_demos_data_and_not_the_gpu_demos() -> None:
    manifest = load_manifest()
    assert manifest.mismatch(_generation(DEFAULT_DATA["shape"])) is None  # fails if the generator moved on
    reason = manifest.mismatch(_generation(GPU_SHAPE))
    assert reason is not None and "shape [48, 48, 48]" in reason and "[32, 32, 32]" in reason
    assert [m.label for m in manifest.models].count(manifest.baseline) == 1
    assert all(m.iterations >= 12_000 for m in manifest.models)


def test_shipped_files_hold_neither_optimizer_state_nor_extractor_weights() -> None:
    for model in load_manifest().models:
        checkpoint = torch.load(converged_dir() / f"{model.trainer}.pth", map_location="cpu", weights_only=True)
        assert "optimizer_state" not in checkpoint and checkpoint["trainer_name"] == model.trainer
        assert not any(key.startswith(EXTRACTOR_PREFIX) for key in checkpoint["network_weights"])


def test_installed_models_load_strictly_as_nnunet_predict_loads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    results = tmp_path / "Dataset501_DropGenDemo"
    specs = install_converged_models(results)
    manifest = load_manifest()
    assert [s.trainer for s in specs] == [m.trainer for m in manifest.models]
    for model in manifest.models:
        network = load_network(results / model.folder_name, "all")  # nnU-Net's predictor: strict load_state_dict
        if model.extractor is None:
            continue
        embedded = torch.load(packaged_path(get_extractor_spec(model.extractor).weights), weights_only=True)
        extractor = network.extractor.state_dict()
        assert extractor.keys() == embedded.keys()
        assert all(torch.equal(extractor[key], embedded[key]) for key in embedded)
    assert any(m.extractor is not None for m in manifest.models)


def test_a_damaged_shipped_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    shipped = tmp_path / "converged_models"
    shutil.copytree(converged_dir(), shipped)
    model = load_manifest(shipped).models[-1]
    damaged = shipped / f"{model.trainer}.pth"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConvergedModelsError, match="damaged.*Reinstall nnunetv2_dropgen") as caught:
        install_converged_models(tmp_path / "results", shipped)
    assert str(damaged) in str(caught.value)
    assert not (tmp_path / "results").exists()
