"""The `nnunetv2_dropgen` command: one entry point, one sub-command per user task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nnunetv2_dropgen.cli import (
    demo_command,
    evaluate_command,
    plans_command,
    pretrain_command,
    setup_commands,
    splits_command,
    synthetic_command,
    weights_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunetv2_dropgen",
        description="DropGen for nnU-Net v2: find the trainers, check the set-up, manage and pretrain extractor "
        "weights, derive plans, make splits, evaluate models on test sites, run the demo.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = (
        setup_commands,
        weights_commands,
        pretrain_command,
        synthetic_command,
        plans_command,
        splits_command,
        evaluate_command,
    )
    for module in (*commands, demo_command):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
