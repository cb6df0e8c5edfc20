"""`nnunetv2_dropgen plans`: derive a plans file for DropGen (per-image normalization, a CPU-sized network)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `plans` command."""
    parser = subparsers.add_parser(
        "plans",
        help="write a plans variant: per-image normalization (CT-trained models for MR), a narrow CPU network",
        description="Derive a plans file from nnU-Net's plans of a dataset and write it beside them in "
        "nnUNet_preprocessed/DatasetXXX, to be used with -p in nnU-Net's commands. --per-image-normalization "
        "replaces CTNormalization (training-set CT statistics, which saturate an MR image) by per-image z-scoring, "
        "so the extractor's input depends on the image alone; the data are then preprocessed anew. --cpu (or "
        "--features N) narrows every stage of the network (8 first-stage features instead of 32) for training on "
        "a CPU; the preprocessed data are shared.",
        epilog="examples:\n  nnunetv2_dropgen plans -d 501 --per-image-normalization\n"
        "  nnunetv2_dropgen plans -d 501 --cpu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", dest="source", default="nnUNetPlans", help="plans to derive from (default: nnUNetPlans)")
    parser.add_argument("--per-image-normalization", action="store_true", help="z-score each image on its own")
    parser.add_argument("--cpu", action="store_true", help="a narrow network for CPUs (same as --features 8)")
    parser.add_argument("--features", type=int, metavar="N", help="first-stage features (nnU-Net: 32)")
    parser.add_argument("--name", help="plans name to write (default: the source's name + PerImageNorm / CPU / FN)")
    parser.add_argument("--force", action="store_true", help="replace an existing, different plans file of that name")
    parser.set_defaults(func=_plans)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _plans(args: argparse.Namespace) -> int:
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name

    from nnunetv2_dropgen.plans import (
        CPU_FIRST_STAGE_FEATURES,
        PlansError,
        PlansVariant,
        derive_plans,
        holds_preprocessed_data,
        read_fingerprint,
        read_plans,
        resolved_configuration,
        write_plans,
    )

    if args.cpu and args.features is not None and args.features != CPU_FIRST_STAGE_FEATURES:
        return _fail(f"--cpu means --features {CPU_FIRST_STAGE_FEATURES}; give one of the two.")
    preprocessed_root = os.environ.get("nnUNet_preprocessed")
    if not preprocessed_root:
        return _fail("nnUNet_preprocessed is not set: export nnUNet_preprocessed=/path/to/nnUNet_preprocessed.")
    try:
        dataset = maybe_convert_to_dataset_name(args.dataset)
    except (RuntimeError, ValueError):
        return _fail(f"nnU-Net finds no dataset {args.dataset!r}; check -d, nnUNet_raw and nnUNet_preprocessed.")
    variant = PlansVariant(args.per_image_normalization, CPU_FIRST_STAGE_FEATURES if args.cpu else args.features)
    folder = Path(preprocessed_root) / dataset
    name = args.name or variant.default_name(args.source)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        return _fail(f"--name {name!r} must be a plain plans name (letters, digits, '_', '-', '.'), not a path.")
    if name == args.source:
        return _fail(
            f"--name {name} is the plans this derives from: writing it would replace them, and models trained with "
            f"them would silently change; choose another name (default: {variant.default_name(args.source)})."
        )
    try:
        source = read_plans(folder, args.source)
        fingerprint = read_fingerprint(folder) if variant.per_image_normalization else None
        derived = derive_plans(source, name, variant, fingerprint)
    except PlansError as exc:
        return _fail(str(exc))
    target = folder / f"{name}.json"
    clash = _data_identifier_clash(folder, target, derived)
    if clash:
        return _fail(clash)
    old = json.loads(target.read_text()) if target.is_file() else None
    replaced = old is not None and old != derived
    if replaced and not args.force:
        return _fail(f"{target} exists and differs from what would be written; pass --force to replace it.")
    write_plans(folder, derived)
    print(f"Wrote {target} (from {args.source}){' in place of the plans there' if replaced else ''}.")
    dataset_id = convert_dataset_name_to_id(dataset)  # nnUNetv2_preprocess takes ids only
    # configurations with data of their own (the cascade reads its parent's); DropGen trains 3D ones only
    renewed = [
        c
        for c, config in derived["configurations"].items()
        if len(resolved_configuration(derived, c).get("patch_size", ())) == 3
        and "data_identifier" in config
        and config["data_identifier"] != source["configurations"][c].get("data_identifier")
    ]
    stale = [
        c
        for c in renewed
        if replaced
        and holds_preprocessed_data(folder / derived["configurations"][c]["data_identifier"])
        and _preprocessing(old, c) != _preprocessing(derived, c)
    ]
    if stale:
        print(
            f"The data preprocessed for the plans replaced ({', '.join(stale)}) were made with them, not with these: "
            "preprocess again before training (nnUNetv2_preprocess replaces them), and retrain models trained with "
            "the replaced plans."
        )
    if renewed:
        print("Its normalization differs, so preprocess the data for it (nnU-Net keeps them apart):")
        print(f"  nnUNetv2_preprocess -d {dataset_id} -plans_name {name} -c {' '.join(renewed)}")
    print("Then train and predict with -p:")
    print(f"  nnUNetv2_train {dataset_id} 3d_fullres FOLD -tr DropGenTrainer -p {name}")
    print(f"  nnUNetv2_predict -i INPUT -o OUTPUT -d {dataset_id} -c 3d_fullres -tr DropGenTrainer -p {name}")
    return 0


PREPROCESSING_KEYS = (
    "normalization_schemes",
    "use_mask_for_norm",
    "spacing",
    "resampling_fn_data",
    "resampling_fn_data_kwargs",
    "resampling_fn_seg",
    "resampling_fn_seg_kwargs",
)
"""What of a configuration nnUNetv2_preprocess reads (with the plans' transpose_forward): the rest (network,
patch, batch size) leaves the preprocessed data valid."""


def _preprocessing(plans: dict, configuration: str) -> tuple:
    """What the preprocessed data of `configuration` depend on, or None when the plans lack the configuration."""
    from nnunetv2_dropgen.plans import PlansError, resolved_configuration

    try:
        config = resolved_configuration(plans, configuration)
    except (PlansError, KeyError, TypeError):
        return None
    return plans.get("transpose_forward"), *(json.dumps(config.get(key), sort_keys=True) for key in PREPROCESSING_KEYS)


def _data_identifier_clash(folder: Path, target: Path, derived: dict) -> str | None:
    """A sentence when the derived plans would share preprocessed data with other plans in `folder` that normalize
    differently: nnU-Net would train one on the other's arrays without a word."""
    from nnunetv2_dropgen.plans import PlansError, resolved_configuration

    for other in sorted(folder.glob("*.json")):
        if other == target:
            continue
        try:
            plans = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
            continue
        for name, config in derived["configurations"].items():
            if name not in plans["configurations"] or "data_identifier" not in config:
                continue
            try:
                mine, theirs = resolved_configuration(derived, name), resolved_configuration(plans, name)
            except PlansError:
                continue
            same_data = mine.get("data_identifier") == theirs.get("data_identifier")
            if same_data and mine.get("normalization_schemes") != theirs.get("normalization_schemes"):
                return (
                    f"{target.name} would share the preprocessed data {mine.get('data_identifier')!r} with "
                    f"{other.name}, which normalizes differently ({theirs.get('normalization_schemes')} against "
                    f"{mine.get('normalization_schemes')}): training would use the wrong arrays. Choose another --name."
                )
    return None
