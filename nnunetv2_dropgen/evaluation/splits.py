"""nnU-Net's splits_final.json for the paper's settings: few-shot folds and leave-one-site-out folds.

Few-shot: nnU-Net's own cross-validation split (`generate_crossval_split`, the seed nnU-Net uses), so every
fold validates on exactly the cases nnU-Net would, and trains on N cases drawn (seeded) from that fold's
training cases. Leave-one-site-out: one fold per site, validating on that site and training on the others,
so every fold is scored on a site it never saw. Case ids come from the raw dataset (so splits can be written
before preprocessing); the file goes where nnU-Net reads it, nnUNet_preprocessed/DatasetXXX/splits_final.json.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

from nnunetv2_dropgen.evaluation.defaults import NNUNET_FOLDS, NNUNET_SEED, SITES_FILE, SPLITS_FILE
from nnunetv2_dropgen.evaluation.files import write_json_atomic

_HEADER_WORDS = {"case", "case_id", "case id", "caseid", "identifier", "id", "subject", "image"}
_SHOWN = 5


class SplitsError(ValueError):
    """Bad input to `nnunetv2_dropgen splits`; nothing has been written."""


@dataclass(frozen=True)
class Splits:
    """Folds in nnU-Net's format, and for leave-one-site-out the validation site of each fold."""

    folds: list[dict[str, list[str]]]
    sites: list[str] | None = None


def _listing(items: Sequence[str]) -> str:
    items = sorted(items)
    return ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _preprocessed_cases(preprocessed: Path) -> list[str] | None:
    """Case ids nnU-Net has preprocessed (its gt_segmentations folder), None if it has not yet."""
    segmentations = preprocessed / "gt_segmentations"
    dataset_json = preprocessed / "dataset.json"
    if not segmentations.is_dir() or not dataset_json.is_file():
        return None
    ending = json.loads(dataset_json.read_text())["file_ending"]
    return sorted(p.name[: -len(ending)] for p in segmentations.iterdir() if p.name.endswith(ending))


def dataset_case_ids(raw: Path | None, preprocessed: Path) -> list[str]:
    """Training case ids: from the raw dataset (imagesTr, or dataset.json's `dataset`), else the preprocessed one.

    When both exist they must agree, since nnU-Net trains on the preprocessed cases.
    """
    preprocessed_cases = _preprocessed_cases(preprocessed)
    if raw is not None and (raw / "dataset.json").is_file():
        dataset_json = json.loads((raw / "dataset.json").read_text())
        if "dataset" in dataset_json:
            cases = sorted(dataset_json["dataset"])
        else:
            cases = sorted(
                get_identifiers_from_splitted_dataset_folder(str(raw / "imagesTr"), dataset_json["file_ending"])
            )
        if preprocessed_cases is not None and preprocessed_cases != cases:
            raise SplitsError(
                f"The raw dataset {raw} and its preprocessed copy {preprocessed} hold different cases, so a split "
                "from either would not match what nnU-Net trains on; run nnUNetv2_plan_and_preprocess again first."
            )
    elif preprocessed_cases is not None:
        cases = preprocessed_cases
    else:
        raise SplitsError(
            f"Neither the raw dataset ({raw}) nor a preprocessed one ({preprocessed}) is there to read the case "
            "ids from; check -d, nnUNet_raw and nnUNet_preprocessed."
        )
    if not cases:
        raise SplitsError(f"The dataset ({raw or preprocessed}) has no training cases to split.")
    return cases


def few_shot_splits(
    case_ids: Sequence[str], num_train: int, num_folds: int = NNUNET_FOLDS, seed: int = NNUNET_SEED
) -> Splits:
    """nnU-Net's K-fold split with `seed`, each fold's training cases reduced to `num_train` (seeded draw)."""
    if num_train < 1:  # the mistakes in --few-shot itself first, whatever --folds says
        raise SplitsError(f"--few-shot must be at least 1 (got {num_train}).")
    if num_train >= len(case_ids):
        raise SplitsError(
            f"--few-shot {num_train} leaves no case to validate on: the dataset has {len(case_ids)} training cases; "
            f"use --few-shot {len(case_ids) - 1} or fewer (with --folds 2 at most {len(case_ids) // 2})."
        )
    if num_folds < 2:
        raise SplitsError(f"--folds must be at least 2 (got {num_folds}): a split needs cases to validate on.")
    if num_folds > len(case_ids):
        raise SplitsError(
            f"The dataset has {len(case_ids)} training cases, so it cannot be split into {num_folds} folds; "
            f"use --folds {len(case_ids)} or fewer."
        )
    folds = []
    for fold, split in enumerate(generate_crossval_split(sorted(case_ids), seed=seed, n_splits=num_folds)):
        folds.append({"train": _draw(split["train"], num_train, seed, fold, f"fold {fold}"), "val": split["val"]})
    return Splits(folds)


