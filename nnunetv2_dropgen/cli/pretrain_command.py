"""`nnunetv2_dropgen pretrain`: pretrain an extractor on label maps, or measure the stability of one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  nnunetv2_dropgen pretrain --architecture anatomix --labels $nnUNet_raw/Dataset501_X/labelsTr --out a.pth --steps 20000
  nnunetv2_dropgen pretrain --architecture anatomix --synthetic 200 --out my.pth --steps 20000 --resume
  torchrun --nproc_per_node 4 -m nnunetv2_dropgen.cli.main pretrain --architecture anatomix --synthetic 2000 ...
  nnunetv2_dropgen pretrain --architecture anatomix --evaluate-only my.pth
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pretrain` command."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a domain-stable extractor from label maps (or --evaluate-only one)",
        description="Compose label maps from the structures of your label maps and/or synthetic ones, render two "
        "views of random appearance per map and train the extractor so that the features of voxels with the same "
        "label agree across views (anatomix's supervised patch-contrastive loss). Writes a state_dict (--out) "
        "with a JSON record beside it and a checkpoint for --resume. Runs under torchrun with one process per GPU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--architecture", required=True, metavar="NAME", help="registered extractor architecture")
    parser.add_argument(
        "--labels",
        nargs="+",
        action="extend",
        default=[],
        type=Path,
        metavar="DIR",
        help="folder(s) of 3D label maps SimpleITK reads, e.g. an nnU-Net labelsTr",
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also use N synthetic structures of the pretraining shape families (noise blobs, tubes, sheets, "
        "fragments; never the synthetic benchmark's kinds) (default 0)",
    )
    parser.add_argument("--out", type=Path, metavar="PATH", help="weights file to write (its record: same stem, .json)")
    parser.add_argument("--steps", type=int, metavar="N", help="total training steps (also when resuming)")
    parser.add_argument(
        "--batch-size", type=int, default=2, help="label maps per step and process, 2 views each (default 2)"
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        nargs="+",
        default=[64],
        metavar="N",
        help="training patch, one size or Z Y X; multiples of the architecture's spatial multiple (default 64)",
    )
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4, as anatomix)")
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=0.2,
        metavar="SHARE",
        help="decay the learning rate linearly over this last share of --steps, constant before (default 0.2)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of initial weights, data and held-out maps (default 0)"
    )
    parser.add_argument(
        "--init",
        metavar="SOURCE",
        help="start from a registered extractor's pretrained weights (e.g. anatomix) or a file",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run whose checkpoint lies beside --out")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast dtype; auto: bf16 (else fp16) on CUDA, bf16 on a CPU with native bf16, else fp32",
    )
    parser.add_argument(
        "--evaluate-every",
        type=int,
        default=200,
        metavar="N",
        help="stability metric every N steps (0: at the end only)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=50, metavar="N", help="checkpoint every N steps (default 50)"
    )
    parser.add_argument(
        "--evaluate-only",
        type=Path,
        metavar="WEIGHTS",
        help="do not train: print the stability metrics of this weights file, of random weights and of the published "
        "anatomix (when on this machine), on held-out maps of the synthetic benchmark's structure kinds",
    )
    parser.set_defaults(func=_pretrain)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _pretrain(args: argparse.Namespace) -> int:
    """Check the arguments, then train or evaluate; bad input is one sentence on stderr and exit code 1."""
    import torch

    from nnunetv2_dropgen.feature_extractors import get_extractor_spec
    from nnunetv2_dropgen.pretraining import (
        LabelMapError,
        PretrainingError,
        PretrainSettings,
        StabilityBenchmark,
        StabilitySettings,
        check_settings,
        compare_stability,
        held_out_pool,
        pretrain,
        training_and_held_out_pools,
        validate_patch_size,
    )
    from nnunetv2_dropgen.pretraining.checkpoint import CheckpointError
    from nnunetv2_dropgen.pretraining.loop import held_out_settings
    from nnunetv2_dropgen.weights import WeightsError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda was given but PyTorch sees no CUDA GPU; use --device cpu.")
    patch = tuple(args.patch_size * 3 if len(args.patch_size) == 1 else args.patch_size)
    try:
        spec = get_extractor_spec(args.architecture)
        validate_patch_size(spec, patch)
        if args.evaluate_only is not None:
            if not args.evaluate_only.is_file():
                return _fail(f"--evaluate-only {args.evaluate_only}: no such file.")
            stability = held_out_settings(spec, StabilitySettings())
            benchmark = StabilityBenchmark.build(held_out_pool(args.seed).to(device), args.seed, stability)
            print(f"stability on {benchmark.description}:")
            for row in compare_stability(spec, args.evaluate_only, benchmark, torch.device(device), args.seed):
                print(f"  {row.describe()}")
            return 0
        if args.out is None or args.steps is None:
            return _fail("training needs --out PATH and --steps N (or give --evaluate-only WEIGHTS).")
        settings = PretrainSettings(
            architecture=spec.name,
            out=args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            patch_size=patch,
            lr=args.lr,
            lr_decay_fraction=args.lr_decay,
            seed=args.seed,
            evaluate_every=args.evaluate_every,
            checkpoint_every=args.checkpoint_every,
            device=device,
            precision=args.precision,
            init=args.init,
            resume=args.resume,
        )
        check_settings(settings, spec)
        pool, held_out = training_and_held_out_pools(args.labels, args.synthetic, args.seed)
        result = pretrain(settings, spec, pool, held_out)
    except (KeyError, LabelMapError, PretrainingError, CheckpointError, WeightsError) as exc:
        return _fail(exc.args[0] if exc.args else str(exc))
    if result.interrupted:
        print(f"interrupted after {result.step} steps; continue with the same command and --resume.", file=sys.stderr)
        return 130
    return 0
