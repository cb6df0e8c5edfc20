"""`nnunetv2_dropgen splits`: nnU-Net's splits_final.json for few-shot training and leave-one-site-out folds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunetv2_dropgen.evaluation.defaults import NNUNET_FOLDS, NNUNET_SEED, SITES_FILE, SPLITS_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `splits` command."""
    parser = subparsers.add_parser(
        "splits",
        help="write splits_final.json: few-shot folds (--few-shot N), leave-one-site-out folds (--by-site), or "
        "training sites vs a validation site (--by-site --validation-site)",
        description=f"Write nnU-Net's {SPLITS_FILE} in nnUNet_preprocessed/DatasetXXX. --few-shot N: nnU-Net's "
        "own cross-validation folds (same validation cases), each training on N cases drawn from that fold's "
        "training cases. --by-site sites.csv: one fold per site, validating on it and training on the other "
        f"sites (combinable with --few-shot); which fold is which site is printed and written to {SITES_FILE}. "
        "--by-site with --validation-site SITE: one fold (fold 0) that trains on --train-sites (default: all other "
        "sites) and validates on SITE, to choose a checkpoint or the dropout probability on a domain the model never "
        "trains on; cases of other sites are in no fold (test sites). "
        "Case ids are read from the raw dataset, so this works before or after nnUNetv2_plan_and_preprocess. "
        "A few-shot draw with sites takes the training sites in turn (N must be at least their number), and "
        "smaller N are subsets of larger ones. The sites CSV may have a header row and rows for cases outside "
        "imagesTr (ignored).",
    )
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or id")
    parser.add_argument("--few-shot", type=int, metavar="N", help="training cases per fold")
    parser.add_argument(
        "--by-site", type=Path, metavar="SITES_CSV", help="CSV with 'case id, site' rows: leave-one-site-out folds"
    )
    parser.add_argument(
        "--validation-site", metavar="SITE", help="with --by-site: one fold validating on SITE (model selection)"
    )
    parser.add_argument(
        "--train-sites", nargs="+", metavar="SITE", help="with --validation-site: the sites to train on"
    )
    parser.add_argument(
        "--folds", type=int, help=f"number of folds for --few-shot (default: {NNUNET_FOLDS}, as nnU-Net)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=NNUNET_SEED,
        help=f"seed of the fold split and of the few-shot draw (default: {NNUNET_SEED}, nnU-Net's)",
    )
    parser.add_argument("--force", action="store_true", help=f"replace an existing {SPLITS_FILE} (a backup is kept)")
    parser.set_defaults(func=_splits)


