"""Models trained for 20,000 iterations that ship with the package, so the CPU demo can show them in minutes.

On a 2-core CPU the demo can train only 1000 iterations per model, far too few for DropGen (whose input
loses three quarters of its channels at every step). The CPU benchmark's seed-0 models (DropGen, nnU-Net
and nnU-Net DA5, 20,000 iterations each on the same synthetic generator with the same narrow CPU plans;
`benchmarks/bench_domain_shift.py --schedule 80epochs`, written by `benchmarks/export_demo_models.py`)
ship in `shipped_models/` as slim checkpoints: the backbone's weights and the feature record, without the
optimizer state and without the extractor's weights, which are the package's own embedded file (its
sha256 is in each record). `install_shipped_models` rebuilds nnU-Net model folders from them, so the demo
predicts with them through nnU-Net's own predictor, exactly as with the models it trains. Whether each
model had stopped improving is in the manifest (`last_fifth_change`): all three had (DropGen had not at
12,000 iterations, the models shipped before).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_dropgen.evaluation import ModelSpec
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.network.dropgen_network import RECORD_KEY
from nnunetv2_dropgen.network.feature_record import FeaturePipelineMismatch, FeatureRecord
from nnunetv2_dropgen.weights import EmbeddedWeights, packaged_path, sha256_file
from nnunetv2_dropgen.weights.files import temporary_beside

MANIFEST_FORMAT = "nnunetv2-dropgen-shipped-models/2"
FOLD = "all"
EXTRACTOR_PREFIX = "extractor."
"""Where DropGenNetwork keeps the frozen extractor in its state_dict (left out of the shipped files)."""
DATA_KEYS = ("generator_version", "shape", "spacing", "num_labels")
"""What the test data must share with the models' training data for their Dice to mean anything."""
FLAT = 0.02
"""A model whose EMA pseudo Dice moved less than this over its last fifth of training had stopped improving
(the CPU benchmark's convergence criterion)."""
REINSTALL = "Reinstall nnunetv2_dropgen (from its clone: pip install --force-reinstall --no-deps .)."


class ShippedModelsError(RuntimeError):
    """The shipped models are missing, damaged or cannot be rebuilt; the message says what to do."""


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its name in the table, nnU-Net's trainer/plans/configuration, file checksums, training."""

    label: str
    trainer: str
    plans: str
    configuration: str
    weights_sha256: str
    plans_sha256: str
    dataset_sha256: str
    """Of `<trainer>.plans.json` and `<trainer>.dataset.json`: a changed normalization or label list in them would
    change the predictions without any load failing, so they are checked like the weights."""
    iterations: int
    train_minutes: float
    """Sum of its epochs' durations (nnU-Net's epoch timestamps), on the benchmark's 2-core CPU."""
    final_ema_pseudo_dice: float
    last_fifth_change: float
    """How far its EMA pseudo Dice moved over the last fifth of training (max minus min there)."""
    extractor: str | None
    """DropGen's extractor (one the package embeds); None for a model without DropGen."""

    @property
    def folder_name(self) -> str:
        return convert_trainer_plans_config_to_identifier(self.trainer, self.plans, self.configuration)

    @property
    def flat(self) -> bool:
        return self.last_fifth_change < FLAT

    def spec(self) -> ModelSpec:
        return ModelSpec(self.trainer, self.plans, self.configuration, folds=(FOLD,), label=self.label)


@dataclass(frozen=True)
class ShippedManifest:
    """`shipped_models/manifest.json`: the models, their baseline, the data they were trained on, provenance."""

    models: tuple[ShippedModel, ...]
    baseline: str
    data: dict[str, Any]
    provenance: str

    def mismatch(self, generation: dict[str, Any]) -> str | None:
        """Why data generated with `generation` (synthetic.read_generation) does not suit these models, or None."""
        differences = [
            f"{key} {generation.get(key)!r} (the models': {self.data[key]!r})"
            for key in DATA_KEYS
            if generation.get(key) != self.data[key]
        ]
        return "; ".join(differences) or None

    @property
    def iterations(self) -> str:
        return ", ".join(sorted({str(m.iterations) for m in self.models}))

    def describe(self) -> str:
        """One paragraph under their table: where they come from, what training cost, which had stopped improving."""
        trained = "; ".join(
            f"{m.label} {m.train_minutes:.0f} min, EMA pseudo Dice {m.final_ema_pseudo_dice:.3f} "
            f"({m.last_fifth_change:+.3f} over the last fifth: {'flat' if m.flat else 'still improving'})"
            for m in self.models
        )
        return f"These models come from {self.provenance}. Training: {trained}."


def shipped_dir() -> Path:
    """The package folder holding the shipped models."""
    return Path(str(resources.files("nnunetv2_dropgen.demo").joinpath("shipped_models")))


