"""`nnunetv2_dropgen splits`: few-shot and leave-one-site-out splits_final.json, and every way it refuses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunetv2_dropgen.cli import splits_command
from nnunetv2_dropgen.evaluation import splits as splits_module

DATASET = "Dataset963_Splits"
CASES = [f"case_{i:03d}" for i in range(10)]
SITES = {case: "siteA" if i < 4 else "siteB" if i < 7 else "siteC" for i, case in enumerate(CASES)}


def write_raw_dataset(raw: Path, cases: list[str] = CASES) -> Path:
    """Only what splits reads: dataset.json and the image file names in imagesTr."""
    folder = raw / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    for case in cases:
        (folder / "imagesTr" / f"{case}_0000.nii.gz").touch()
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "numTraining": len(cases)}))
    return folder


def write_preprocessed(preprocessed: Path, cases: list[str]) -> Path:
    """What nnUNetv2_plan_and_preprocess leaves that splits reads: dataset.json and gt_segmentations."""
    folder = preprocessed / DATASET
    (folder / "gt_segmentations").mkdir(parents=True)
    for case in cases:
        (folder / "gt_segmentations" / f"{case}.nii.gz").touch()
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    return folder


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    raw.mkdir()
    preprocessed.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return raw, preprocessed


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    splits_command.register(parser.add_subparsers())
    args = parser.parse_args(["splits", *argv])
    return args.func(args)


def sites_csv(tmp_path: Path, sites: dict[str, str], header: bool = True) -> Path:
    path = tmp_path / "sites.csv"
    rows = (["case_id,site"] if header else []) + [f"{case},{site}" for case, site in sites.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    return error


def test_few_shot_keeps_nnunets_validation_and_draws_n_training_cases(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    assert run("-d", "963", "--few-shot", "2") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    nnunet = generate_crossval_split(sorted(CASES), seed=12345, n_splits=5)  # what nnUNetTrainer.do_split writes
    assert len(splits) == 5
    for ours, theirs in zip(splits, nnunet, strict=True):
        assert ours["val"] == theirs["val"]
        assert len(ours["train"]) == 2 and set(ours["train"]) <= set(theirs["train"])
    assert len({tuple(s["train"]) for s in splits}) > 1, "every fold drew the same training cases"
    assert "fold 0: trains on 2 case(s), validates on 2" in capsys.readouterr().out


def test_few_shot_with_every_training_case_is_nnunets_own_split(folders: tuple[Path, Path]) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    assert run("-d", DATASET, "--few-shot", "8", "--folds", "5") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert splits == generate_crossval_split(sorted(CASES), seed=12345, n_splits=5)


def test_folds_and_seed_change_the_split(folders: tuple[Path, Path]) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    assert run("-d", "963", "--few-shot", "3", "--folds", "2", "--seed", "7") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert splits[0]["val"] == generate_crossval_split(sorted(CASES), seed=7, n_splits=2)[0]["val"]
    assert [len(s["train"]) for s in splits] == [3, 3]


def test_an_existing_split_is_kept_without_force_and_backed_up_with_it(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(splits_module.time, "strftime", lambda fmt: "20261207-170000")  # every run: one second
    raw, preprocessed = folders
    write_raw_dataset(raw)
    target = preprocessed / DATASET / "splits_final.json"
    assert run("-d", "963", "--few-shot", "2") == 0
    first = target.read_text()
    capsys.readouterr()

    assert run("-d", "963", "--few-shot", "2") == 0  # the same split again: nothing to replace
    assert f"Unchanged (it already holds this split): {target}" in capsys.readouterr().out
    assert run("-d", "963", "--few-shot", "3") == 1
    error = error_of(capsys)
    assert "--force" in error and str(target) in error
    assert target.read_text() == first
    assert list(target.parent.glob("*.backup-*")) == []

    assert run("-d", "963", "--few-shot", "3", "--force") == 0
    backups = list(target.parent.glob("splits_final.backup-*.json"))
    assert len(backups) == 1 and backups[0].read_text() == first
    assert all(len(s["train"]) == 3 for s in json.loads(target.read_text()))
    assert f"Kept the previous file as {backups[0]}" in capsys.readouterr().out
    assert run("-d", "963", "--few-shot", "2", "--force") == 0  # again within the same second: a second backup
    assert len(list(target.parent.glob("splits_final.backup-*.json"))) == 2


def test_replacing_a_split_that_folds_were_trained_on_names_them(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, _ = folders
    write_raw_dataset(raw)
    model = tmp_path / "results" / DATASET / "DropGenTrainer__nnUNetPlans__3d_fullres"
    for fold in ("fold_0", "fold_1", "fold_all"):
        (model / fold).mkdir(parents=True)
        (model / fold / "checkpoint_final.pth").touch()
    (model / "fold_2").mkdir()  # started, no checkpoint yet
    assert run("-d", "963", "--few-shot", "2") == 0
    assert "WARNING" not in capsys.readouterr().err, "a first split replaces nothing"
    assert run("-d", "963", "--few-shot", "3", "--force") == 0
    error = capsys.readouterr().err
    assert "WARNING: 2 fold(s) of " + DATASET + " were trained on the previous split" in error
    model_name = f"{DATASET}/DropGenTrainer__nnUNetPlans__3d_fullres"
    assert f"({model_name}/fold_0, {model_name}/fold_1)" in error


def test_by_site_validates_every_fold_on_a_site_it_never_trained_on(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    assert run("-d", "963", "--by-site", str(sites_csv(tmp_path, SITES))) == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    mapping = json.loads((preprocessed / DATASET / "splits_sites.json").read_text())
    assert mapping["folds"] == {"0": "siteA", "1": "siteB", "2": "siteC"}
    for fold, split in enumerate(splits):
        site = mapping["folds"][str(fold)]
        assert split["val"] == sorted(c for c in CASES if SITES[c] == site)
        assert split["train"] == sorted(c for c in CASES if SITES[c] != site)
    out = capsys.readouterr().out
    assert "fold 1: validates on site siteB (3 case(s)); trains on 7 case(s) from site(s) siteA, siteC" in out


def test_by_site_with_few_shot_draws_from_the_other_sites(folders: tuple[Path, Path], tmp_path: Path) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    assert run("-d", "963", "--by-site", str(sites_csv(tmp_path, SITES, header=False)), "--few-shot", "2") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert len(splits) == 3
    for split, site in zip(splits, ("siteA", "siteB", "siteC"), strict=True):
        assert len(split["train"]) == 2 and all(SITES[c] != site for c in split["train"])
        assert all(SITES[c] == site for c in split["val"])
    assert json.loads((preprocessed / DATASET / "splits_sites.json").read_text())["few_shot"] == 2


def test_a_validation_site_split_trains_on_chosen_sites_and_validates_on_another(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The DropGen authors' model selection: train on some sites, validate on one the model never trains on,
    and keep the remaining sites out of the split altogether (they are test sites)."""
    raw, preprocessed = folders
    write_raw_dataset(raw)
    csv_file = str(sites_csv(tmp_path, SITES))
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteB", "--train-sites", "siteA") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert splits == [
        {
            "train": sorted(c for c in CASES if SITES[c] == "siteA"),
            "val": sorted(c for c in CASES if SITES[c] == "siteB"),
        }
    ]
    mapping = json.loads((preprocessed / DATASET / "splits_sites.json").read_text())
    assert mapping["folds"] == {"0": "siteB"} and mapping["train_sites"] == ["siteA"]
    assert (
        "fold 0: validates on site siteB (3 case(s)); trains on 4 case(s) from site(s) siteA" in capsys.readouterr().out
    )
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteC", "--force") == 0
    (split,) = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert {SITES[c] for c in split["train"]} == {"siteA", "siteB"}, "default: every other site trains"
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteX", "--force") == 1
    assert "no site siteX" in error_of(capsys)
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteA", "--train-sites", "siteA") == 1
    assert "cannot both train and validate" in error_of(capsys)
    assert run("-d", "963", "--few-shot", "2", "--validation-site", "siteA") == 1
    assert "need --by-site" in error_of(capsys)


