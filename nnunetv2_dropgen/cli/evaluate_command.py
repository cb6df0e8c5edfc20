"""`nnunetv2_dropgen evaluate`: Dice of trained nnU-Net models on named test sets (sites, scanners, domains)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunetv2_dropgen.evaluation.defaults import DEFAULT_CHECKPOINT, DEFAULT_CONFIGURATION, DEFAULT_PLANS

NNUNET_WORKERS = 3
"""nnUNetv2_predict's default -npp/-nps."""
FILES = {"markdown": "Table (Markdown)", "csv": "Table (CSV)", "json": "Table (JSON)", "figure": "Figure"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice of trained models on named test sets (imagesTs_<site>/labelsTs_<site>): table and figure",
        description="Predict every test set with every model through nnU-Net's predictor, score the predictions "
        "with nnU-Net's own evaluation and write a table (Markdown, CSV, JSON) of Dice per test set per model "
        "(mean and std over cases, per label and foreground mean, difference to a baseline model) and a figure. "
        "Predictions already on disk are reused, so an interrupted run resumes; --overwrite predicts again.",
    )
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or id, as for nnUNetv2_predict")
    parser.add_argument(
        "-tr", dest="trainers", nargs="+", required=True, metavar="TRAINER", help="one or more trainer names"
    )
    parser.add_argument("-p", dest="plans", default=DEFAULT_PLANS, help=f"plans identifier (default: {DEFAULT_PLANS})")
    parser.add_argument(
        "-c", dest="configuration", default=DEFAULT_CONFIGURATION, help=f"default: {DEFAULT_CONFIGURATION}"
    )
    parser.add_argument(
        "-f",
        dest="folds",
        nargs="+",
        metavar="FOLD",
        help="folds to ensemble (numbers or 'all'); default: every numbered fold with the checkpoint, else 'all'",
    )
    parser.add_argument("-chk", dest="checkpoint", default=DEFAULT_CHECKPOINT, help=f"default: {DEFAULT_CHECKPOINT}")
    parser.add_argument(
        "--test-set",
        dest="test_sets",
        nargs=3,
        action="append",
        metavar=("NAME", "IMAGES", "LABELS"),
        help="a named test set (repeat for more); default: every imagesTs*/labelsTs* pair of the raw dataset "
        "(imagesTs_siteB + labelsTs_siteB is 'siteB', plain imagesTs + labelsTs is 'Ts')",
    )
    parser.add_argument(
        "--prev-stage-predictions",
        dest="previous_stage",
        nargs=2,
        action="append",
        metavar=("NAME", "DIR"),
        help="for a cascade (-c 3d_cascade_fullres): the previous stage's predictions of test set NAME (repeat per "
        "test set); default: evaluate predicts them with the same trainer's previous configuration (3d_lowres)",
    )
    parser.add_argument(
        "--in-domain",
        nargs="+",
        default=[],
        metavar="NAME",
        help="test sets from the training domain: marked in the table and left out of the summary mean",
    )
    parser.add_argument("--baseline", metavar="TRAINER", help="model the others are compared to (default: the first)")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default: $nnUNet_results/DatasetXXX_NAME/evaluation)"
    )
    parser.add_argument("--overwrite", action="store_true", help="predict again even where predictions exist")
    parser.add_argument(
        "--device", choices=("cuda", "cpu", "mps"), help="default: cuda if PyTorch sees a GPU, else cpu"
    )
    parser.add_argument(
        "-npp",
        type=int,
        help=f"preprocessing worker processes (default: $nnUNet_npp, else {NNUNET_WORKERS} on a GPU and 0 on a CPU; "
        "0 together with -nps 0 predicts case by case in this process)",
    )
    parser.add_argument("-nps", type=int, help="export worker processes (default: as for -npp, with $nnUNet_nps)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (default: 0.5)")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring at test time (faster)")
    parser.set_defaults(func=_evaluate)


def _workers(given: int | None, variable: str, device: str) -> int:
    if given is not None:
        return given
    configured = os.environ.get(variable)
    if configured and configured.isdigit():
        return int(configured)
    return NNUNET_WORKERS if device == "cuda" else 0


def _evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation and print its table; bad input is one sentence on stderr and exit code 1."""
    from nnunetv2_dropgen.evaluation import EvaluationError, EvaluationRequest, ModelSpec, TestSet, run_evaluation
    from nnunetv2_dropgen.evaluation.models import parse_fold
    from nnunetv2_dropgen.evaluation.predict import PredictionSettings, resolve_device

    try:
        device = resolve_device(args.device)
        if min(v for v in (args.npp, args.nps, 0) if v is not None) < 0:
            raise EvaluationError("-npp and -nps must be 0 or more.")
        folds = tuple(parse_fold(f) for f in args.folds) if args.folds else None
        models = [
            ModelSpec(trainer, args.plans, args.configuration, folds, args.checkpoint) for trainer in args.trainers
        ]
        test_sets = (
            [TestSet(name, Path(images).resolve(), Path(labels).resolve()) for name, images, labels in args.test_sets]
            if args.test_sets
            else None
        )
        settings = PredictionSettings(
            device=device,
            tile_step_size=args.step_size,
            use_mirroring=not args.disable_tta,
            num_processes_preprocessing=_workers(args.npp, "nnUNet_npp", device),
            num_processes_export=_workers(args.nps, "nnUNet_nps", device),
        )
        request = EvaluationRequest(
            dataset=args.dataset,
            models=models,
            test_sets=test_sets,
            baseline=args.baseline,
            out=args.out,
            overwrite=args.overwrite,
            prediction=settings,
            in_domain=tuple(args.in_domain),
            previous_stage_predictions={name: Path(folder).resolve() for name, folder in args.previous_stage or []},
        )
        result = run_evaluation(request)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(result.markdown)
    print()
    for kind, what in FILES.items():
        print(f"{what}: {result.files[kind]}")
    return 0
