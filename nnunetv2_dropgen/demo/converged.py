"""Converged models that ship with the package, so the CPU demo can show a converged comparison in minutes.

On a 2-core CPU the demo can train only 1000 iterations per model, far too few for DropGen (whose input
loses three quarters of its channels at every step). The benchmark's seed-0 models, trained 12,000
iterations each on the same synthetic generator with the same narrow CPU plans
(`benchmarks/bench_domain_shift.py --schedule 48epochs`; written by `benchmarks/export_demo_models.py`),
ship in `converged_models/` as slim checkpoints: the backbone's weights and the feature record, without
the optimizer state and without the extractor's weights, which are the package's own embedded file (its
sha256 is in each record). `install_converged_models` rebuilds nnU-Net model folders from them, so the
demo predicts with them through nnU-Net's own predictor, exactly as with the models it trains.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from nnunetv2_dropgen.evaluation import ModelSpec
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.network.feature_record import FeatureRecord
from nnunetv2_dropgen.weights import EmbeddedWeights, packaged_path, sha256_file
from nnunetv2_dropgen.weights.files import temporary_beside

MANIFEST_FORMAT = "nnunetv2-dropgen-converged-models/1"
FOLD = "all"
EXTRACTOR_PREFIX = "extractor."
"""Where DropGenNetwork keeps the frozen extractor in its state_dict (left out of the shipped files)."""
EXTRA_STATE = "_extra_state"
"""DropGenNetwork's feature record in its state_dict (see network.feature_record)."""
DATA_KEYS = ("generator_version", "shape", "spacing", "num_labels")
"""What the test data must share with the models' training data for their Dice to mean anything."""


class ConvergedModelsError(RuntimeError):
    """The shipped converged models are missing, damaged or cannot be rebuilt; the message says what to do."""


@dataclass(frozen=True)
class ConvergedModel:
    """One shipped model: its name in the table, nnU-Net's trainer/plans/configuration and its files' checksum."""

    label: str
    trainer: str
    plans: str
    configuration: str
    weights_sha256: str
    iterations: int
    train_minutes: float
    final_ema_pseudo_dice: float
    extractor: str | None
    """DropGen's extractor (the package's embedded one); None for a model without DropGen."""

    @property
    def folder_name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    def spec(self) -> ModelSpec:
        return ModelSpec(
            self.trainer, plans=self.plans, configuration=self.configuration, folds=(FOLD,), label=self.label
        )


@dataclass(frozen=True)
class ConvergedManifest:
    """`converged_models/manifest.json`: the models, their baseline, the data they were trained on, provenance."""

    models: tuple[ConvergedModel, ...]
    baseline: str
    data: dict[str, Any]
    provenance: str

    def mismatch(self, generation: dict[str, Any]) -> str | None:
        """Why data generated with `generation` does not suit these models, or None.

        generation: domains.json's "parameters" with its "generator_version" (synthetic.dataset writes both).
        """
        differences = [
            f"{key} {generation.get(key)!r} (the models': {self.data[key]!r})"
            for key in DATA_KEYS
            if generation.get(key) != self.data[key]
        ]
        return "; ".join(differences) or None


def converged_dir() -> Path:
    """The package folder holding the shipped converged models."""
    return Path(str(resources.files("nnunetv2_dropgen.demo").joinpath("converged_models")))


def load_manifest(folder: Path | None = None) -> ConvergedManifest:
    """Read the manifest; ConvergedModelsError if it is missing or not one this version reads."""
    path = (folder or converged_dir()) / "manifest.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvergedModelsError(f"{_damaged(path)} ({type(exc).__name__}: {exc}).") from exc
    if document.get("format") != MANIFEST_FORMAT:
        raise ConvergedModelsError(f"{path} is not a manifest this version reads (format {document.get('format')!r}).")
    models = tuple(ConvergedModel(**entry) for entry in document["models"])
    for model in models:  # checked before a demo trains anything, so a damaged install costs no training
        _checked_bytes(folder or converged_dir(), model)
    return ConvergedManifest(models, document["baseline"], document["data"], document["provenance"])