def load_manifest(folder: Path | None = None) -> ShippedManifest:
    """Read the manifest and check every shipped file (checksums, feature records, the extractor they need).

    Raises ShippedModelsError, so a demo finds a damaged install before it trains anything.
    """
    folder = folder or shipped_dir()
    manifest = _read_manifest(folder)
    for model in manifest.models:
        _full_checkpoint(folder, model)
    return manifest


def _read_manifest(folder: Path) -> ShippedManifest:
    path = folder / "manifest.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        names = {f.name for f in fields(ShippedModel)}
        models = tuple(ShippedModel(**{k: v for k, v in entry.items() if k in names}) for entry in document["models"])
        manifest = ShippedManifest(models, document["baseline"], document["data"], document["provenance"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShippedModelsError(_damaged(path, f"unreadable ({type(exc).__name__}: {exc})")) from exc
    return manifest


def install_shipped_models(dataset_results: Path, folder: Path | None = None) -> list[ModelSpec]:
    """Rebuild each shipped model as an nnU-Net model folder under `dataset_results`; return their ModelSpecs.

    Each folder gets plans.json, dataset.json and fold_all/checkpoint_final.pth, each written atomically
    and only when its bytes differ from what is there (so evaluate reuses earlier predictions). Every
    shipped file is checked before anything is written; a damaged one raises ShippedModelsError.
    """
    folder = folder or shipped_dir()
    manifest = _read_manifest(folder)
    checkpoints = [_full_checkpoint(folder, model) for model in manifest.models]  # every file checked first
    for model, checkpoint in zip(manifest.models, checkpoints, strict=True):
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        target = dataset_results / model.folder_name
        for name in ("plans.json", "dataset.json"):
            _write_if_changed(target / name, (folder / f"{model.trainer}.{name}").read_bytes())
        _write_if_changed(target / f"fold_{FOLD}" / "checkpoint_final.pth", buffer.getvalue())
    return [model.spec() for model in manifest.models]


def slim_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ships of an nnU-Net checkpoint: the network without its extractor, and what the predictor reads."""
    weights = {k: v for k, v in checkpoint["network_weights"].items() if not k.startswith(EXTRACTOR_PREFIX)}
    return {
        "network_weights": weights,
        "trainer_name": checkpoint["trainer_name"],
        "init_args": {key: checkpoint["init_args"][key] for key in ("configuration", "fold")},
        "inference_allowed_mirroring_axes": checkpoint["inference_allowed_mirroring_axes"],
        "current_epoch": checkpoint["current_epoch"],
    }


def _full_checkpoint(folder: Path, model: ShippedModel) -> dict[str, Any]:
    """The shipped checkpoint with its extractor's weights put back, every file it needs checked."""
    path = folder / f"{model.trainer}.pth"
    expected = {
        path: model.weights_sha256,
        folder / f"{model.trainer}.plans.json": model.plans_sha256,
        folder / f"{model.trainer}.dataset.json": model.dataset_sha256,
    }
    for needed in expected:
        if not needed.is_file():
            raise ShippedModelsError(_damaged(needed))
    contents = {needed: needed.read_bytes() for needed in expected}
    for needed, sha256 in expected.items():
        if hashlib.sha256(contents[needed]).hexdigest() != sha256:
            raise ShippedModelsError(_damaged(needed, "damaged: its sha256 is not the one manifest.json records"))
    data = contents[path]
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = checkpoint["network_weights"].get(RECORD_KEY)
    if (state is None) != (model.extractor is None):
        raise ShippedModelsError(_damaged(path, "inconsistent: manifest.json and the file disagree on its extractor"))
    if state is not None:
        try:
            record = FeatureRecord.from_state(state)
        except FeaturePipelineMismatch as exc:
            raise ShippedModelsError(_damaged(path, f"unreadable: {exc}")) from exc
        checkpoint["network_weights"].update(_extractor_weights(record, path))
    return checkpoint


def _extractor_weights(record: FeatureRecord, path: Path) -> dict[str, torch.Tensor]:
    source = get_extractor_spec(record.extractor).weights
    if not isinstance(source, EmbeddedWeights):
        raise ShippedModelsError(f"{path} names the extractor {record.extractor!r}, which the package does not embed.")
    weights = packaged_path(source)
    if not weights.is_file() or sha256_file(weights) != record.weights_sha256:
        raise ShippedModelsError(
            f"{path} was trained with the {record.extractor} weights of sha256 {record.weights_sha256}, and the "
            f"package's {weights} is not that file. {REINSTALL}"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {EXTRACTOR_PREFIX + key: value for key, value in state.items()}


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    with temporary_beside(path) as temporary:
        temporary.write_bytes(data)
        os.replace(temporary, path)


def _damaged(path: Path, why: str = "missing") -> str:
    return f"The shipped model file {path} is {why}. {REINSTALL}"


__all__ = [
    "ShippedManifest",
    "ShippedModel",
    "ShippedModelsError",
    "install_shipped_models",
    "load_manifest",
    "shipped_dir",
    "slim_checkpoint",
]