def _draw(cases: Sequence[str], num_train: int | None, seed: int, fold: int, where: str) -> list[str]:
    """`num_train` of `cases` (all when None), drawn with a generator seeded by (seed, fold), sorted."""
    if num_train is None:
        return sorted(cases)
    if num_train < 1:
        raise SplitsError(f"--few-shot must be at least 1 (got {num_train}).")
    if num_train > len(cases):
        raise SplitsError(
            f"--few-shot {num_train} asks for more training cases than {where} has ({len(cases)}); "
            f"use --few-shot {len(cases)} or fewer."
        )
    chosen = np.random.default_rng([seed, fold]).choice(len(cases), size=num_train, replace=False)
    return sorted(str(cases[i]) for i in chosen)


def read_sites(path: Path, case_ids: Sequence[str]) -> dict[str, str]:
    """case id -> site from a CSV with two columns (an optional header row); every training case needs a site."""
    if not path.is_file():
        raise SplitsError(f"The sites file {path} does not exist; give a CSV with one 'case id, site' row per case.")
    known = set(case_ids)
    sites: dict[str, str] = {}
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) != 2 or not all(cells):
                raise SplitsError(f"{path}, line {number}: expected two columns 'case id, site', got {row}.")
            case, site = cells
            if not sites and case not in known and case.lower() in _HEADER_WORDS:
                continue  # header row
            if case in sites and sites[case] != site:
                raise SplitsError(f"{path}: case {case} is listed with two sites ({sites[case]} and {site}).")
            sites[case] = site
    unknown = sorted(set(sites) - known)
    if unknown:
        raise SplitsError(
            f"{path} names case ids that are not training cases of this dataset: {_listing(unknown)}; "
            f"case ids are file names without _0000 and the file ending (e.g. {sorted(known)[0]})."
        )
    missing = sorted(known - set(sites))
    if missing:
        raise SplitsError(f"{path} gives no site for the training case(s) {_listing(missing)}; add a row for each.")
    return sites


def site_splits(
    case_ids: Sequence[str], sites: Mapping[str, str], num_train: int | None = None, seed: int = NNUNET_SEED
) -> Splits:
    """One fold per site (sorted by name): validate on that site, train on the others (or `num_train` of them)."""
    names = sorted(set(sites.values()))
    if len(names) < 2:
        raise SplitsError(
            f"All {len(case_ids)} training cases belong to site {names[0]!r}; leave-one-site-out needs cases "
            "from at least two sites."
        )
    folds = []
    for fold, site in enumerate(names):
        train = [c for c in sorted(case_ids) if sites[c] != site]
        validation = [c for c in sorted(case_ids) if sites[c] == site]
        folds.append(
            {"train": _draw(train, num_train, seed, fold, f"fold {fold} (sites other than {site})"), "val": validation}
        )
    return Splits(folds, names)


def validation_site_split(
    case_ids: Sequence[str],
    sites: Mapping[str, str],
    validation_site: str,
    train_sites: Sequence[str] | None = None,
    num_train: int | None = None,
    seed: int = NNUNET_SEED,
) -> Splits:
    """One fold that trains on `train_sites` (default: every other site) and validates on `validation_site`.

    As the DropGen authors select models: the validation domain is one the model never trains on, so the
    checkpoint or dropout probability chosen on it is chosen for generalization. Cases of sites in neither
    list are in no fold (keep them as test sites).
    """
    names = sorted(set(sites.values()))
    unknown = sorted({validation_site, *(train_sites or [])} - set(names))
    if unknown:
        raise SplitsError(f"The sites file has no site {', '.join(unknown)}; its sites are {', '.join(names)}.")
    training = sorted(set(train_sites) if train_sites else set(names) - {validation_site})
    if validation_site in training:
        raise SplitsError(f"Site {validation_site} cannot both train and validate; leave it out of --train-sites.")
    if not training:
        raise SplitsError(f"Only site {validation_site} is there: validating on it leaves no site to train on.")
    train = [c for c in sorted(case_ids) if sites[c] in training]
    validation = [c for c in sorted(case_ids) if sites[c] == validation_site]
    where = f"site(s) {', '.join(training)}"
    return Splits([{"train": _draw(train, num_train, seed, 0, where), "val": validation}], [validation_site])


