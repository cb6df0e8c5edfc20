"""Test session set-up: nnU-Net and DropGen never touch a user's real folders, caches or the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
)
for _name in [n for n in os.environ if n.startswith("DROPGEN_WEIGHTS_")]:
    del os.environ[_name]
