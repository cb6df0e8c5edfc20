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


def write_preprocessed(
    preprocessed: Path, cases: list[str], gt_cases: list[str] | None = None, data_format: str = "b2nd"
) -> Path:
    """What nnUNetv2_plan_and_preprocess leaves: dataset.json, a plans file, its 3d_fullres data folder (in
    nnU-Net's blosc2 or numpy format) and gt_segmentations (by default the same cases)."""
    folder = preprocessed / DATASET
    (folder / "gt_segmentations").mkdir(parents=True)
    for case in cases if gt_cases is None else gt_cases:
        (folder / "gt_segmentations" / f"{case}.nii.gz").touch()
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}},
    }
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    data = folder / "nnUNetPlans_3d_fullres"
    data.mkdir()
    for case in cases:
        names = [f"{case}.b2nd", f"{case}_seg.b2nd"] if data_format == "b2nd" else [f"{case}.npz", f"{case}.npy"]
        for name in [*names, f"{case}.pkl"]:
            (data / name).touch()
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
    assert "No training case belongs to site(s) 'siteX'" in error_of(capsys)
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
        ([], {c: s for c, s in SITES.items() if c != "case_004"}, "gives no site for the training case(s) 'case_004'"),
        ([], {"case_9": "siteA"}, "None of the 1 case id(s) in "),
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
    assert "case 'case_000' is listed with two sites ('siteA' and 'siteB')" in error_of(capsys)


def test_raw_and_preprocessed_cases_must_agree(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    write_preprocessed(preprocessed, CASES[:-1])
    assert run("-d", "963", "--few-shot", "2") == 1
    error = error_of(capsys)
    assert "run nnUNetv2_plan_and_preprocess again" in error.replace("Run", "run")
    assert "nnUNetPlans_3d_fullres: 1 case(s) of the raw dataset" in error and "'case_009'" in error
    assert not (preprocessed / DATASET / "splits_final.json").exists()


@pytest.mark.parametrize("data_format", ["b2nd", "npz"])
def test_stale_gt_segmentations_do_not_matter_but_a_stale_data_folder_is_named(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], data_format: str
) -> None:
    """A site moved out of imagesTr stays in gt_segmentations (nnU-Net only copies into it); nnU-Net trains from
    the data folder, which nnUNetv2_preprocess rebuilds."""
    raw, preprocessed = folders
    write_raw_dataset(raw, CASES[:7])
    write_preprocessed(preprocessed, CASES[:7], gt_cases=CASES, data_format=data_format)
    assert run("-d", "963", "--few-shot", "2", "--folds", "3") == 0
    capsys.readouterr()
    stale = preprocessed / DATASET / "nnUNetPlans_3d_fullres" / f"case_008.{data_format}"
    stale.touch()
    assert run("-d", "963", "--few-shot", "2", "--folds", "3", "--force") == 1
    error = error_of(capsys)
    assert f"{stale.parent}: it holds 1 case(s) that the raw dataset" in error and "('case_008')" in error