def test_case_ids_come_from_the_preprocessed_dataset_when_the_raw_one_is_gone(folders: tuple[Path, Path]) -> None:
    _, preprocessed = folders
    write_preprocessed(preprocessed, CASES[:6])
    assert run("-d", "963", "--few-shot", "1", "--folds", "3") == 0
    splits = json.loads((preprocessed / DATASET / "splits_final.json").read_text())
    assert sorted(c for s in splits for c in s["val"]) == CASES[:6]


@pytest.mark.parametrize(
    ("argv", "sites", "expected"),
    [
        (["--few-shot", "9"], None, "--few-shot 9 asks for more training cases than fold 0 has (8)"),
        (["--few-shot", "0"], None, "--few-shot must be at least 1"),
        (["--few-shot", "0", "--folds", "11"], None, "--few-shot must be at least 1"),  # before the folds' mistake
        (["--few-shot", "10", "--folds", "11"], None, "--few-shot 10 leaves no case to validate on"),
        (["--few-shot", "1", "--folds", "11"], None, "has 10 training cases, so it cannot be split into 11 folds"),
        (["--few-shot", "1", "--folds", "1"], None, "--folds must be at least 2"),
        ([], None, "Say which split to write"),
        (["--folds", "3"], SITES, "--by-site makes one fold per site; leave out --folds"),
        ([], {**SITES, "case_999": "siteA"}, "names case ids that are not training cases of this dataset: case_999"),
        ([], {c: s for c, s in SITES.items() if c != "case_004"}, "gives no site for the training case(s) case_004"),
        ([], dict.fromkeys(CASES, "siteA"), "All 10 training cases belong to site 'siteA'"),
        (["--few-shot", "8"], SITES, "--few-shot 8 asks for more training cases than fold 0 (sites other than siteA)"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    folders: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    sites: dict[str, str] | None,
    expected: str,
) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    extra = ["--by-site", str(sites_csv(tmp_path, sites))] if sites is not None else []
    assert run("-d", "963", *argv, *extra) == 1
    assert expected in error_of(capsys)
    assert not (preprocessed / DATASET).exists()


def test_a_case_with_two_sites_is_refused(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    path = sites_csv(tmp_path, SITES)
    path.write_text(path.read_text() + "case_000,siteB\n")
    assert run("-d", "963", "--by-site", str(path)) == 1
    assert "case case_000 is listed with two sites (siteA and siteB)" in error_of(capsys)


def test_raw_and_preprocessed_cases_must_agree(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    write_preprocessed(preprocessed, CASES[:-1])
    assert run("-d", "963", "--few-shot", "2") == 1
    assert "run nnUNetv2_plan_and_preprocess again first" in error_of(capsys)
    assert not (preprocessed / DATASET / "splits_final.json").exists()


def test_an_unknown_dataset_says_where_it_looked(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, _ = folders
    assert run("-d", "964", "--few-shot", "2") == 1
    error = error_of(capsys)
    assert "no dataset '964'" in error and str(raw) in error
