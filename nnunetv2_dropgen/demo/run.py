"""The demo pipeline: synthetic data -> nnU-Net plan/preprocess -> train DropGen and nnU-Net -> test every domain.

Every nnU-Net step runs as the user-facing nnU-Net command in a subprocess (see `commands`), with
nnU-Net's folders inside the demo's working folder, so the demo never touches a user's own nnU-Net data.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from tqdm import tqdm

from nnunetv2_dropgen.demo.commands import cpu_processes, nnunet_command, nnunet_environment, run_logged
from nnunetv2_dropgen.demo.figure import DomainRow, best_slice, save_figure
from nnunetv2_dropgen.demo.report import format_table
from nnunetv2_dropgen.demo.trainers import PAIRS
from nnunetv2_dropgen.synthetic import SOURCE_DOMAIN, generate_dataset
from nnunetv2_dropgen.synthetic.dataset import DOMAINS_FILE, FILE_ENDING
from nnunetv2_dropgen.weights import ResolvedWeights, resolve_weights

DATASET_NAME = "DropGenDemo"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
FOLD = "all"  # train on every source case: no cross-validation split, so few cases suffice
HEADERS = ("DropGen", "nnU-Net")
FIGURE_FEATURES = 3
"""How many extractor feature channels the figure shows per domain."""


class DemoError(RuntimeError):
    """A demo step cannot run or did not work; the message says which and what to do."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo generates and how long it trains (`schedule` is a key of trainers.PAIRS)."""

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