def describe(splits: Splits, sites: Mapping[str, str] | None = None) -> list[str]:
    """One line per fold: what it validates on and what it trains on."""
    lines = []
    for fold, split in enumerate(splits.folds):
        line = f"fold {fold}: trains on {len(split['train'])} case(s), validates on {len(split['val'])}"
        if splits.sites is not None and sites is not None:
            training_sites = sorted({sites[c] for c in split["train"]})
            line = (
                f"fold {fold}: validates on site {splits.sites[fold]} ({len(split['val'])} case(s)); trains on "
                f"{len(split['train'])} case(s) from site(s) {', '.join(training_sites)}"
            )
        lines.append(line)
    return lines


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


@dataclass(frozen=True)
class WrittenSplits:
    """What `write_splits` did: the file nnU-Net reads, whether it changed, and the backups of replaced files."""

    file: Path
    changed: bool
    splits_backup: Path | None = None  # the previous splits_final.json: folds trained before used that split
    sites_backup: Path | None = None  # the previous fold-to-site mapping, moved away

    @property
    def backups(self) -> list[Path]:
        return [path for path in (self.splits_backup, self.sites_backup) if path is not None]


def write_splits(folder: Path, splits: Splits, force: bool, record: Mapping | None = None) -> WrittenSplits:
    """Write splits_final.json (and, for sites, splits_sites.json) atomically.

    Writing the split that is already there changes nothing (so the same command can run twice); another
    existing split is never replaced without `force`, and with it the old files are kept under a timestamped
    name first.
    """
    target = folder / SPLITS_FILE
    sites_file = folder / SITES_FILE
    sites = None
    if splits.sites is not None:
        sites = {"folds": {str(i): site for i, site in enumerate(splits.sites)}, **(record or {})}
    if _read_json(target) == splits.folds and _read_json(sites_file) == sites:
        return WrittenSplits(target, changed=False)
    if target.is_file() and not force:
        raise SplitsError(
            f"{target} already exists and holds another split; nnU-Net trains with it, so it is not replaced "
            "silently. Pass --force to replace it (the current file is kept as a timestamped backup beside it)."
        )
    splits_backup = sites_backup = None
    if target.is_file():  # copied, so nnU-Net's file is there until the new one replaces it in one rename
        splits_backup = Path(shutil.copy2(target, _backup_name(target)))
    if sites_file.is_file():  # describes the old split only: moved away
        sites_backup = _backup_name(sites_file)
        os.replace(sites_file, sites_backup)
    write_json_atomic(target, splits.folds)
    if sites is not None:
        write_json_atomic(sites_file, sites)
    return WrittenSplits(target, changed=True, splits_backup=splits_backup, sites_backup=sites_backup)


def _backup_name(path: Path) -> Path:
    """`<stem>.backup-<time>.json`, numbered when a backup of the same second exists (never overwritten)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, number = path.with_name(f"{path.stem}.backup-{stamp}.json"), 1
    while candidate.exists():
        candidate, number = path.with_name(f"{path.stem}.backup-{stamp}-{number}.json"), number + 1
    return candidate


def trained_folds(results_root: Path | None, dataset: str) -> list[Path]:
    """Fold folders (fold_0, fold_1, ...; not fold_all) of `dataset` under nnUNet_results that hold a checkpoint:
    trained on the split that was there, which `--c`, `--val` and their validation Dice read again."""
    if results_root is None or not (results_root / dataset).is_dir():
        return []
    return sorted(
        fold
        for fold in (results_root / dataset).glob("*/fold_*")
        if fold.name[len("fold_") :].isdigit() and any(fold.glob("checkpoint_*.pth"))
    )
