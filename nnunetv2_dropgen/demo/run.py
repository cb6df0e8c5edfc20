"""The demo pipeline: synthetic data -> nnU-Net plan/preprocess -> train DropGen and nnU-Net -> evaluate every domain.

Planning and training run as the user-facing nnU-Net commands in subprocesses (see `commands`); prediction,
scoring, the table and the figure are `nnunetv2_dropgen evaluate`'s code (`nnunetv2_dropgen.evaluation`).
nnU-Net's folders live inside the demo's working folder, so the demo never touches a user's own nnU-Net data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nnunetv2_dropgen.demo.commands import cpu_processes, in_process, nnunet_command, nnunet_environment, run_logged
from nnunetv2_dropgen.demo.figure import feature_panels
from nnunetv2_dropgen.demo.trainers import demo_epochs, demo_trainer_names
from nnunetv2_dropgen.evaluation import (
    EvaluationRequest,
    EvaluationResult,
    ModelSpec,
    PredictionSettings,
    TestSet,
    run_evaluation,
)
from nnunetv2_dropgen.evaluation.metrics import FOREGROUND
from nnunetv2_dropgen.feature_extractors import get_extractor_spec
from nnunetv2_dropgen.synthetic import SOURCE_DOMAIN, generate_dataset
from nnunetv2_dropgen.synthetic.dataset import DOMAINS_FILE
from nnunetv2_dropgen.weights import ResolvedWeights, resolve_weights

EXTRACTOR = "anatomix"
DATASET_NAME = "DropGenDemo"
CONFIGURATION = "3d_fullres"
FOLD = "all"  # train on every source case: no cross-validation split, so few cases suffice
HEADERS = ("DropGen", "nnU-Net")
"""The two models' names in the table and the figure; nnU-Net is the baseline."""
FIGURE_NAME = "dropgen_demo.png"


class DemoError(RuntimeError):
    """A demo step cannot run or did not work; the message says which and what to do."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo generates and how long it trains (`schedule` is a key of trainers.DEMO_SCHEDULES)."""

    workdir: Path
    schedule: str
    device: str
    num_train: int
    num_test: int
    shape: tuple[int, int, int]
    domains: tuple[str, ...] | None = None  # None: every built-in target domain
    dataset_id: int = 501
    weights: Path | None = None  # an explicit extractor weight file (--weights)


@dataclass(frozen=True)
class DemoResult:
    dice: dict[str, dict[str, float]]  # domain -> trainer -> foreground-mean Dice
    trainers: tuple[str, str]
    table: str
    figure: Path
    dice_file: Path
    weights: ResolvedWeights
    evaluation: EvaluationResult