def _dataset_name(query: str, preprocessed_root: str) -> str:
    """nnU-Net's dataset name for -d (id or full name), or a SplitsError that says what -d takes and what is close."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_dropgen.evaluation import splits as s

    try:
        return maybe_convert_to_dataset_name(query)
    except (RuntimeError, ValueError):
        pass
    roots = [os.environ.get(name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")]
    names = s.dataset_names(Path(root) for root in roots if root)
    if query.isdigit():
        same_id = [name for name in names if name.startswith(f"Dataset{int(query):03d}_")]
        if len(same_id) > 1:
            raise s.SplitsError(
                f"Several datasets have the id {query} ({', '.join(same_id)}); pass the full name with -d, and give "
                "the others ids of their own."
            )
    close = s.close_dataset_names(query, names)
    hint = f"; did you mean {' or '.join(close)}?" if close else "."
    example = close[0] if close else "Dataset501_Prostate"
    raise s.SplitsError(
        f"nnU-Net finds no dataset {query!r} in nnUNet_raw ({os.environ.get('nnUNet_raw')}) or "
        f"nnUNet_preprocessed ({preprocessed_root}): -d takes a dataset id or its full name (e.g. "
        f"{int(example[7:10])} or {example}){hint}"
    )


def _splits(args: argparse.Namespace) -> int:
    """Write the split and say which fold is what; bad input is one sentence on stderr, exit code 1."""
    from nnunetv2_dropgen.evaluation import splits as s

    try:
        if args.few_shot is None and args.by_site is None:
            raise s.SplitsError("Say which split to write: --few-shot N, --by-site sites.csv, or both.")
        if args.by_site is not None and args.folds is not None:
            raise s.SplitsError("--by-site makes one fold per site; leave out --folds.")
        if args.by_site is None and (args.validation_site or args.train_sites):
            raise s.SplitsError("--validation-site and --train-sites need --by-site sites.csv to know the sites.")
        if args.train_sites and not args.validation_site:
            raise s.SplitsError("--train-sites needs --validation-site: the site to validate on.")
        preprocessed_root = os.environ.get("nnUNet_preprocessed")
        if not preprocessed_root:
            raise s.SplitsError(
                "nnUNet_preprocessed is not set; nnU-Net reads splits_final.json from there: "
                "export nnUNet_preprocessed=/path/to/nnUNet_preprocessed."
            )
        dataset = _dataset_name(args.dataset, preprocessed_root)
        raw_root = os.environ.get("nnUNet_raw")
        preprocessed = Path(preprocessed_root) / dataset
        cases = s.dataset_case_ids(Path(raw_root) / dataset if raw_root else None, preprocessed)
        table = None
        if args.by_site is not None:
            table = s.read_sites(args.by_site, cases)
            record = {"sites_csv": str(args.by_site.resolve()), "few_shot": args.few_shot, "seed": args.seed}
            if args.validation_site:
                splits = s.validation_site_split(
                    cases, table.sites, args.validation_site, args.train_sites, args.few_shot, args.seed, table.ignored
                )
                record["train_sites"] = splits.train_sites[0]
            else:
                splits = s.site_splits(cases, table.sites, args.few_shot, args.seed)
        else:
            splits = s.few_shot_splits(cases, args.few_shot, args.folds or s.NNUNET_FOLDS, args.seed)
            record = None
        written = s.write_splits(preprocessed, splits, args.force, record)
    except s.SplitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sites = table.sites if table is not None else None
    if table is not None and table.header is not None:
        print(f"Read the first row of {args.by_site} as a header: {table.header[0]!r}, {table.header[1]!r}")
    if table is not None and table.ignored:
        ignored_sites = sorted(set(table.ignored.values()))
        print(
            f"Ignored {len(table.ignored)} row(s) of {args.by_site} for cases that are not training cases of "
            f"{dataset} (site(s) {', '.join(ignored_sites)}): {s.listing(table.ignored)}"
        )
    for backup in written.backups:
        print(f"Kept the previous file as {backup}")
    results_root = os.environ.get("nnUNet_results")
    replaced = written.splits_backup is not None
    trained = s.trained_folds(Path(results_root), dataset) if replaced and results_root else []
    if trained:
        listed = ", ".join(str(fold.relative_to(Path(results_root))) for fold in trained[:6])
        print(
            f"WARNING: {len(trained)} fold(s) of {dataset} were trained on the previous split ({listed}"
            f"{' ...' if len(trained) > 6 else ''}). nnU-Net's --c, --val and their validation Dice now follow the "
            "new split, whose validation cases may have been their training cases: train them again, or move them "
            "away, before choosing anything on their validation.",
            file=sys.stderr,
        )
    for warning in s.split_warnings(splits):
        print(f"WARNING: {warning}", file=sys.stderr)
    outside = s.cases_in_no_fold(splits, cases)
    done = "Wrote" if written.changed else "Unchanged (it already holds this split):"
    count = f"{len(splits.folds)} fold{'s' if len(splits.folds) != 1 else ''}"
    print(f"{done} {written.file} ({count} over {len(cases) - len(outside)} of {len(cases)} training cases):")
    for line in s.describe(splits, sites):
        print(f"  {line}")
    if outside:
        for line in s.describe_cases_in_no_fold(splits, outside, sites):
            print(line)
    if splits.sites is not None:
        print(f"Fold-to-site mapping: {written.file.with_name(s.SITES_FILE)}")
    for line in s.fold_advice(dataset, len(splits.folds), len(cases), splits.sites is not None):
        print(line)
    return 0
