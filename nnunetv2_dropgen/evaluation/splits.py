"""nnU-Net's splits_final.json for the paper's settings: few-shot folds and leave-one-site-out folds.

Few-shot: nnU-Net's own cross-validation split (`generate_crossval_split`, the seed nnU-Net uses), so every
fold validates on exactly the cases nnU-Net would, and trains on the first N cases of a seeded order of that
fold's training cases (so the N=2 cases are among the N=4 ones: a learning curve adds patients, it does not
swap them). Leave-one-site-out: one fold per site, validating on that site and training on the others, so
every fold is scored on a site it never saw; a few-shot draw there takes the training sites in turn, so every
training site gives a case. Case ids come from the raw dataset (so splits can be written before preprocessing)
and must match the cases in nnU-Net's preprocessed data folders, which nnU-Net trains from; the file goes
where nnU-Net reads it, nnUNet_preprocessed/DatasetXXX/splits_final.json.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, nnUNetDatasetNumpy
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

from nnunetv2_dropgen.evaluation.defaults import NNUNET_FOLDS, NNUNET_SEED, SITES_FILE, SPLITS_FILE
from nnunetv2_dropgen.evaluation.files import write_json_atomic

_SHOWN = 5
NNUNET_DEFAULT_FOLDS = tuple(range(NNUNET_FOLDS))
"""The folds nnUNetv2_predict and nnUNetv2_find_best_configuration use without -f."""


class SplitsError(ValueError):
    """Bad input to `nnunetv2_dropgen splits`; nothing has been written."""


@dataclass(frozen=True)
class Splits:
    """Folds in nnU-Net's format; for site splits the validation site and the training sites of each fold."""

    folds: list[dict[str, list[str]]]
    sites: list[str] | None = None
    train_sites: list[list[str]] | None = None


@dataclass(frozen=True)
class SitesTable:
    """A sites CSV as read: the site of every training case, the header row if the first row is one, and the
    rows for cases that are not training cases of the dataset (ignored: e.g. test sites moved out of imagesTr)."""

    sites: dict[str, str]
    header: tuple[str, str] | None = None
    ignored: dict[str, str] = field(default_factory=dict)


