"""Write a synthetic domain-shift dataset in nnU-Net v2's raw format.

Training cases come from the `source` domain only; every domain (source included, as the in-domain
reference) gets its own test folders, so a model's Dice can be compared across domain shifts.
Test sets are paired: test case i has the same label map, texture, bias pattern and noise in every domain,
so differences between domains measure the shift alone, not different anatomy. Each label is one kind of
structure in every case (LABEL_KINDS), so a label can be recognised by its shape under any contrast.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_dropgen.synthetic.domains import Domain, cross_modality_domains, default_domains, render
from nnunetv2_dropgen.synthetic.names import CT_SOURCE, SOURCE_DOMAIN
from nnunetv2_dropgen.synthetic.shapes import random_label_map

GENERATOR_VERSION = 3
"""Bump when the generated data change for the same parameters, so stale datasets are not reused.
2: each label has its own structure kind (LABEL_KINDS); in version 1 every structure's kind was random.
3: dataset.json names each label by its kind ("blob", "shell", ...) and the image channel as asked."""

LABEL_KINDS: tuple[str, ...] = ("blob", "shell", "torus", "rounded_box", "ellipsoid")
"""Label i is always a LABEL_KINDS[i - 1] (size, pose and place vary), as an organ keeps its shape across
patients. With random kinds a label would be defined by its intensity alone, and a contrast change (the
inverted and remapped domains) would leave no information from which any model could name it."""

FILE_ENDING = ".nii.gz"
DOMAINS_FILE = "domains.json"
"""Written last: its presence marks a complete dataset, its content the parameters that made it."""

_TRAIN, _TEST = 0, 1
_LABEL_STREAM, _RENDER_STREAM = 0, 1


def _case_rng(seed: int, split: int, index: int, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, split, case, stream), not on how many cases are made."""
    return np.random.default_rng([seed, split, index, stream])


def _write(array: np.ndarray, path: Path, spacing: tuple[float, ...]) -> None:
    """Save with SimpleITK: numpy axes are (z, y, x), SimpleITK spacing is (x, y, z), hence the reversal."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))
    sitk.WriteImage(image, str(path), useCompression=True)


def _resolve_domains(
    domains: Sequence[str | Domain] | None, num_labels: int, cross_modality: bool = False
) -> list[Domain]:
    """Source first, then the requested targets (default: all built-in targets), without duplicates."""
    builtin = cross_modality_domains(num_labels) if cross_modality else default_domains(num_labels)
    source = CT_SOURCE if cross_modality else SOURCE_DOMAIN
    requested = [name for name in builtin if name != source] if domains is None else list(domains)
    resolved = {source: builtin[source]}
    for entry in requested:
        if isinstance(entry, str):
            if entry not in builtin:
                hint = ""
                if not cross_modality and entry in cross_modality_domains(num_labels):
                    hint = " without the cross-modality case (cross_modality=True, --cross-modality)"
                elif cross_modality and entry in default_domains(num_labels):
                    hint = " in the cross-modality case (its domains are CT and MR-like ones)"
                raise ValueError(f"Unknown domain {entry!r}{hint}; the built-in domains are {', '.join(builtin)}.")
            entry = builtin[entry]
        if len(entry.intensities) != num_labels + 1:
            raise ValueError(
                f"Domain {entry.name!r} defines {len(entry.intensities)} intensities but a dataset with "
                f"{num_labels} labels needs {num_labels + 1} (background first)."
            )
        if resolved.get(entry.name, entry) != entry:
            raise ValueError(f"Two different domains are both called {entry.name!r}.")
        resolved[entry.name] = entry
    return list(resolved.values())


class ExistingDatasetDiffers(ValueError):
    """The dataset folder exists but was not made with these settings; `reason` says how it differs."""

    def __init__(self, folder: Path, reason: str) -> None:
        self.folder, self.reason = folder, reason
        super().__init__(
            f"{folder} already exists and {reason}. Pass overwrite=True (--overwrite) to replace it, "
            "or choose another dataset id/name."
        )


def _check_id_unused(out_raw_dir: Path, dataset_id: int, name: str) -> None:
    """Refuse a second dataset with the same id: nnU-Net finds datasets by id and would be ambiguous. Written into
    this environment's nnUNet_raw, the id is looked up in its nnUNet_preprocessed and nnUNet_results too, as nnU-Net
    does (a demo or benchmark writing into a folder of its own has folders of its own)."""
    prefix = f"Dataset{dataset_id:03d}_"
    roots = [out_raw_dir]
    if os.environ.get("nnUNet_raw") and Path(os.environ["nnUNet_raw"]).resolve() == out_raw_dir.resolve():
        roots += [Path(os.environ[v]) for v in ("nnUNet_preprocessed", "nnUNet_results") if os.environ.get(v)]
    for folder in sorted(f for root in roots for f in root.glob(f"{prefix}*")):
        if folder.is_dir() and folder.name != f"{prefix}{name}":
            raise ValueError(
                f"{folder} already uses dataset id {dataset_id}; nnU-Net could not tell the two apart. "
                "Choose another dataset id."
            )


def _changed(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of the generation settings that differ, so the error says what to change back."""
    keys = [k for k in wanted["parameters"] if existing.get("parameters", {}).get(k) != wanted["parameters"][k]]
    for key in ("generator_version", "domains"):
        if existing.get(key) != wanted[key]:
            keys.append(key)
    return keys or ["layout"]


