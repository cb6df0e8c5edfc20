"""Run nnU-Net's own console commands as subprocesses, each with its output in a log file.

The demo goes through the same commands a user types, so it shows (and tests) exactly that path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.weights import env_var_for

LOG_TAIL_LINES = 25
IN_PROCESS_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile")
_POLL_S = 1.0


class StepFailed(RuntimeError):
    """An nnU-Net command exited with an error; the message names the step and its log file."""

    def __init__(self, step: str, log: Path, returncode: int) -> None:
        super().__init__(f"{step} failed (exit code {returncode}); its full output is in {log}")
        self.log = log


def cpu_processes() -> int:
    """Worker processes for nnU-Net on a CPU: half the cores (at most 4), because training itself needs the rest."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def nnunet_environment(workdir: Path, device: str, weights: Path | None, extractor: str) -> dict[str, str]:
    """The caller's environment plus nnU-Net's folders under `workdir` and the DropGen trainer folder.

    The trainer folder goes first in nnUNet_extTrainer; folders the user already lists stay after it.
    `weights` (only when the user named a file) reaches the training runs as DROPGEN_WEIGHTS_<EXTRACTOR>.
    """
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(workdir / name)
    existing = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    env["nnUNet_extTrainer"] = os.pathsep.join([str(trainer_dir()), *existing])
    env["PYTHONUNBUFFERED"] = "1"  # so the log (and the epoch progress read from it) is current
    if weights is not None:
        env[env_var_for(extractor)] = str(weights.resolve())
    if device == "cpu":
        env["nnUNet_compile"] = "false"
        env["nnUNet_n_proc_DA"] = env["nnUNet_def_n_proc"] = str(cpu_processes())
    return env


@contextlib.contextmanager
def in_process(env: Mapping[str, str]) -> Iterator[None]:
    """nnU-Net's folders and trainer search path from `env` in this process for the block, then restored.

    For what runs in this process rather than as a command (prediction and scoring, writing a split).
    """
    names = [name for name in IN_PROCESS_VARIABLES if name in env]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def nnunet_command(name: str) -> str:
    """Path of nnU-Net's console script `name`: next to this Python first, so the same installation runs it."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"nnU-Net's command {name} is neither next to {sys.executable} nor on PATH; "
            "install nnU-Net into this environment: pip install 'nnunetv2>=2.8.1,<2.9'."
        )
    return found


def run_logged(
    step: str,
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    progress: tqdm | None = None,
    progress_pattern: str | None = None,
) -> None:
    """Run `args` with stdout and stderr in `log`; on failure print the log's tail and raise StepFailed.

    With `progress`, the bar follows how often `progress_pattern` has appeared in the log so far
    (e.g. one line per finished epoch), so a long step shows it is moving.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(progress_pattern) if progress_pattern else None
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(args) + "\n")
        handle.flush()
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=dict(env))
        try:
            while True:
                try:
                    returncode = process.wait(timeout=_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if progress is not None and pattern is not None:
                        _follow(progress, pattern, log)
        except BaseException:  # Ctrl-C, or a stop sent to the demo alone: the step must not go on writing
            process.terminate()
            process.wait()
            raise
    if progress is not None and pattern is not None:
        _follow(progress, pattern, log)
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        tqdm.write("\n".join([f"--- last {len(tail)} lines of {log} ---", *tail, "---"]), file=sys.stderr)
        raise StepFailed(step, log, returncode)


def _follow(progress: tqdm, pattern: re.Pattern[str], log: Path) -> None:
    done = len(pattern.findall(log.read_text(errors="replace")))
    if done > progress.n:
        progress.update(done - progress.n)