def say(message: str) -> None:
    """Print without breaking an active progress bar."""
    tqdm.write(message)


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every step; raises WeightsError (before anything is written), DemoError or commands.StepFailed."""
    if settings.num_train < 1 or settings.num_test < 1:
        raise DemoError("The demo needs at least one training case and one test case per domain.")
    with warnings.catch_warnings():  # an unverified file is reported below, in the demo's own words
        warnings.simplefilter("ignore", UserWarning)
        weights = resolve_weights("anatomix", explicit=settings.weights)
    say(f"anatomix weights: {weights.path} ({weights.source}; {weights.detail})")
    if not weights.verified:
        say(f"WARNING: DropGen will use UNVERIFIED extractor weights ({weights.path}).")
    workdir = settings.workdir.resolve()
    pair = PAIRS[settings.schedule]
    trainers = (pair[0].__name__, pair[1].__name__)
    epochs = pair[0].schedule.epochs
    env = nnunet_environment(workdir, settings.device, weights.path if settings.weights is not None else None)
    logs = workdir / "logs"
    say(f"Working folder: {workdir} (logs in {logs})")

    steps = ["generate data", "plan and preprocess", *(f"train {h}" for h in HEADERS), "predict", "evaluate", "figure"]
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
            _train(settings, trainer, header, epochs, env, logs)
            overall.update()

        next_step()
        predictions = workdir / "predictions"
        with tqdm(
            total=len(domains) * len(trainers), desc="predict", unit="run", position=1, leave=False, disable=None
        ) as bar:
            for domain in domains:
                for trainer in trainers:
                    bar.set_postfix_str(f"{domain}, {trainer}")
                    _predict(settings, dataset, domain, trainer, predictions / trainer / domain, env, logs)
                    bar.update()
        overall.update()

        next_step()
        labels = _foreground_labels(dataset)
        dice = {
            domain: {
                trainer: _evaluate(dataset / f"labelsTs_{domain}", predictions / trainer / domain, labels)
                for trainer in trainers
            }
            for domain in domains
        }
        dice_file = workdir / "dice.json"
        dice_file.write_text(json.dumps(dice, indent=2) + "\n")
        overall.update()

        next_step()
        figure = _figure(settings, dataset, domains, trainers, predictions, dice, len(labels), weights, env)
        overall.update()

    table = format_table(dice, trainers, HEADERS, SOURCE_DOMAIN)
    return DemoResult(dice, trainers, table, figure, dice_file, weights)


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


def _train(settings: DemoSettings, trainer: str, header: str, epochs: int, env: Mapping[str, str], logs: Path) -> None:
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
    with tqdm(total=epochs, desc=f"train {header}", unit="epoch", position=1, leave=False, disable=None) as bar:
        run_logged(f"training {trainer}", command, logs / f"train_{trainer}.log", env, bar, r"Epoch time")


def _predict(
    settings: DemoSettings, dataset: Path, domain: str, trainer: str, out: Path, env: Mapping[str, str], logs: Path
) -> None:
    """nnUNetv2_predict on one test folder; sequential mode (-npp 0 -nps 0) spares spawning workers for 2 cases."""
    command = [
        nnunet_command("nnUNetv2_predict"),
        "-i", str(dataset / f"imagesTs_{domain}"),
        "-o", str(out),
        "-d", str(settings.dataset_id),
        "-c", CONFIGURATION,
        "-f", FOLD,
        "-tr", trainer,
        "-device", settings.device,
        "-npp", "0",
        "-nps", "0",
        "--disable_progress_bar",
    ]  # fmt: skip
    run_logged(f"prediction of {domain} with {trainer}", command, logs / f"predict_{trainer}_{domain}.log", env)


def _foreground_labels(dataset: Path) -> list[int]:
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    return sorted(value for value in labels.values() if value != 0)


def _evaluate(reference: Path, predicted: Path, labels: list[int]) -> float:
    """nnU-Net's own evaluation; its foreground mean is the Dice averaged over labels (each over cases)."""
    summary = compute_metrics_on_folder(
        str(reference),
        str(predicted),
        str(predicted / "summary.json"),
        SimpleITKIO(),
        FILE_ENDING,
        labels,
        num_processes=1,  # a few cases per folder: one worker is faster than spawning several
        chill=False,
    )
    return float(summary["foreground_mean"]["Dice"])


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in this process's environment for the duration of the block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load_dropgen_network(model_folder: Path, env: Mapping[str, str]) -> torch.nn.Module:
    """The trained DropGen network, restored the way nnUNetv2_predict restores it (trainer found by name)."""
    # nnU-Net finds the trainer through nnUNet_extTrainer in this process's environment. The predictor prints
    # CPU notices and every folder it searches, and imports every trainer module (some warn about deprecated
    # torch APIs): none of that is news to a demo user.
    trainer_search = {"nnUNet_extTrainer": env["nnUNet_extTrainer"], "nnUNet_compile": "false"}
    with _environ(trainer_search), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        predictor = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(FOLD,))
    return predictor.network


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _figure(
    settings: DemoSettings,
    dataset: Path,
    domains: list[str],
    trainers: tuple[str, str],
    predictions: Path,
    dice: dict[str, dict[str, float]],
    num_labels: int,
    weights: ResolvedWeights,
    env: Mapping[str, str],
) -> Path:
    """Slices of the first test case in every domain, with features from the trained DropGen network's extractor."""
    model_folder = Path(env["nnUNet_results"]) / dataset.name / f"{trainers[0]}__{PLANS}__{CONFIGURATION}"
    network = _load_dropgen_network(model_folder, env)
    case = sorted((dataset / f"labelsTs_{SOURCE_DOMAIN}").glob(f"*{FILE_ENDING}"))[0].name[: -len(FILE_ENDING)]
    ground_truth = _read(dataset / f"labelsTs_{SOURCE_DOMAIN}" / f"{case}{FILE_ENDING}")
    z = best_slice(ground_truth)
    rows = []
    for domain in domains:
        image = _read(dataset / f"imagesTs_{domain}" / f"{case}_0000{FILE_ENDING}").astype(np.float32)
        features = network.compute_features(torch.from_numpy(image)[None, None])[0, :FIGURE_FEATURES, z]
        rows.append(
            DomainRow(
                domain=domain,
                image=image[z],
                features=list(features.numpy()),
                ground_truth=_read(dataset / f"labelsTs_{domain}" / f"{case}{FILE_ENDING}")[z],
                predictions=[_read(predictions / t / domain / f"{case}{FILE_ENDING}")[z] for t in trainers],
            )
        )
    title = f"Trained on '{SOURCE_DOMAIN}' only ({trainers[0]} vs {trainers[1]}); test case {case}, slice {z}"
    if not weights.verified:
        title += "\nDropGen used UNVERIFIED extractor weights: not the published anatomix model"
    return save_figure(
        settings.workdir.resolve() / "dropgen_demo.png",
        rows,
        dice,
        trainers,
        HEADERS,
        SOURCE_DOMAIN,
        num_labels,
        title,
    )


def unverified_note(weights: ResolvedWeights) -> str | None:
    """The line under the table when DropGen's numbers do not come from the published extractor."""
    if weights.verified:
        return None
    return (
        f"DropGen used UNVERIFIED extractor weights ({weights.path}): these Dice values do not reflect the "
        "published anatomix model."
    )


__all__ = ["DemoError", "DemoResult", "DemoSettings", "run_demo", "unverified_note"]
