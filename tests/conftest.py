"""Test session set-up: nnU-Net and DropGen never touch a user's real folders, caches or the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # set by pytest-xdist in each worker
_THREADS = min(2, max(1, _usable_cores() // _WORKERS))
"""Torch threads per test process: two workers on two cores each get one (two each would oversubscribe)."""

_USERS_THREADS = os.environ.setdefault("DROPGEN_TESTS_USERS_OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", ""))
"""OMP_NUM_THREADS as the user set it ("" if not), recorded by pytest's first process: xdist workers inherit that
process's environment, defaults included, and must not take its default for the user's choice."""

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dropgen-tests-"))
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(_SESSION_DIR / _name)
    (_SESSION_DIR / _name).mkdir()
os.environ["DROPGEN_CACHE_DIR"] = str(_SESSION_DIR / "cache")
os.environ.update(
    {
        "nnUNet_compile": "false",
        "nnUNet_n_proc_DA": "1",
        "nnUNet_def_n_proc": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": _USERS_THREADS or str(_THREADS),
    }
)
for _name in [n for n in os.environ if n.startswith("DROPGEN_WEIGHTS_")]:
    del os.environ[_name]


def pytest_xdist_auto_num_workers(config: object) -> int:
    """`-n auto` (pyproject's addopts): one worker per usable core, at most 4. Each worker may train nnU-Net
    models (1-2 GB each), and a few test files hold most of the suite's time, so more workers buy nothing."""
    return min(4, _usable_cores())