def listing(items: Iterable[str]) -> str:
    """The first few of `items`, sorted and quoted with repr (an invisible character shows), and how many more."""
    items = sorted(items)
    shown = ", ".join(repr(item) for item in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _data_folder_cases(folder: Path) -> list[str]:
    """Case identifiers of one preprocessed data folder, listed as nnU-Net's dataset class for it lists them."""
    endings = {name.rsplit(".", 1)[-1] for name in os.listdir(folder) if "." in name} - {"pkl", "npy"}
    dataset_class = nnUNetDatasetBlosc2 if "b2nd" in endings else nnUNetDatasetNumpy
    return sorted(dataset_class.get_identifiers(str(folder)))


def preprocessed_cases(preprocessed: Path) -> dict[str, list[str]]:
    """Data folder name -> case ids, for every configuration's data folder (`data_identifier` in each plans
    file, e.g. nnUNetPlans_3d_fullres) that exists: what nnUNetTrainer trains from.

    Not gt_segmentations: nnU-Net only ever copies cases into it, so it keeps cases since moved out of imagesTr,
    whereas nnUNetv2_preprocess rebuilds a configuration's data folder from scratch.
    """
    folders: dict[str, list[str]] = {}
    if not preprocessed.is_dir():
        return folders
    for plans_file in sorted(preprocessed.glob("*.json")):
        try:
            plans = json.loads(plans_file.read_text())
        except (OSError, ValueError):
            continue
        configurations = plans.get("configurations") if isinstance(plans, dict) else None
        if not isinstance(configurations, dict):
            continue  # dataset.json, dataset_fingerprint.json, splits_final.json
        for configuration in configurations.values():
            identifier = configuration.get("data_identifier") if isinstance(configuration, dict) else None
            if isinstance(identifier, str) and (preprocessed / identifier).is_dir():
                folders[identifier] = _data_folder_cases(preprocessed / identifier)
    return folders


def _difference(name: str, cases: Sequence[str], reference: Sequence[str], reference_name: str) -> str | None:
    """What differs between the cases of `name` and those of `reference_name`, None if nothing."""
    missing, extra = sorted(set(reference) - set(cases)), sorted(set(cases) - set(reference))
    if not missing and not extra:
        return None
    parts = [f"{len(missing)} case(s) of {reference_name} are not in it ({listing(missing)})"] if missing else []
    if extra:
        parts.append(f"it holds {len(extra)} case(s) that {reference_name} does not ({listing(extra)})")
    return f"{name}: " + "; ".join(parts)


def dataset_case_ids(raw: Path | None, preprocessed: Path) -> list[str]:
    """Training case ids: from the raw dataset (imagesTr, or dataset.json's `dataset`), else from the
    preprocessed data folders.

    nnU-Net trains from the data folders (nnUNetPlans_3d_fullres, ...), so every one that exists must hold
    exactly the raw dataset's cases: a split naming a case it lacks stops training, and cases it holds beyond
    them were in the fingerprint.
    """
    folders = preprocessed_cases(preprocessed)
    if raw is not None and (raw / "dataset.json").is_file():
        dataset_json = json.loads((raw / "dataset.json").read_text())
        if "dataset" in dataset_json:
            cases = sorted(map(str, dataset_json["dataset"]))
        else:
            cases = sorted(  # plain str: nnU-Net lists numpy strings, whose repr is np.str_('...')
                map(
                    str,
                    get_identifiers_from_splitted_dataset_folder(str(raw / "imagesTr"), dataset_json["file_ending"]),
                )
            )
        reference = f"the raw dataset ({raw})"
    elif folders:
        name, cases = next(iter(folders.items()))
        reference = f"{preprocessed / name}"
    else:
        raise SplitsError(
            f"Neither the raw dataset ({raw}) nor preprocessed data ({preprocessed}/<plans>_<configuration>) is "
            "there to read the case ids from; check -d, nnUNet_raw and nnUNet_preprocessed."
        )
    differences = [
        difference
        for name, folder_cases in folders.items()
        if (difference := _difference(str(preprocessed / name), folder_cases, cases, reference)) is not None
    ]
    if differences:
        raise SplitsError(
            f"nnU-Net trains from the preprocessed data, which does not hold the cases of {reference}: "
            f"{' / '.join(differences)}. Run nnUNetv2_plan_and_preprocess again for this dataset (it rebuilds "
            "those folders, and the fingerprint, from imagesTr), or delete a folder of a configuration you do not "
            "train."
        )
    if not cases:
        raise SplitsError(f"The dataset ({raw or preprocessed}) has no training cases to split.")
    return cases


def dataset_names(roots: Iterable[Path | None]) -> list[str]:
    """The nnU-Net dataset folders (Dataset...) under nnUNet_raw, nnUNet_preprocessed and nnUNet_results."""
    names: set[str] = set()
    for root in roots:
        if root is not None and root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Dataset\d{3}_.+", p.name))
    return sorted(names)


def close_dataset_names(query: str, names: Sequence[str]) -> list[str]:
    """Dataset folder names that `query` (e.g. 'Prostate') is part of or close to, best first."""
    lowered = query.lower()
    containing = [name for name in names if lowered and lowered in name.lower()]
    suffixes = {name.split("_", 1)[-1].lower(): name for name in names}
    close = [suffixes[s] for s in difflib.get_close_matches(lowered, list(suffixes), n=3, cutoff=0.6)]
    return list(dict.fromkeys(containing + close))[:_SHOWN]


def _seeded_order(cases: Sequence[str], rng: np.random.Generator) -> list[str]:
    """`cases` sorted, then in an order drawn from `rng`."""
    cases = sorted(cases)
    return [cases[i] for i in rng.permutation(len(cases))]


def draw_order(cases: Sequence[str], seed: int, fold: int, sites: Mapping[str, str] | None = None) -> list[str]:
    """The order in which fold `fold` draws its few-shot training cases; --few-shot N takes the first N.

    One order per (seed, fold), whatever N, so smaller N are subsets of larger ones. With `sites`, each site's
    cases are in a seeded order and the sites (themselves in a seeded order) take turns, one case each, so the
    first N cases cover min(N, number of sites) sites and are as balanced over them as N allows.
    """
    rng = np.random.default_rng([seed, fold])
    if sites is None:
        return _seeded_order(cases, rng)
    by_site: dict[str, list[str]] = {}
    for case in sorted(cases):
        by_site.setdefault(sites[case], []).append(case)
    orders = [_seeded_order(by_site[site], rng) for site in sorted(by_site)]
    turns = [orders[i] for i in rng.permutation(len(orders))]
    return [order[i] for i in range(max(map(len, turns), default=0)) for order in turns if i < len(order)]


def _check_few_shot(num_train: int, train_counts: Sequence[int], where: Sequence[str], hint: str = "") -> None:
    """Refuse `--few-shot num_train` unless every fold has that many training cases (the largest that works is
    the smallest fold's count)."""
    if num_train < 1:
        raise SplitsError(f"--few-shot must be at least 1 (got {num_train}).")
    smallest = int(np.argmin(train_counts))
    if num_train > train_counts[smallest]:
        raise SplitsError(
            f"--few-shot {num_train} asks for more training cases than {where[smallest]} has "
            f"({train_counts[smallest]}); use --few-shot {train_counts[smallest]} or fewer{hint}."
        )


def few_shot_splits(
    case_ids: Sequence[str], num_train: int, num_folds: int = NNUNET_FOLDS, seed: int = NNUNET_SEED
) -> Splits:
    """nnU-Net's K-fold split with `seed`, each fold training on the first `num_train` of its seeded draw order."""
    if num_train < 1:  # the mistakes in --few-shot itself first, whatever --folds says
        raise SplitsError(f"--few-shot must be at least 1 (got {num_train}).")
    valid_folds = 2 <= num_folds <= len(case_ids)
    if num_train >= len(case_ids):
        largest = len(case_ids) - -(-len(case_ids) // num_folds) if valid_folds else 0  # smallest fold's training
        raise SplitsError(
            f"--few-shot {num_train} leaves no case to validate on: the dataset has {len(case_ids)} training cases"
            + (f"; with {num_folds} folds use --few-shot {largest} or fewer" if valid_folds else "")
            + (f" (with --folds 2 at most {len(case_ids) // 2})." if num_folds != 2 else ".")
        )
    if num_folds < 2:
        raise SplitsError(f"--folds must be at least 2 (got {num_folds}): a split needs cases to validate on.")
    if num_folds > len(case_ids):
        raise SplitsError(
            f"The dataset has {len(case_ids)} training cases, so it cannot be split into {num_folds} folds; "
            f"use --folds {len(case_ids)} or fewer."
        )
    splits = [  # plain str: nnU-Net's split holds numpy strings, whose repr in a message is np.str_('...')
        {part: [str(case) for case in cases] for part, cases in split.items()}
        for split in generate_crossval_split(sorted(case_ids), seed=seed, n_splits=num_folds)
    ]
    hint = f" (or fewer --folds: with --folds 2 up to {len(case_ids) // 2})" if num_folds > 2 else ""
    _check_few_shot(num_train, [len(s["train"]) for s in splits], [f"fold {i}" for i in range(len(splits))], hint)
    return Splits(
        [
            {"train": sorted(draw_order(split["train"], seed, fold)[:num_train]), "val": split["val"]}
            for fold, split in enumerate(splits)
        ]
    )


def _site_folds(
    case_ids: Sequence[str],
    sites: Mapping[str, str],
    plan: Sequence[tuple[str, list[str]]],
    num_train: int | None,
    seed: int,
    fewer_sites: str,
) -> Splits:
    """One fold per (validation site, training sites) in `plan`; with `num_train`, a balanced draw per fold."""
    trains = [[c for c in sorted(case_ids) if sites[c] in training] for _, training in plan]
    if num_train is not None:
        names = sorted({sites[c] for c in case_ids})
        where = [
            f"fold {fold} (sites other than {validation})"
            if training == [n for n in names if n != validation]
            else f"fold {fold} (site(s) {', '.join(training)})"
            for fold, (validation, training) in enumerate(plan)
        ]
        _check_few_shot(num_train, [len(train) for train in trains], where)
        fold, (_, training) = max(enumerate(plan), key=lambda item: len(item[1][1]))
        if num_train < len(training):
            raise SplitsError(
                f"--few-shot {num_train} cannot give each of the {len(training)} training sites of fold {fold} "
                f"({', '.join(training)}) a case, so the fold would not train on the sites it names; use "
                f"--few-shot {len(training)} or more{fewer_sites}."
            )
        trains = [sorted(draw_order(train, seed, fold, sites)[:num_train]) for fold, train in enumerate(trains)]
    folds = [
        {"train": train, "val": [c for c in sorted(case_ids) if sites[c] == validation]}
        for train, (validation, _) in zip(trains, plan, strict=True)
    ]
    return Splits(folds, [validation for validation, _ in plan], [training for _, training in plan])


def _check_site_names(sites: Mapping[str, str], path: Path | str) -> None:
    """Refuse site names that differ only in letter case: they would silently become two sites."""
    by_lower: dict[str, set[str]] = {}
    for site in sites.values():
        by_lower.setdefault(site.lower(), set()).add(site)
    clashes = "; ".join(" and ".join(map(repr, sorted(n))) for n in by_lower.values() if len(n) > 1)
    if clashes:
        raise SplitsError(
            f"{path} names sites that differ only in letter case ({clashes}), which would be separate sites; "
            "write each site's name the same way in every row."
        )


def read_sites(path: Path, case_ids: Sequence[str]) -> SitesTable:
    """Read a CSV of 'case id, site' rows; every training case needs a site.

    The first row is a header when its first cell is not a training case and its second is not a site of the
    other rows (whatever its words: case_id, filename, subject_id, ...). Rows for cases that are not training
    cases are ignored (one CSV can list every site, the test sites' cases being outside imagesTr) and returned
    in `ignored`. Read as UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8").
    """
    if not path.is_file():
        raise SplitsError(f"The sites file {path} does not exist; give a CSV with one 'case id, site' row per case.")
    known = set(case_ids)
    rows: list[tuple[str, str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                cells = [cell.strip() for cell in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                if len(cells) != 2 or not all(cells):
                    raise SplitsError(f"{path}, line {number}: expected two columns 'case id, site', got {row}.")
                rows.append((cells[0], cells[1]))
    except UnicodeDecodeError:
        raise SplitsError(f"{path} is not UTF-8 text; save it as UTF-8 (in Excel: 'CSV UTF-8').") from None
    header = None
    if rows and rows[0][0] not in known and rows[0][1] not in {site for _, site in rows[1:]}:
        header, rows = rows[0], rows[1:]
    listed: dict[str, str] = {}
    for case, site in rows:
        if case in listed and listed[case] != site:
            raise SplitsError(f"{path}: case {case!r} is listed with two sites ({listed[case]!r} and {site!r}).")
        listed[case] = site
    sites = {case: site for case, site in listed.items() if case in known}
    ignored = {case: site for case, site in listed.items() if case not in known}
    example = f"case ids are file names without _0000 and the file ending (e.g. {sorted(known)[0]!r})"
    if not sites:
        raise SplitsError(
            f"None of the {len(listed)} case id(s) in {path} is a training case of this dataset "
            f"({listing(listed)}); {example}."
        )
    missing = known - set(sites)
    if missing:
        raise SplitsError(
            f"{path} gives no site for the training case(s) {listing(missing)}; add a row for each"
            + (
                f" (its rows for {listing(ignored)} name no training case: check their spelling; {example})"
                if ignored
                else ""
            )
            + "."
        )
    _check_site_names(sites, path)
    return SitesTable(sites, header, ignored)


def _site_names(case_ids: Sequence[str], sites: Mapping[str, str]) -> list[str]:
    names = sorted({sites[c] for c in case_ids})
    if len(names) < 2:
        raise SplitsError(
            f"All {len(case_ids)} training cases belong to site {names[0]!r}; leave-one-site-out needs cases "
            "from at least two sites."
        )
    return names


def site_splits(
    case_ids: Sequence[str], sites: Mapping[str, str], num_train: int | None = None, seed: int = NNUNET_SEED
) -> Splits:
    """One fold per site (sorted by name): validate on that site, train on the others (or on `num_train` cases
    drawn from the others in turn, so each fold trains on every other site; refused if `num_train` is fewer
    than the other sites)."""
    _check_site_names(sites, "The sites file")
    names = _site_names(case_ids, sites)
    plan = [(site, [other for other in names if other != site]) for site in names]
    return _site_folds(case_ids, sites, plan, num_train, seed, "")


def validation_site_split(
    case_ids: Sequence[str],
    sites: Mapping[str, str],
    validation_site: str,
    train_sites: Sequence[str] | None = None,
    num_train: int | None = None,
    seed: int = NNUNET_SEED,
    ignored: Mapping[str, str] | None = None,
) -> Splits:
    """One fold that trains on `train_sites` (default: every other site) and validates on `validation_site`.

    As the DropGen authors select models: the validation domain is one the model never trains on, so the
    checkpoint or dropout probability chosen on it is chosen for generalization. Cases of sites in neither
    list are in no fold (keep them as test sites). With `num_train`, the training sites take turns giving a
    case, so each gives one; fewer cases than training sites is refused, since the fold would not train on
    the sites it records. `ignored` (sites CSV rows for cases outside the dataset) only improves the message
    for a site that has no training case.
    """
    _check_site_names(sites, "The sites file")
    names = sorted({sites[c] for c in case_ids})
    unknown = sorted({validation_site, *(train_sites or [])} - set(names))
    if unknown:
        outside = sorted(set(unknown) & set((ignored or {}).values()))
        raise SplitsError(
            f"No training case belongs to site(s) {', '.join(map(repr, unknown))}; the sites of the training "
            f"cases are {', '.join(map(repr, names))}"
            + (
                f" ({', '.join(map(repr, outside))} only has cases outside imagesTr: put them back in imagesTr and "
                "preprocess again to train or validate on them)"
                if outside
                else ""
            )
            + "."
        )
    training = sorted(set(train_sites) if train_sites else set(names) - {validation_site})
    if validation_site in training:
        raise SplitsError(f"Site {validation_site} cannot both train and validate; leave it out of --train-sites.")
    if not training:
        raise SplitsError(f"Only site {validation_site} is there: validating on it leaves no site to train on.")
    return _site_folds(case_ids, sites, [(validation_site, training)], num_train, seed, " or name fewer --train-sites")


def cases_in_no_fold(splits: Splits, case_ids: Sequence[str]) -> list[str]:
    """Training cases that no fold trains or validates on."""
    used = {case for split in splits.folds for part in ("train", "val") for case in split[part]}
    return sorted(set(case_ids) - used)


def describe_cases_in_no_fold(
    splits: Splits, outside: Sequence[str], sites: Mapping[str, str] | None = None
) -> list[str]:
    """Say which cases no fold uses: those of sites in no fold (test sites left in imagesTr, so in nnU-Net's
    fingerprint) and those of training sites that --few-shot left out."""
    if not outside:
        return []
    if sites is None:
        return [f"{len(outside)} training case(s) are in no fold: {listing(outside)}."]
    used = {sites[case] for split in splits.folds for part in ("train", "val") for case in split[part]}
    other_sites = [case for case in outside if sites[case] not in used]
    lines = []
    if other_sites:
        counts = {site: sum(sites[c] == site for c in other_sites) for site in sorted({sites[c] for c in other_sites})}
        lines.append(
            f"{len(other_sites)} training case(s), of site(s) {', '.join(f'{s} ({n})' for s, n in counts.items())}, "
            "are in no fold: no fold trains or validates on them, but they are in nnU-Net's fingerprint (test "
            "sites belong outside imagesTr before nnUNetv2_plan_and_preprocess)."
        )
    if len(outside) > len(other_sites):
        lines.append(
            f"{len(outside) - len(other_sites)} case(s) of the training sites are in no fold: --few-shot left them out."
        )
    return lines


def split_warnings(splits: Splits) -> list[str]:
    """Folds whose validation rests on a single case: nnU-Net's pseudo Dice and checkpoint_best follow it."""
    warnings = []
    for fold, split in enumerate(splits.folds):
        if len(split["val"]) == 1:
            what = f"site {splits.sites[fold]!r}, which has only" if splits.sites is not None else "only"
            advice = "merge the site with another or validate on a larger one" if splits.sites else "use fewer folds"
            warnings.append(
                f"fold {fold} validates on {what} one case ({split['val'][0]!r}): its validation Dice, nnU-Net's "
                f"pseudo Dice and checkpoint_best.pth all rest on that case; {advice}."
            )
    return warnings


def fold_advice(dataset: str, num_folds: int, num_cases: int, by_site: bool) -> list[str]:
    """Which folds exist, the -f to pass nnU-Net where its default (0 1 2 3 4) differs, and what another fold
    number does (nnUNetTrainer.do_split: a random 80:20 split of all training cases)."""
    folds = list(range(num_folds))
    named = "fold 0" if num_folds == 1 else f"folds 0..{num_folds - 1}"
    each = "it" if num_folds == 1 else "each"
    lines = [f"The split has {named}. Train {each} with: nnUNetv2_train {dataset} 3d_fullres FOLD -tr <trainer>"]
    if tuple(folds) != NNUNET_DEFAULT_FOLDS:
        if num_folds > NNUNET_FOLDS:
            default = f"only folds 0 1 2 3 4, leaving out {' '.join(map(str, folds[NNUNET_FOLDS:]))}"
        else:
            default = "folds 0 1 2 3 4, which this split does not all have"
        lines.append(
            f"Pass -f {' '.join(map(str, folds))} to nnUNetv2_predict and nnUNetv2_find_best_configuration: "
            f"without -f they use {default}."
        )
    mixed = ", mixing in the cases of every site" if by_site else ""
    lines.append(
        f"Any other fold number is not in the split: nnUNetv2_train then draws its own random 80:20 split of all "
        f"{num_cases} training cases{mixed}."
    )
    return lines


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