def install_converged_models(dataset_results: Path, folder: Path | None = None) -> list[ModelSpec]:
    """Rebuild each shipped model as an nnU-Net model folder under `dataset_results`; return their ModelSpecs.

    Each folder gets plans.json, dataset.json and fold_all/checkpoint_final.pth, written atomically (a
    damaged shipped file raises ConvergedModelsError before anything of that model is written). A DropGen
    model's extractor weights come from the package's embedded file, whose sha256 must be the one its
    feature record names.
    """
    folder = folder or converged_dir()
    manifest = load_manifest(folder)
    specs = []
    for model in manifest.models:
        checkpoint = _full_checkpoint(folder, model)
        target = dataset_results / model.folder_name
        for name in ("plans.json", "dataset.json"):
            _write_atomically(target / name, (folder / f"{model.trainer}.{name}").read_bytes())
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        _write_atomically(target / f"fold_{FOLD}" / "checkpoint_final.pth", buffer.getvalue())
        specs.append(model.spec())
    return specs


def slim_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ships of an nnU-Net checkpoint: the network without its extractor, and what the predictor reads."""
    weights = {k: v for k, v in checkpoint["network_weights"].items() if not k.startswith(EXTRACTOR_PREFIX)}
    return {
        "network_weights": weights,
        "trainer_name": checkpoint["trainer_name"],
        "init_args": {
            "configuration": checkpoint["init_args"]["configuration"],
            "fold": checkpoint["init_args"]["fold"],
        },
        "inference_allowed_mirroring_axes": checkpoint["inference_allowed_mirroring_axes"],
        "current_epoch": checkpoint["current_epoch"],
    }


def _checked_bytes(folder: Path, model: ConvergedModel) -> bytes:
    """The model's slim checkpoint, its sha256 checked; its plans.json and dataset.json must be there too."""
    path = folder / f"{model.trainer}.pth"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConvergedModelsError(f"{_damaged(path)} ({exc}).") from exc
    if hashlib.sha256(data).hexdigest() != model.weights_sha256:
        raise ConvergedModelsError(f"{_damaged(path)} (its sha256 is not the one manifest.json records).")
    for name in ("plans.json", "dataset.json"):
        if not (folder / f"{model.trainer}.{name}").is_file():
            raise ConvergedModelsError(f"{_damaged(folder / f'{model.trainer}.{name}')}")
    return data


def _full_checkpoint(folder: Path, model: ConvergedModel) -> dict[str, Any]:
    data = _checked_bytes(folder, model)
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    record = checkpoint["network_weights"].get(EXTRA_STATE)
    if record is not None:
        checkpoint["network_weights"].update(
            _extractor_weights(FeatureRecord.from_state(record), folder / f"{model.trainer}.pth")
        )
    return checkpoint


def _extractor_weights(record: FeatureRecord, path: Path) -> dict[str, torch.Tensor]:
    source = get_extractor_spec(record.extractor).weights
    if not isinstance(source, EmbeddedWeights):
        raise ConvergedModelsError(
            f"{path} names the extractor {record.extractor!r}, which the package does not embed."
        )
    weights = packaged_path(source)
    if not weights.is_file() or sha256_file(weights) != record.weights_sha256:
        raise ConvergedModelsError(
            f"{path} was trained with the {record.extractor} weights of sha256 {record.weights_sha256}, and the "
            f"package's {weights} is not that file. {_REINSTALL}"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {EXTRACTOR_PREFIX + key: value for key, value in state.items()}


def _write_atomically(path: Path, data: bytes) -> None:
    with temporary_beside(path) as temporary:
        temporary.write_bytes(data)
        os.replace(temporary, path)


_REINSTALL = "Reinstall nnunetv2_dropgen (pip install --force-reinstall nnunetv2_dropgen)."


def _damaged(path: Path) -> str:
    return f"The shipped converged model file {path} is missing or damaged. {_REINSTALL}"


__all__ = [
    "ConvergedManifest",
    "ConvergedModel",
    "ConvergedModelsError",
    "converged_dir",
    "install_converged_models",
    "load_manifest",
    "slim_checkpoint",
]
