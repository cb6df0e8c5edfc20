"""The README's Python example runs as written (with the fixture weights standing in for the published ones)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _core_helpers import FIXTURES, requires_fixtures

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_WEIGHTS = FIXTURES / "anatomix_random_weights.pth"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@requires_fixtures
def test_readme_network_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture's random anatomix weights stand in for the published ones (no download here)."""
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


USE_README_EXTRACTOR = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from _plans import make_dataset_json, make_plans
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_dropgen.network import load_extractor_weights

trainer = recursive_find_trainer_class_by_name("DropGenTrainer_tinyExtractor_p050_quick")
# nnU-Net executes the folder's modules again at every search (as its predictor and `evaluate` do)
for again in ("DropGenTrainer_tinyExtractor_p050_quick", "DropGenTrainer_tinyExtractor_noDropout"):
    assert recursive_find_trainer_class_by_name(again).__name__ == again
print("LOOKUPS 3")
from nnunetv2_dropgen.feature_extractors import ExtractorSpec, get_extractor_spec, register_extractor
try:
    register_extractor(ExtractorSpec(name="tiny-extractor", build=torch.nn.Identity, feature_channels=8,
                                     spatial_multiple=2))
except ValueError as error:
    print("CONFLICT", error)
torch.save(get_extractor_spec("tiny-extractor").build().state_dict(), {weights!r})
os.environ["DROPGEN_WEIGHTS_TINY_EXTRACTOR"] = {weights!r}
plans = PlansManager(make_plans(1))
network = trainer.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 3, False)
load_extractor_weights(network)
print("SPEC", network.spec.name, network.feature_channels, network.p, trainer.schedule.epochs)
print("RECORD", network.record.weights_sha256, network.record.preprocessing)
print("OUT", tuple(network.eval()(torch.rand(1, 1, 20, 24, 28)).shape))
"""


def test_readme_add_a_foundation_model_example_trains_through_nnunets_trainer_search(tmp_path: Path) -> None:
    """The README's module, put in a folder of nnUNet_extTrainer, gives a trainer nnU-Net finds and builds."""
    from nnunetv2_dropgen.ext_trainers import trainer_dir
    from nnunetv2_dropgen.weights import sha256_file

    block = next(b for b in python_blocks() if "register_extractor(ExtractorSpec(" in b)
    folder = tmp_path / "my_extractors"
    folder.mkdir()
    (folder / "tiny_extractor.py").write_text(block)
    weights = tmp_path / "tiny_extractor.pth"
    env = {**os.environ, "nnUNet_extTrainer": f"{folder}{os.pathsep}{trainer_dir()}"}  # as the README lists them
    code = USE_README_EXTRACTOR.format(tests=str(Path(__file__).parent), weights=str(weights))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nnunetv2_dropgen: " not in result.stderr, "no note about a name the user's folder answers"
    assert "LOOKUPS 3" in result.stdout
    assert "CONFLICT an extractor named 'tiny-extractor' is already registered and this one differs (build " in (
        result.stdout
    )
    assert "SPEC tiny-extractor 8 0.5 2" in result.stdout
    assert f"RECORD {sha256_file(weights)} minmax-per-patch" in result.stdout
    assert "OUT (1, 3, 20, 24, 28)" in result.stdout


@pytest.mark.slow
def test_readme_extractor_model_trains_and_evaluate_runs_to_the_end(tmp_path: Path) -> None:
    """`nnunetv2_dropgen evaluate` looks the trainer up more than once in one process (its check, then nnU-Net's
    predictor): with the README's module re-executed at every search, it must still run to the end."""
    from _tiny_dataset import write_tiny_dataset

    from nnunetv2_dropgen.ext_trainers import trainer_dir

    block = next(b for b in python_blocks() if "register_extractor(ExtractorSpec(" in b)
    folder = tmp_path / "my_extractors"
    folder.mkdir()
    (folder / "tiny_extractor.py").write_text(block)
    weights = tmp_path / "tiny_extractor.pth"
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(block.replace("register_extractor(", "spec = ("), "README.md", "exec"), namespace)
    torch.save(namespace["TinyExtractor"]().state_dict(), weights)
    folders = {name: tmp_path / name for name in ("raw", "preprocessed", "results")}
    env = {
        **os.environ,
        "nnUNet_raw": str(folders["raw"]),
        "nnUNet_preprocessed": str(folders["preprocessed"]),
        "nnUNet_results": str(folders["results"]),
        "nnUNet_extTrainer": f"{folder}{os.pathsep}{trainer_dir()}",  # as the README lists them
        "DROPGEN_WEIGHTS_TINY_EXTRACTOR": str(weights),
    }
    raw = write_tiny_dataset(folders["raw"], 971, num_cases=2)
    labels = raw / "labelsTs"
    labels.mkdir()
    shutil.copy(raw / "labelsTr" / "case000.nii.gz", labels / "case002.nii.gz")  # any label of the right shape
    trainer = "DropGenTrainer_tinyExtractor_demoTiny"
    bin_dir = Path(sys.executable).parent
    for command in (
        ["nnUNetv2_plan_and_preprocess", "-d", "971", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
        ["nnUNetv2_train", "971", "3d_fullres", "all", "-tr", trainer, "-device", "cpu"],
        ["nnunetv2_dropgen", "evaluate", "-d", "971", "-tr", trainer, "--out", str(tmp_path / "evaluation")],
    ):
        done = subprocess.run([str(bin_dir / command[0]), *command[1:]], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command[0]}:\n{(done.stdout + done.stderr)[-3000:]}"
    assert "| Ts " in done.stdout and (tmp_path / "evaluation" / "dice.json").is_file()


def readme_commands() -> list[str]:
    """Every `nnunetv2_dropgen ...` command the README gives: lines of its bash blocks (continuations joined,
    comments cut) and inline code spans."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("nnunetv2_dropgen "):
                commands.append(line)
    inline = re.findall(r"`(nnunetv2_dropgen [^`]+)`", text)
    return commands + [c for c in inline if len(c.split()) > 2]  # `nnunetv2_dropgen evaluate` names a command


def test_every_readme_command_parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A flag renamed or made required in the code but not in the README fails here (argument parsing only,
    with nnU-Net's folders set, as the README has users set them first)."""
    import shlex

    from nnunetv2_dropgen.cli.main import build_parser

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    commands = readme_commands()
    assert any("make-synthetic" in c for c in commands) and any(" splits " in c for c in commands)
    failures = []
    for command in commands:
        argv = shlex.split(command)[1:]
        if "--help" in argv:
            continue
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            failures.append(command)
    assert not failures, f"README commands that nnunetv2_dropgen's parser rejects: {failures}"