def test_an_unknown_dataset_says_where_it_looked(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, _ = folders
    assert run("-d", "964", "--few-shot", "2") == 1
    error = error_of(capsys)
    assert "no dataset '964'" in error and str(raw) in error


def test_the_advice_names_the_folds_that_exist_and_the_cases_in_no_fold(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fold 1 of a one-fold split is nnU-Net's random 80:20 split of every case, test sites included."""
    raw, _ = folders
    write_raw_dataset(raw)
    csv_file = str(sites_csv(tmp_path, SITES))
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteB", "--train-sites", "siteA") == 0
    out = capsys.readouterr().out
    assert "(1 fold over 7 of 10 training cases)" in out
    assert "3 training case(s), of site(s) siteC (3), are in no fold" in out
    assert "The split has fold 0. Train it with: nnUNetv2_train Dataset963_Splits 3d_fullres FOLD" in out
    assert "Pass -f 0 to nnUNetv2_predict and nnUNetv2_find_best_configuration" in out
    assert (
        "Any other fold number is not in the split: nnUNetv2_train then draws its own random 80:20 split of all 10"
        in out
    )


@pytest.mark.parametrize(
    ("num_sites", "expected"),
    [
        (
            6,
            "Pass -f 0 1 2 3 4 5 to nnUNetv2_predict and nnUNetv2_find_best_configuration: without -f they use only "
            "folds 0 1 2 3 4, leaving out 5.",
        ),
        (3, "Pass -f 0 1 2 to nnUNetv2_predict"),
        (5, None),  # nnU-Net's default folds are the split's: nothing to pass
    ],
)
def test_leave_one_site_out_says_which_folds_to_pass_to_nnunet(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], num_sites: int, expected: str | None
) -> None:
    raw, _ = folders
    cases = [f"case_{i:03d}" for i in range(2 * num_sites)]
    write_raw_dataset(raw, cases)
    assert (
        run("-d", "963", "--by-site", str(sites_csv(tmp_path, {c: f"site{i // 2}" for i, c in enumerate(cases)}))) == 0
    )
    out = capsys.readouterr().out
    assert f"The split has folds 0..{num_sites - 1}." in out and "in no fold" not in out
    if expected is None:
        assert "Pass -f" not in out
    else:
        assert expected in out


def test_few_shot_with_sites_gives_every_training_site_a_case(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pooled, 2 of siteA's 4 and siteB's 3 cases are from one site for 3 seeds in 7; in turns, never."""
    for seed in range(20):
        (split,) = splits_module.validation_site_split(CASES, SITES, "siteC", ["siteA", "siteB"], 2, seed).folds
        assert sorted(SITES[c] for c in split["train"]) == ["siteA", "siteB"], seed
        for fold, split in enumerate(splits_module.site_splits(CASES, SITES, 2, seed).folds):
            assert len({SITES[c] for c in split["train"]}) == 2, (seed, fold)
    raw, preprocessed = folders
    write_raw_dataset(raw)
    csv_file = str(sites_csv(tmp_path, SITES))
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteC", "--few-shot", "2") == 0
    assert json.loads((preprocessed / DATASET / "splits_sites.json").read_text())["train_sites"] == ["siteA", "siteB"]
    out = capsys.readouterr().out
    assert "5 case(s) of the training sites are in no fold: --few-shot left them out." in out
    assert "fingerprint" not in out, "no site is left out"
    assert run("-d", "963", "--by-site", csv_file, "--validation-site", "siteC", "--few-shot", "1", "--force") == 1
    error = error_of(capsys)
    assert "--few-shot 1 cannot give each of the 2 training sites of fold 0 (siteA, siteB) a case" in error
    assert "use --few-shot 2 or more or name fewer --train-sites" in error
    assert run("-d", "963", "--by-site", csv_file, "--few-shot", "1", "--force") == 1
    assert "use --few-shot 2 or more." in error_of(capsys)


@pytest.mark.parametrize("sites", [None, SITES])
def test_few_shot_cases_are_nested_across_n(sites: dict[str, str] | None) -> None:
    """A learning curve over N adds patients to the smaller N's, it does not draw new ones."""
    for seed in (0, 12345):
        draws = [
            splits_module.few_shot_splits(CASES, n, 5, seed)
            if sites is None
            else splits_module.site_splits(CASES, sites, n, seed)
            for n in range(2, 7)
        ]
        for smaller, larger in zip(draws, draws[1:], strict=False):
            for fold, (small, large) in enumerate(zip(smaller.folds, larger.folds, strict=True)):
                assert set(small["train"]) < set(large["train"]), (seed, fold)


def test_a_byte_order_mark_is_not_part_of_the_first_case_id_and_ids_are_quoted(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, preprocessed = folders
    write_raw_dataset(raw)
    path = tmp_path / "excel.csv"
    path.write_text("".join(f"{case},{site}\n" for case, site in SITES.items()), encoding="utf-8-sig")
    assert run("-d", "963", "--by-site", str(path)) == 0
    assert len(json.loads((preprocessed / DATASET / "splits_final.json").read_text())) == 3
    path.write_text(
        "".join(f"{case}\u200b,{site}\n" if case == "case_000" else f"{case},{site}\n" for case, site in SITES.items())
    )
    assert run("-d", "963", "--by-site", str(path), "--force") == 1
    error = error_of(capsys)
    assert "gives no site for the training case(s) 'case_000'" in error and r"'case_000\u200b'" in error


def test_any_header_row_is_read_as_one_and_rows_of_cases_outside_the_dataset_are_ignored(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One CSV of every site, the test site's cases moved out of imagesTr as the README recommends."""
    raw, preprocessed = folders
    write_raw_dataset(raw)
    test_site = {f"case_{i}": "siteD" for i in range(100, 107)}
    path = tmp_path / "all_sites.csv"
    path.write_text("filename,site\n" + "".join(f"{c},{s}\n" for c, s in {**SITES, **test_site}.items()))
    assert run("-d", "963", "--by-site", str(path)) == 0
    out = capsys.readouterr().out
    assert f"Read the first row of {path} as a header: 'filename', 'site'" in out
    assert f"Ignored 7 row(s) of {path} for cases that are not training cases of {DATASET} (site(s) siteD): " in out
    assert "'case_100', 'case_101', 'case_102', 'case_103', 'case_104' and 2 more" in out
    mapping = json.loads((preprocessed / DATASET / "splits_sites.json").read_text())
    assert mapping["folds"] == {"0": "siteA", "1": "siteB", "2": "siteC"}
    assert run("-d", "963", "--by-site", str(path), "--validation-site", "siteD", "--force") == 1
    assert "'siteD' only has cases outside imagesTr" in error_of(capsys)
    path.write_text(path.read_text().replace("case_004,siteB\n", ""))
    assert run("-d", "963", "--by-site", str(path), "--force") == 1
    assert "gives no site for the training case(s) 'case_004'" in error_of(capsys)


def test_the_largest_few_shot_that_works_is_suggested(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """16 cases in 5 folds: fold 0 validates on 4 and trains on 12, the others on 13."""
    raw, _ = folders
    write_raw_dataset(raw, [f"case_{i:03d}" for i in range(16)])
    assert run("-d", "963", "--few-shot", "16") == 1
    assert "with 5 folds use --few-shot 12 or fewer" in error_of(capsys)
    assert run("-d", "963", "--few-shot", "13") == 1
    assert "than fold 0 has (12); use --few-shot 12 or fewer" in error_of(capsys)
    assert run("-d", "963", "--few-shot", "12") == 0


def test_a_dataset_given_by_part_of_its_name_gets_the_id_and_full_name(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, _ = folders
    write_raw_dataset(raw)
    assert run("-d", "splits", "--few-shot", "2") == 1
    error = error_of(capsys)
    assert (
        "-d takes a dataset id or its full name (e.g. 963 or Dataset963_Splits); did you mean Dataset963_Splits?"
        in error
    )
    (raw / "Dataset963_Other").mkdir()
    assert run("-d", "963", "--few-shot", "2") == 1
    assert "Several datasets have the id 963 (Dataset963_Other, Dataset963_Splits); pass the full name" in error_of(
        capsys
    )


def test_a_site_of_one_case_warns_and_sites_differing_in_letter_case_are_refused(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, preprocessed = folders
    cases = [*CASES, "case_010"]
    write_raw_dataset(raw, cases)
    assert run("-d", "963", "--by-site", str(sites_csv(tmp_path, {**SITES, "case_010": "siteD"}))) == 0
    err = capsys.readouterr().err
    assert "WARNING: fold 3 validates on site 'siteD', which has only one case ('case_010')" in err
    assert "pseudo Dice and checkpoint_best.pth all rest on that case" in err
    assert run("-d", "963", "--by-site", str(sites_csv(tmp_path, {**SITES, "case_010": "sitec"})), "--force") == 1
    assert "names sites that differ only in letter case ('siteC' and 'sitec')" in error_of(capsys)
    assert json.loads((preprocessed / DATASET / "splits_sites.json").read_text())["folds"]["3"] == "siteD"


def test_few_shot_folds_hold_plain_strings() -> None:
    """nnU-Net's crossval split holds numpy strings; messages quote ids with repr, which printed np.str_('c2')."""
    from nnunetv2_dropgen.evaluation.splits import few_shot_splits

    splits = few_shot_splits([f"c{i}" for i in range(6)], 2, num_folds=3)
    assert all(type(case) is str for fold in splits.folds for case in fold["train"] + fold["val"])