def read_generation(dataset: Path) -> dict[str, Any]:
    """The parameters that made a generated dataset (shape, spacing, num_labels, seed, ...) with the
    generator's version, from its domains.json; FileNotFoundError if it was not made by generate_dataset."""
    document = json.loads((Path(dataset) / DOMAINS_FILE).read_text())
    return {"generator_version": document["generator_version"], **document["parameters"]}


def generate_dataset(
    out_raw_dir: str | Path,
    dataset_id: int = 501,
    name: str = "DropGenSynthetic",
    num_train: int = 8,
    num_test_per_domain: int = 2,
    shape: Sequence[int] = (48, 48, 48),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    num_labels: int = 3,
    domains: Sequence[str | Domain] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    cross_modality: bool = False,
) -> Path:
    """Write `out_raw_dir/Dataset{id:03d}_{name}` and return its path.

    Layout: imagesTr/labelsTr (source domain), imagesTs_<domain>/labelsTs_<domain> for the source and each
    target domain, dataset.json (nnU-Net's own writer) and domains.json (all generation parameters).
    shape and spacing are in numpy axis order (z, y, x). An existing folder made with identical parameters
    is reused as is; one made with other parameters raises ValueError unless overwrite=True.
    cross_modality: train on the `ct` domain (Hounsfield-like units, channel named CT, so nnU-Net plans
    CTNormalization) and test on MR-like domains (`cross_modality_domains`) instead of the default ones.
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing need three values (z, y, x); got {shape} and {spacing}.")
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}.")
    if not 1 <= dataset_id <= 999:
        raise ValueError(
            f"dataset_id must be between 1 and 999, got {dataset_id}: nnU-Net finds a dataset by the prefix "
            "Dataset<id:03d>, so Dataset9010 would also be found as dataset 901."
        )
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name {name!r} must be non-empty and use only letters, digits, '_' and '-'.")
    if num_train < 1 or num_test_per_domain < 0:
        raise ValueError("num_train must be at least 1 and num_test_per_domain at least 0.")
    if not 1 <= num_labels <= len(LABEL_KINDS):
        raise ValueError(
            f"num_labels must be between 1 and {len(LABEL_KINDS)} (one structure kind per label: "
            f"{', '.join(LABEL_KINDS)}), got {num_labels}."
        )
    kinds = LABEL_KINDS[:num_labels]
    resolved = _resolve_domains(domains, num_labels, cross_modality)

    out_raw_dir = Path(out_raw_dir)
    folder = out_raw_dir / f"Dataset{dataset_id:03d}_{name}"
    description: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "parameters": {
            "dataset_id": dataset_id,
            "name": name,
            "num_train": num_train,
            "num_test_per_domain": num_test_per_domain,
            "shape": list(shape),
            "spacing": list(spacing),
            "num_labels": num_labels,
            "seed": seed,
        },
        "source_domain": resolved[0].name,
        "domains": {domain.name: domain.to_dict() for domain in resolved},
    }
    description = json.loads(json.dumps(description))

    _check_id_unused(out_raw_dir, dataset_id, name)
    if folder.exists() and not overwrite:
        existing_file = folder / DOMAINS_FILE
        existing = json.loads(existing_file.read_text()) if existing_file.is_file() else None
        if existing == description:
            return folder
        reason = (
            f"has no {DOMAINS_FILE} (not made by this generator, or generation was interrupted)"
            if existing is None
            else f"was generated with different parameters ({', '.join(_changed(existing, description))})"
        )
        raise ExistingDatasetDiffers(folder, reason)
    # written beside the final folder and moved into place when complete: an error half-way (a shape too small
    # for the structures, a full disk) leaves no half-written dataset that a later run would refuse or reuse
    partial = out_raw_dir / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_dataset(partial, folder.name, resolved, kinds, num_train, num_test_per_domain, shape, spacing, seed,
                       cross_modality)  # fmt: skip
        (partial / DOMAINS_FILE).write_text(json.dumps(description, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def _write_dataset(
    partial: Path,
    dataset_name: str,
    resolved: Sequence[Domain],
    kinds: Sequence[str],
    num_train: int,
    num_test_per_domain: int,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    seed: int,
    cross_modality: bool,
) -> None:
    """Images, labels and dataset.json of `generate_dataset` into `partial`."""
    num_labels = len(kinds)
    source = resolved[0]
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "labelsTr").mkdir()
    for index in range(num_train):
        case = f"case_{index:03d}"
        labels = random_label_map(shape, num_labels, _case_rng(seed, _TRAIN, index, _LABEL_STREAM), kinds=kinds)
        image = render(labels, source, _case_rng(seed, _TRAIN, index, _RENDER_STREAM))
        _write(labels, partial / "labelsTr" / f"{case}{FILE_ENDING}", spacing)
        _write(image, partial / "imagesTr" / f"{case}_0000{FILE_ENDING}", spacing)

    for domain in resolved:
        (partial / f"imagesTs_{domain.name}").mkdir()
        (partial / f"labelsTs_{domain.name}").mkdir()
    for index in range(num_test_per_domain):
        case = f"test_{index:03d}"
        labels = random_label_map(shape, num_labels, _case_rng(seed, _TEST, index, _LABEL_STREAM), kinds=kinds)
        for domain in resolved:
            image = render(labels, domain, _case_rng(seed, _TEST, index, _RENDER_STREAM))
            _write(labels, partial / f"labelsTs_{domain.name}" / f"{case}{FILE_ENDING}", spacing)
            _write(image, partial / f"imagesTs_{domain.name}" / f"{case}_0000{FILE_ENDING}", spacing)

    generate_dataset_json(
        str(partial),
        channel_names={0: "CT" if cross_modality else "synthetic"},
        labels={"background": 0, **{kind: label for label, kind in enumerate(kinds, start=1)}},
        num_training_cases=num_train,
        file_ending=FILE_ENDING,
        dataset_name=dataset_name,
        description="Synthetic domain-shift benchmark from nnunetv2_dropgen: train on imagesTr "
        "(source domain), test on imagesTs_<domain> against labelsTs_<domain>; see domains.json.",
        license="CC0 (synthetic data)",
        converted_by="nnunetv2_dropgen make-synthetic",
    )
