"""The README's Python example runs as written (with the fixture weights standing in for the published ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_WEIGHTS = ROOT.parent / "shared" / "fixtures" / "anatomix" / "anatomix_random_weights.pth"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.skipif(not FIXTURE_WEIGHTS.is_file(), reason="../shared/fixtures/anatomix not found (needed as weights)")
def test_readme_network_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPGEN_WEIGHTS_ANATOMIX", str(FIXTURE_WEIGHTS))
    example = next(block for block in python_blocks() if "build_dropgen_network" in block)
    namespace: dict = {}
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        exec(compile(example, "README.md", "exec"), namespace)
    logits = namespace["logits"]
    assert logits.shape == (2, 3, 24, 96, 80)
    net = namespace["net"]
    published = torch.load(FIXTURE_WEIGHTS, weights_only=True)
    assert all(torch.equal(net.extractor.state_dict()[k], v) for k, v in published.items())
