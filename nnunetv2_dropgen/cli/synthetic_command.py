"""`nnunetv2_dropgen make-synthetic`: write a synthetic domain-shift dataset into nnU-Net's raw folder."""

from __future__ import annotations

import argparse
import json
import os
import sys

from nnunetv2_dropgen.synthetic.names import CT_SOURCE, MR_TARGETS, TARGET_DOMAINS, list_domains


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `make-synthetic` command; --out defaults to $nnUNet_raw and is required when that is unset."""
    raw = os.environ.get("nnUNet_raw")
    targets = TARGET_DOMAINS
    parser = subparsers.add_parser(
        "make-synthetic",
        help="write a synthetic domain-shift dataset (nnU-Net raw format)",
        description="Training images come from the source domain; imagesTs_<domain>/labelsTs_<domain> hold "
        "paired test cases for the source and each held-out domain. Re-running with the same arguments "
        "reuses the dataset.",
    )
    parser.add_argument(
        "--out",
        default=raw,
        required=raw is None,
        help="nnU-Net raw folder to write into" + (f" (default: $nnUNet_raw = {raw})" if raw else ""),
    )
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id (default: 501)")
    parser.add_argument("--name", default="DropGenSynthetic", help="dataset name (default: DropGenSynthetic)")
    parser.add_argument("--num-train", type=int, default=8, help="training cases (default: 8)")
    parser.add_argument("--num-test", type=int, default=2, help="test cases per domain (default: 2)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(48, 48, 48), metavar=("Z", "Y", "X"), help="default: 48 48 48"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("Z", "Y", "X"),
        help="voxel size (default: 1 1 1)",
    )
    parser.add_argument(
        "--num-labels", type=int, default=3, help="structures per case, each its own shape (default: 3, at most 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    cross = MR_TARGETS
    parser.add_argument(
        "--domains",
        nargs="+",
        choices=[*list_domains(), *cross],
        metavar="DOMAIN",
        help=f"held-out test domains (default: all of {', '.join(targets)}, or with --cross-modality "
        f"{', '.join(cross)}); the source domain is always included",
    )
    parser.add_argument(
        "--cross-modality",
        action="store_true",
        help=f"train on a CT ('{CT_SOURCE}' domain, Hounsfield-like units, channel named CT) and test on MR-like "
        "domains of the same anatomy",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id and name")
    parser.set_defaults(func=_make_synthetic)


def _make_synthetic(args: argparse.Namespace) -> int:
    """Generate (or reuse) the dataset, say where it is and what it holds; bad arguments give exit code 1."""
    from nnunetv2_dropgen.synthetic.dataset import DOMAINS_FILE, generate_dataset

    try:
        folder = generate_dataset(
            args.out,
            dataset_id=args.dataset_id,
            name=args.name,
            num_train=args.num_train,
            num_test_per_domain=args.num_test,
            shape=args.shape,
            spacing=args.spacing,
            num_labels=args.num_labels,
            domains=args.domains,
            seed=args.seed,
            overwrite=args.overwrite,
            cross_modality=args.cross_modality,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    description = json.loads((folder / DOMAINS_FILE).read_text())
    parameters = description["parameters"]
    print(f"Synthetic dataset: {folder}")
    print(f"  imagesTr/labelsTr: {parameters['num_train']} cases from the {description['source_domain']!r} domain")
    for name in description["domains"]:
        print(f"  imagesTs_{name}/labelsTs_{name}: {parameters['num_test_per_domain']} cases")
    print(f"  domain parameters: {folder / DOMAINS_FILE}")
    if parameters["num_train"] < 5:
        print(
            f"  Note: {parameters['num_train']} training cases are fewer than nnU-Net's 5 cross-validation folds "
            "need: train fold all (nnUNetv2_train ... all), or write a split with nnunetv2_dropgen splits."
        )
    if args.cross_modality and parameters["num_labels"] < 3:
        print(
            f"  Note: with {parameters['num_labels']} label(s), mr_t1 and mr_t2 order the structures alike: use 3 "
            "or more labels for two MR contrasts that differ."
        )
    elif parameters["num_labels"] == 1 and "remapped" in description["domains"]:
        print(
            "  Note: with 1 label, remapped swaps structure and background, as inverted does: use 2 or more labels "
            "for a remapping that is not an inversion."
        )
    dataset_id = parameters["dataset_id"]
    print(f"Next: nnUNetv2_plan_and_preprocess -d {dataset_id} --verify_dataset_integrity")
    if args.cross_modality:
        print(
            "  The channel is named CT, so nnU-Net plans CTNormalization (the CT training set's statistics), which "
            "saturates the MR test images; for them, train with per-image normalization plans:\n"
            f"  nnunetv2_dropgen plans -d {dataset_id} --per-image-normalization\n"
            f"  nnUNetv2_preprocess -d {dataset_id} -plans_name nnUNetPlansPerImageNorm -c 3d_fullres\n"
            f"  nnUNetv2_train {dataset_id} 3d_fullres FOLD -tr DropGenTrainer -p nnUNetPlansPerImageNorm"
        )
    return 0
