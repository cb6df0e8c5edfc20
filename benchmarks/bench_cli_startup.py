"""Start-up of the `nnunetv2_dropgen` command: wall and CPU time per sub-command, and what it imports.

Each command runs `--repeats` times in a fresh interpreter (median reported), with HF_HUB_OFFLINE=1 so the
offline failure of `weights fetch` is measured without any network wait. `--source DIR` runs the package
from another checkout (e.g. `git worktree add /tmp/before <commit>`) so before and after are measured side
by side in one run; the largest imports come from `python -X importtime`.

    PYTHONPATH=. python benchmarks/bench_cli_startup.py --source /tmp/before --source .
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (("trainer-dir",), ("--help",), ("weights", "fetch", "anatomix"))


def run(source: Path, command: tuple[str, ...], importtime: bool = False) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stderr) of one `python -m nnunetv2_dropgen.cli.main COMMAND`."""
    env = {**os.environ, "PYTHONPATH": str(source), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "nnunetv2_dropgen.cli.main"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*argv, *command], env=env, capture_output=True, text=True, cwd=source)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def largest_imports(stderr: str, count: int = 3) -> str:
    """The top-level packages with the largest cumulative import time, from -X importtime's lines."""
    totals: dict[str, int] = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 2:
            package = match.group(3).split(".")[0]
            totals[package] = max(totals.get(package, 0), int(match.group(1)))
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name} {micros / 1e6:.2f} s" for name, micros in ranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, action="append", help="checkout(s) to measure (default: .)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sources = [s.resolve() for s in (args.source or [Path(".")])]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} logical cores; median of {args.repeats} runs")
    print("| checkout | command | wall (s) | CPU (s) | largest imports (-X importtime) |")
    print("| --- | --- | ---: | ---: | --- |")
    for source in sources:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        label = f"{source.name} ({commit.stdout.strip() or 'no git'})"
        for command in COMMANDS:
            samples = [run(source, command) for _ in range(args.repeats)]
            wall = statistics.median(s[0] for s in samples)
            cpu = statistics.median(s[1] for s in samples)
            imports = largest_imports(run(source, command, importtime=True)[2])
            print(f"| {label} | `{' '.join(command)}` | {wall:.2f} | {cpu:.2f} | {imports} |")


if __name__ == "__main__":
    main()
