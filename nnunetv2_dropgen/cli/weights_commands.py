"""`nnunetv2_dropgen weights show|fetch|install`: see, download or hand over extractor weights."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nnunetv2_dropgen.weights import (
    PUBLISHED,
    ResolvedWeights,
    WeightsError,
    cache_dir,
    fetch_weights,
    install_weights,
    weights_report,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `weights` command and its `show`, `fetch` and `install` sub-commands."""
    names = sorted(PUBLISHED)
    weights = subparsers.add_parser(
        "weights",
        help="show, download or install the foundation-model weights",
        description="Weights are looked for in this order: a path passed in code, the environment variable "
        "DROPGEN_WEIGHTS_<NAME>, the cache ($DROPGEN_CACHE_DIR, default ~/.cache/nnunetv2_dropgen), "
        "then a download.",
    )
    commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    show = commands.add_parser("show", help="where weights are looked for and what is found there")
    show.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(names)} (default: all)")
    show.set_defaults(func=_show)

    fetch = commands.add_parser("fetch", help="download published weights into the cache and verify them")
    fetch.add_argument("name", choices=names, metavar="NAME", help=f"one of {', '.join(names)}")
    fetch.add_argument("--force", action="store_true", help="download again even if the cache holds a copy")
    fetch.set_defaults(func=_guarded(lambda args: fetch_weights(args.name, force=args.force)))

    install = commands.add_parser("install", help="copy a local weight file into the cache (for offline use)")
    install.add_argument("name", choices=names, metavar="NAME", help=f"one of {', '.join(names)}")
    install.add_argument("path", metavar="PATH", help="the weight file to install")
    install.add_argument(
        "--force", action="store_true", help="install it even if it is not the published file (as UNVERIFIED)"
    )
    install.set_defaults(func=_guarded(lambda args: install_weights(args.name, args.path, force=args.force)))


def _guarded(action: Callable[[argparse.Namespace], ResolvedWeights]) -> Callable[[argparse.Namespace], int]:
    """Run a fetch/install, print where the file is; a WeightsError becomes a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            resolved = action(args)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{resolved.name}: {resolved.path}")
        print(f"  source: {resolved.source}")
        print(f"  {'verified' if resolved.verified else 'NOT verified'}: {resolved.detail}")
        return 0

    return run


def _show(args: argparse.Namespace) -> int:
    print(f"Cache directory: {cache_dir()} (set DROPGEN_CACHE_DIR to change it)")
    try:
        for name in args.names or sorted(PUBLISHED):
            report = weights_report(name)
            spec = PUBLISHED[name]
            checksum = spec.git_blob_sha1 or "none published"
            print(f"\n{name} ({spec.filename}, published git blob id: {checksum}), looked for in this order:")
            for number, (place, path, finding) in enumerate(report, start=1):
                where = f" {path}" if path is not None else ""
                print(f"  {number}. {place}{where}: {finding}")
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
