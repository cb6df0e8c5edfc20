"""`nnunetv2_dropgen weights show|fetch|install`: see, download or hand over extractor weights.

Names are the registered extractors that have a weights source (`ExtractorSpec.weights`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the weights package imports torch: only the sub-command that runs imports it
    from nnunetv2_dropgen.weights import PublishedWeights, ResolvedWeights, WeightsSource


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `weights` command and its `show`, `fetch` and `install` sub-commands."""
    weights = subparsers.add_parser(
        "weights",
        help="show, download or install the foundation-model weights",
        description="Weights are looked for in this order: a path passed in code, the environment variable "
        "DROPGEN_WEIGHTS_<NAME>, then the extractor's source: the file shipped in the package, or the cache "
        "($DROPGEN_CACHE_DIR, default ~/.cache/nnunetv2_dropgen) and then a download. "
        "DROPGEN_REVISION_<NAME> (or --revision) pins the Hugging Face revision of published weights.",
    )
    commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    revision_help = "Hugging Face revision (branch, tag or commit); default: DROPGEN_REVISION_<NAME> or the source's"

    show = commands.add_parser("show", help="where weights are looked for and what is found there")
    show.add_argument("names", nargs="*", metavar="NAME", help="extractor names (default: all that have weights)")
    show.add_argument("--revision", help=revision_help)
    show.set_defaults(func=_show)

    fetch = commands.add_parser("fetch", help="download published weights into the cache and verify them")
    fetch.add_argument("name", metavar="NAME", help="an extractor name, e.g. anatomix")
    fetch.add_argument("--force", action="store_true", help="download again even if the cache holds a copy")
    fetch.add_argument("--revision", help=revision_help)
    fetch.set_defaults(func=_guarded(_fetch))

    install = commands.add_parser(
        "install",
        help="copy a local copy of the published weights into the cache (for offline use)",
        description="Copy a local copy of the published weights into the cache, verified against the published "
        "checksum where one is published (anatomix at its default revision; otherwise any state_dict file is "
        "installed, marked unverified, and training loads it strictly). A file that does not match (your own "
        "fine-tuned extractor, say) is refused: name it with "
        "DROPGEN_WEIGHTS_<NAME>=/path/to/file instead, and training uses it marked UNVERIFIED, with its sha256 in "
        "the log and in every checkpoint.",
    )
    install.add_argument("name", metavar="NAME", help="an extractor name, e.g. anatomix")
    install.add_argument("path", metavar="PATH", help="the weight file to install")
    install.add_argument("--revision", help="the Hugging Face revision this file is (default: as for fetch)")
    install.set_defaults(func=_guarded(_install))


def _sources() -> dict[str, WeightsSource]:
    """Every registered extractor that has a weights source, by name."""
    from nnunetv2_dropgen.feature_extractors import available_extractors, get_extractor_spec

    specs = [get_extractor_spec(name) for name in available_extractors()]
    return {spec.name: spec.weights for spec in specs if spec.weights is not None}


def _source(name: str) -> WeightsSource:
    from nnunetv2_dropgen.weights import WeightsError

    sources = _sources()
    if name not in sources:
        raise WeightsError(
            f"No registered extractor called {name!r} has weights to manage; the names are "
            f"{', '.join(sorted(sources))}."
        )
    return sources[name]


def _published(name: str, action: str) -> PublishedWeights:
    from nnunetv2_dropgen.weights import EmbeddedWeights, WeightsError, env_var_for

    source = _source(name)
    if isinstance(source, EmbeddedWeights):
        raise WeightsError(
            f"The {name} weights ship inside the installed package, so there is nothing to {action}; "
            f"`nnunetv2_dropgen weights show {name}` checks them. To use your own file instead, set "
            f"{env_var_for(name)}=/path/to/file."
        )
    return source


def _fetch(args: argparse.Namespace) -> ResolvedWeights:
    from nnunetv2_dropgen.weights import fetch_weights

    return fetch_weights(_published(args.name, "fetch"), force=args.force, revision=args.revision)


def _install(args: argparse.Namespace) -> ResolvedWeights:
    from nnunetv2_dropgen.feature_extractors.loading import check_fits
    from nnunetv2_dropgen.weights import install_weights

    given = Path(args.path).expanduser()
    return install_weights(
        _published(args.name, "install"),
        given,
        revision=args.revision,
        check=lambda copy: check_fits(args.name, copy, shown=given),  # where no checksum is published
    )


def _guarded(action: Callable[[argparse.Namespace], ResolvedWeights]) -> Callable[[argparse.Namespace], int]:
    """Run a fetch/install, print where the file is; a WeightsError becomes a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from nnunetv2_dropgen.weights import WeightsError

        try:
            resolved = action(args)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{resolved.name}: {resolved.path}")
        print(f"  origin: {resolved.origin}")
        print(f"  {'verified' if resolved.verified else 'NOT verified'}: {resolved.detail}")
        if resolved.revision:
            print(f"  revision: {resolved.revision}")
        print(f"  sha256: {resolved.sha256}")
        return 0

    return run


def _heading(name: str, source: WeightsSource, revision: str | None) -> str:
    from nnunetv2_dropgen.weights import EmbeddedWeights, requested_revision, revision_var_for

    if isinstance(source, EmbeddedWeights):
        return f"{name} ({source.filename}, shipped in {source.package}, sha256 {source.sha256})"
    checksum = source.git_blob_sha1 or "none published"
    wanted = requested_revision(source, revision)
    return (
        f"{name} ({source.filename} from Hugging Face {source.hf_repo}, revision {wanted} "
        f"[{revision_var_for(name)} pins it], published git blob id: {checksum})"
    )


def _show(args: argparse.Namespace) -> int:
    from nnunetv2_dropgen.weights import WeightsError, cache_dir, weights_report

    print(f"Cache directory: {cache_dir()} (set DROPGEN_CACHE_DIR to change it)")
    try:
        sources = {name: _source(name) for name in args.names} if args.names else _sources()
        for name, source in sources.items():
            print(f"\n{_heading(name, source, args.revision)}, looked for in this order:")
            for number, (place, path, finding) in enumerate(weights_report(name, source, args.revision), start=1):
                where = f" {path}" if path is not None else ""
                print(f"  {number}. {place}{where}: {finding}")
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