def say(message: str) -> None:
    """Print without breaking an active progress bar."""
    tqdm.write(message)


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every step; raises WeightsError (before anything is written), DemoError, StepFailed or EvaluationError."""
    if settings.num_train < 1 or settings.num_test < 1:
        raise DemoError("The demo needs at least one training case and one test case per domain.")
    with warnings.catch_warnings():  # an unverified file is reported below, in the demo's own words
        warnings.simplefilter("ignore", UserWarning)
        weights = resolve_weights(EXTRACTOR, get_extractor_spec(EXTRACTOR).weights, settings.weights)
    say(f"{EXTRACTOR} weights: {weights.path} ({weights.origin}; {weights.detail})")
    if not weights.verified:
        say(f"WARNING: DropGen will use UNVERIFIED extractor weights ({weights.path}).")
    workdir = settings.workdir.resolve()
    trainers = demo_trainer_names(settings.schedule, EXTRACTOR)
    explicit = weights.path if settings.weights is not None else None
    env = nnunet_environment(workdir, settings.device, explicit, EXTRACTOR)
    logs = workdir / "logs"
    say(f"Working folder: {workdir} (logs in {logs})")

    steps = ["generate data", "plan and preprocess", *(f"train {h}" for h in HEADERS), "predict and evaluate"]
    with tqdm(total=len(steps), desc="demo", unit="step", position=0, disable=None) as overall:

        def next_step() -> None:
            overall.set_postfix_str(steps[overall.n])

        next_step()
        dataset = _generate(settings, workdir / "nnUNet_raw")
        domains = list(json.loads((dataset / DOMAINS_FILE).read_text())["domains"])
        say(f"Dataset: {dataset} (training domain {SOURCE_DOMAIN!r}; test domains {', '.join(domains)})")
        overall.update()

        next_step()
        processes = str(cpu_processes())
        plan = [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(settings.dataset_id), "-c", CONFIGURATION]
        run_logged(
            "planning and preprocessing",
            [*plan, "-np", processes, "-npfp", processes],
            logs / "plan_and_preprocess.log",
            env,
        )
        overall.update()

        for trainer, header in zip(trainers, HEADERS, strict=True):
            next_step()
            _train(settings, trainer, header, env, logs)
            overall.update()

        next_step()
        with in_process(env):
            evaluation = run_evaluation(_request(settings, workdir, dataset, domains, trainers, weights, env))
        overall.update()

    table = evaluation.table
    dice = {d: {t: table.mean(d, h, FOREGROUND) for t, h in zip(trainers, HEADERS, strict=True)} for d in domains}
    return DemoResult(
        dice, trainers, evaluation.markdown, evaluation.files["figure"], evaluation.files["json"], weights, evaluation
    )


def _request(
    settings: DemoSettings,
    workdir: Path,
    dataset: Path,
    domains: list[str],
    trainers: tuple[str, str],
    weights: ResolvedWeights,
    env: Mapping[str, str],
) -> EvaluationRequest:
    """Every domain is a test set (the source one in-domain); predictions and results go into the working folder."""
    model_folder = Path(env["nnUNet_results"]) / dataset.name / f"{trainers[0]}__nnUNetPlans__{CONFIGURATION}"
    title = f"Trained on '{SOURCE_DOMAIN}' only ({trainers[0]} vs {trainers[1]})"
    if not weights.verified:
        title += f"\nDropGen used UNVERIFIED extractor weights: not the published {EXTRACTOR} model"
    return EvaluationRequest(
        dataset=settings.dataset_id,
        models=[
            ModelSpec(trainer, configuration=CONFIGURATION, folds=(FOLD,), label=header)
            for trainer, header in zip(trainers, HEADERS, strict=True)
        ],
        test_sets=[TestSet(d, dataset / f"imagesTs_{d}", dataset / f"labelsTs_{d}") for d in domains],
        baseline=HEADERS[1],
        out=workdir,
        prediction=PredictionSettings(device=settings.device),
        in_domain=(SOURCE_DOMAIN,),
        figure_name=FIGURE_NAME,
        title=title,
        slice_panels=feature_panels(model_folder, FOLD),
    )


def _generate(settings: DemoSettings, raw: Path) -> Path:
    try:
        return generate_dataset(
            raw,
            dataset_id=settings.dataset_id,
            name=DATASET_NAME,
            num_train=settings.num_train,
            num_test_per_domain=settings.num_test,
            shape=settings.shape,
            domains=settings.domains,
        )
    except ValueError as exc:
        raise DemoError(
            f"{exc} The demo reuses a dataset only if it was made with the same settings: "
            f"use another --workdir, or delete {raw} to start over."
        ) from exc


def _train(settings: DemoSettings, trainer: str, header: str, env: Mapping[str, str], logs: Path) -> None:
    command = [
        nnunet_command("nnUNetv2_train"),
        str(settings.dataset_id),
        CONFIGURATION,
        FOLD,
        "-tr",
        trainer,
        "-device",
        settings.device,
    ]
    epochs = demo_epochs(settings.schedule)
    with tqdm(total=epochs, desc=f"train {header}", unit="epoch", position=1, leave=False, disable=None) as bar:
        run_logged(f"training {trainer}", command, logs / f"train_{trainer}.log", env, bar, r"Epoch time")


def unverified_note(weights: ResolvedWeights) -> str | None:
    """The line under the table when DropGen's numbers do not come from the published extractor."""
    if weights.verified:
        return None
    return (
        f"DropGen used UNVERIFIED extractor weights ({weights.path}): these Dice values do not reflect the "
        f"published {EXTRACTOR} model."
    )


__all__ = ["DemoError", "DemoResult", "DemoSettings", "run_demo", "unverified_note"]
