"""The models shipped for the demo: checked before use, rebuilt exactly, refused on data they do not suit."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from nnunetv2_dropgen.cli.demo_command import DEFAULT_DATA, GPU_SHAPE
from nnunetv2_dropgen.demo import shipped
from nnunetv2_dropgen.demo.figure import load_network
from nnunetv2_dropgen.demo.shipped import (
    EXTRACTOR_PREFIX,
    ShippedModelsError,
    install_shipped_models,
    load_manifest,
    shipped_dir,
)
from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.synthetic import generate_dataset, read_generation
from nnunetv2_dropgen.weights import packaged_path


@pytest.mark.parametrize(("shape", "suits"), [(DEFAULT_DATA["shape"], True), (GPU_SHAPE, False)])
def test_the_shipped_models_suit_the_cpu_demos_data_and_not_the_gpu_demos(
    tmp_path: Path, shape: tuple[int, int, int], suits: bool
) -> None:
    """Read from data the generator writes now, so a change to the generator fails here until re-exported."""
    dataset = generate_dataset(tmp_path, num_train=1, num_test_per_domain=1, shape=shape, domains=["inverted"])
    reason = load_manifest().mismatch(read_generation(dataset))
    if suits:
        assert reason is None
    else:
        assert reason is not None and "shape [48, 48, 48]" in reason and "[32, 32, 32]" in reason


def test_the_shipped_models_had_all_stopped_improving() -> None:
    """The benchmark's 20,000-iteration models: every EMA curve moved less than 0.02 over its last fifth."""
    manifest = load_manifest()
    assert [m.label for m in manifest.models].count(manifest.baseline) == 1
    assert all(m.iterations >= 20_000 for m in manifest.models)
    assert len([m for m in manifest.models if m.extractor is not None]) == 1
    assert all(m.flat for m in manifest.models), manifest.describe()


def test_the_manifest_says_of_each_model_whether_it_had_stopped_improving() -> None:
    manifest = load_manifest()
    rising = dataclasses.replace(manifest.models[0], last_fifth_change=0.033)
    flat = dataclasses.replace(manifest.models[1], last_fifth_change=0.011)
    assert not rising.flat and flat.flat
    described = dataclasses.replace(manifest, models=(rising, flat)).describe()
    assert f"{rising.label} " in described and f"{flat.label} " in described
    assert "+0.033 over the last fifth: still improving" in described
    assert "+0.011 over the last fifth: flat" in described


def test_shipped_files_hold_neither_optimizer_state_nor_extractor_weights() -> None:
    for model in load_manifest().models:
        checkpoint = torch.load(shipped_dir() / f"{model.trainer}.pth", map_location="cpu", weights_only=True)
        assert "optimizer_state" not in checkpoint and checkpoint["trainer_name"] == model.trainer
        assert not any(key.startswith(EXTRACTOR_PREFIX) for key in checkpoint["network_weights"])


def test_installed_models_load_strictly_as_nnunet_predict_loads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_dir()))
    results = tmp_path / "Dataset501_DropGenDemo"
    specs = install_shipped_models(results)
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


def test_installing_again_rewrites_nothing_so_earlier_predictions_are_reused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    install_shipped_models(results)
    files = sorted(p for p in results.rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    assert len(files) == 3 * len(load_manifest().models)
    install_shipped_models(results)
    assert [p.stat().st_mtime_ns for p in files] == stamps


@pytest.mark.parametrize("ending", [".pth", ".plans.json", ".dataset.json"])
def test_a_damaged_shipped_file_is_refused_before_anything_is_written(tmp_path: Path, ending: str) -> None:
    """The plans and dataset files too: another normalization scheme or label list would load without error."""
    folder = tmp_path / "shipped_models"
    shutil.copytree(shipped_dir(), folder)
    damaged = folder / f"{load_manifest(folder).models[-1].trainer}{ending}"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(ShippedModelsError, match="damaged.*pip install --force-reinstall --no-deps") as caught:
        install_shipped_models(tmp_path / "results", folder)
    assert str(damaged) in str(caught.value)
    assert not (tmp_path / "results").exists()


def test_another_embedded_extractor_file_than_the_one_dropgen_trained_with_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "minimix2.pth"
    state = torch.load(packaged_path(get_extractor_spec("minimix2").weights), weights_only=True)
    torch.save({key: value + 1 for key, value in state.items()}, other)
    monkeypatch.setattr(shipped, "packaged_path", lambda source: other)
    with pytest.raises(ShippedModelsError, match="was trained with the minimix2 weights of sha256"):
        load_manifest()


def test_a_manifest_naming_no_extractor_for_the_dropgen_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shipped_models"
    shutil.copytree(shipped_dir(), folder)
    manifest = load_manifest(folder)
    dropgen = next(m for m in manifest.models if m.extractor is not None)
    with pytest.raises(ShippedModelsError, match="disagree on its extractor"):
        shipped._full_checkpoint(folder, dataclasses.replace(dropgen, extractor=None))


def test_a_failure_of_the_shipped_models_step_becomes_a_note_and_keeps_the_demos_own_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step runs after minutes of training: it must not throw those results away."""
    from nnunetv2_dropgen.demo import run
    from nnunetv2_dropgen.evaluation import EvaluationRequest

    failures = [
        (ShippedModelsError("The shipped model file X is missing. Reinstall."), ": The shipped model file X is"),
        (RuntimeError("CUDA out of memory"), " (RuntimeError: CUDA out of memory)."),  # any error, not only ours
    ]
    for error, said in failures:

        def fail(results: Path, error: Exception = error) -> None:
            raise error

        monkeypatch.setattr(run, "install_shipped_models", fail)
        settings = run.DemoSettings(tmp_path, "tiny", "cpu", 1, 1, (32, 32, 32))
        tour = EvaluationRequest(dataset=501, models=[])
        env = {"nnUNet_results": str(tmp_path / "results")}
        result, note = run._evaluate_shipped(settings, tmp_path, tour, load_manifest(), env, tmp_path / "Dataset501_X")
        assert result is None and note.startswith("The shipped models could not be evaluated" + said)
