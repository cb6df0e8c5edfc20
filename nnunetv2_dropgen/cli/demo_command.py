"""`nnunetv2_dropgen demo`: train DropGen and plain nnU-Net on synthetic data and compare them across domains."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunetv2_dropgen.synthetic.names import TARGET_DOMAINS

SCHEDULES = ("tiny", "cpu", "gpu")
TINY_DATA = {"num_train": 2, "num_test": 1, "shape": (32, 32, 32), "domains": ["inverted"]}
"""--tiny: the smallest data that still runs every step (a CI smoke test, minutes on a CPU)."""
DEFAULT_DATA = {"num_train": 8, "num_test": 4, "shape": (32, 32, 32), "domains": None}
"""The CPU demo's data: with 32^3 images and the narrow CPU plans a DropGen iteration took 0.22 s on 2 cores.
The same as the CPU benchmark's seed 0 (generator seed 0, 8 training and 4 test cases per domain), on which
the models shipped with the package (demo.shipped) were trained and tested."""
GPU_SHAPE = (48, 48, 48)
"""With CUDA, the larger images cost little, and their structures have more detail."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` command."""
    targets = list(TARGET_DOMAINS)
    parser = subparsers.add_parser(
        "demo",
        help="DropGen vs nnU-Net on synthetic domain shifts, end to end (about 10 minutes on a 2-core CPU)",
        description="Generate a synthetic dataset, plan and preprocess it with nnU-Net, train DropGenTrainer "
        "and nnUNetTrainer on the source domain with the same short schedule, predict every test domain with "
        "both and print their Dice; then the same for models shipped with the package (DropGen, nnU-Net and "
        "nnU-Net DA5 trained 20,000 iterations each on this generator's data), which a CPU cannot train in "
        "minutes. Everything (nnU-Net folders, logs, figures) stays in --workdir.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("dropgen_demo"), metavar="DIR", help="default: ./dropgen_demo"
    )
    parser.add_argument(
        "--extractor",
        choices=("anatomix", "minimix2", "minimix"),
        help="DropGen's extractor; default: anatomix when its weights are here or download quickly, else the "
        "embedded minimix2 (say --extractor anatomix to insist on anatomix; minimix is the older, weaker one)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="extractor weight file to use instead of the cache, a download or the embedded file "
        "(anatomix.pth unless --extractor names another)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CI smoke test: 1 epoch of 2 iterations, 2 training cases of 32^3, 1 target domain (minutes on a CPU)",
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="training length, the same for both trainers: tiny (2 iterations), cpu (1000), gpu (3000); the network "
        "is nnU-Net's with CUDA and the narrow nnUNetPlansCPU on a CPU; default: gpu with CUDA, else cpu",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument("--num-train", type=int, help="training cases (default: 8; --tiny: 2)")
    parser.add_argument("--num-test", type=int, help="test cases per domain (default: 4; --tiny: 1)")
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="image size (default: 32 32 32, with CUDA 48 48 48)"
    )
    parser.add_argument(
        "--domains",
        nargs="+",
        choices=targets,
        metavar="DOMAIN",
        help=f"held-out test domains (default: all of {', '.join(targets)}; --tiny: inverted)",
    )
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id (default: 501)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    """Run the demo and print its table; any failure is one line on stderr and exit code 1."""
    import torch

    from nnunetv2_dropgen.demo.commands import StepFailed
    from nnunetv2_dropgen.demo.run import DemoError, DemoSettings, run_demo, unverified_note
    from nnunetv2_dropgen.demo.shipped import ShippedModelsError
    from nnunetv2_dropgen.demo.trainers import demo_iterations
    from nnunetv2_dropgen.evaluation import EvaluationError
    from nnunetv2_dropgen.weights import WeightsError

    data = TINY_DATA if args.tiny else DEFAULT_DATA
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was given but PyTorch sees no CUDA GPU; use --device cpu.", file=sys.stderr)
        return 1
    schedule = args.schedule or ("tiny" if args.tiny else "gpu" if device == "cuda" else "cpu")
    domains = args.domains if args.domains is not None else data["domains"]
    settings = DemoSettings(
        workdir=args.workdir,
        schedule=schedule,
        device=device,
        num_train=args.num_train if args.num_train is not None else data["num_train"],
        num_test=args.num_test if args.num_test is not None else data["num_test"],
        shape=tuple(args.shape or (GPU_SHAPE if device == "cuda" and not args.tiny else data["shape"])),
        domains=tuple(domains) if domains is not None else None,
        dataset_id=args.dataset_id,
        extractor=args.extractor,
        weights=args.weights,
    )
    try:
        result = run_demo(settings)
    except (WeightsError, DemoError, StepFailed, EvaluationError, ShippedModelsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; a rerun with the same --workdir ({settings.workdir}) trains both models again",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        print(
            f"error: cannot write the demo's files ({exc}); give a folder you can write with --workdir.",
            file=sys.stderr,
        )
        return 1
    trained = demo_iterations(settings.schedule)
    print(f"\n## Trained in this demo: {trained} iterations per model (a tour of every step, not a verdict)\n")
    print(result.table)
    note = unverified_note(result.weights)
    if note:
        print(note)
    print(f"\nFigure: {result.figure}")
    print(f"Dice per domain (JSON): {result.dice_file}")
    if result.shipped is not None and result.shipped_manifest is not None:
        iterations = result.shipped_manifest.iterations
        print(f"\n## Shipped with the package: the same comparison after {iterations} iterations per model\n")
        print(result.shipped.markdown)
        print(f"\nFigure: {result.shipped.files['figure']}")
        print(f"Dice per domain (JSON): {result.shipped.files['json']}")
    print(f"\n{result.shipped_note}")
    return 0
