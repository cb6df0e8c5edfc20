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

from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from tqdm import tqdm

from nnunetv2_dropgen.demo.commands import cpu_processes, in_process, nnunet_command, nnunet_environment, run_logged
from nnunetv2_dropgen.demo.figure import feature_panels
from nnunetv2_dropgen.demo.shipped import ShippedManifest, ShippedModelsError, install_shipped_models, load_manifest
from nnunetv2_dropgen.demo.trainers import demo_epochs, demo_iterations, demo_trainer_names
from nnunetv2_dropgen.evaluation import (
    EvaluationError,
    EvaluationRequest,
    EvaluationResult,
    ModelSpec,
    PredictionSettings,
    TestSet,
    run_evaluation,
)
from nnunetv2_dropgen.evaluation.metrics import FOREGROUND
from nnunetv2_dropgen.feature_extractors import EMBEDDED_DEFAULT, get_extractor_spec
from nnunetv2_dropgen.network.feature_record import FeaturePipelineMismatch
from nnunetv2_dropgen.plans import CPU_FIRST_STAGE_FEATURES, PlansVariant, write_variant
from nnunetv2_dropgen.synthetic import SOURCE_DOMAIN, generate_dataset
from nnunetv2_dropgen.synthetic.dataset import DOMAINS_FILE, ExistingDatasetDiffers, read_generation
from nnunetv2_dropgen.weights import ResolvedWeights, WeightsDownloadFailed, WeightsMissing, resolve_weights

PREFERRED_EXTRACTOR = "anatomix"
"""DropGen's extractor, used whenever its weights are on this machine or can be fetched quickly."""
EMBEDDED_EXTRACTOR = EMBEDDED_DEFAULT
"""The extractor shipped in the package, used when anatomix cannot be had (offline, air-gapped)."""
DATASET_NAME = "DropGenDemo"
CPU_PLANS = "nnUNetPlansCPU"
CONFIGURATION = "3d_fullres"
FOLD = "all"  # train on every source case: no cross-validation split, so few cases suffice
BASELINE_HEADER = "nnU-Net"
"""The baseline's name in the table and the figure; DropGen's names its extractor, e.g. 'DropGen (minimix2)'."""
FIGURE_NAME = "dropgen_demo.png"
SHIPPED_FOLDER = "shipped_models"
"""Where the shipped models' evaluation (table, JSON, figure) goes inside the working folder."""
SHIPPED_FIGURE_NAME = "dropgen_demo_shipped.png"


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
    extractor: str | None = None  # None: anatomix when it can be had quickly, else the embedded extractor
    weights: Path | None = None  # an explicit extractor weight file (--weights)

    @property
    def plans(self) -> str:
        """nnU-Net's plans on a GPU; on a CPU the narrow ones (`nnunetv2_dropgen plans --cpu`), as users train there."""
        return "nnUNetPlans" if self.device == "cuda" else CPU_PLANS


@dataclass(frozen=True)
class DemoResult:
    dice: dict[str, dict[str, float]]  # domain -> trainer -> foreground-mean Dice
    trainers: tuple[str, str]
    extractor: str
    table: str
    figure: Path
    dice_file: Path
    weights: ResolvedWeights
    evaluation: EvaluationResult
    shipped: EvaluationResult | None = None
    """The models shipped with the package (demo.shipped) on the same test sets; None when not evaluated."""
    shipped_note: str = ""
    """What the shipped models are, or why they were not evaluated."""
    shipped_manifest: ShippedManifest | None = None


def say(message: str) -> None:
    """Print without breaking an active progress bar."""
    tqdm.write(message)


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every step; raises WeightsError or ShippedModelsError (before anything is written), DemoError,
    StepFailed or EvaluationError. The shipped models' step never raises: its note says what went wrong."""
    if settings.num_train < 1 or settings.num_test < 1:
        raise DemoError("The demo needs at least one training case and one test case per domain.")
    extractor, weights = choose_extractor(settings.extractor, settings.weights)
    say(f"{extractor} weights: {weights.path} ({weights.origin}; {weights.detail})")
    if not weights.verified:
        say(f"WARNING: DropGen will use UNVERIFIED extractor weights ({weights.path}).")
    headers = (f"DropGen ({extractor})", BASELINE_HEADER)
    workdir = settings.workdir.resolve()
    trainers = demo_trainer_names(settings.schedule, extractor)
    explicit = weights.path if settings.weights is not None else None
    env = nnunet_environment(workdir, settings.device, explicit, extractor)
    logs = workdir / "logs"
    say(f"Working folder: {workdir} (logs in {logs})")

    manifest = load_manifest()
    steps = [
        "generate data",
        "plan and preprocess",
        *(f"train {h}" for h in headers),
        "predict and evaluate",
        "evaluate shipped models",
    ]
    with tqdm(total=len(steps), desc="demo", unit="step", position=0, disable=None) as overall:

        def next_step() -> None:
            overall.set_postfix_str(steps[overall.n])

        next_step()
        dataset = _generate(settings, workdir / "nnUNet_raw")
        domains = list(json.loads((dataset / DOMAINS_FILE).read_text())["domains"])
        say(f"Dataset: {dataset} (training domain {SOURCE_DOMAIN!r}; test domains {', '.join(domains)})")
        mismatch = manifest.mismatch(read_generation(dataset))
        if mismatch is not None:
            say(
                f"The models shipped with the package will not be evaluated: they were trained on other data "
                f"({mismatch}); --shape {' '.join(map(str, manifest.data['shape']))} makes data they suit."
            )
        overall.update()

        next_step()
        processes = str(cpu_processes())
        plan = [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(settings.dataset_id), "-c", CONFIGURATION]
        run_logged(
            "planning and preprocessing",
            [*plan, "-np", processes, "-npfp", processes, "--clean"],  # never a fingerprint of earlier data
            logs / "plan_and_preprocess.log",
            env,
        )
        if settings.plans == CPU_PLANS:
            narrow = PlansVariant(first_stage_features=CPU_FIRST_STAGE_FEATURES)
            write_variant(Path(env["nnUNet_preprocessed"]) / dataset.name, narrow, name=CPU_PLANS)
        overall.update()

        for trainer, header in zip(trainers, headers, strict=True):
            next_step()
            _train(settings, trainer, header, env, logs)
            overall.update()

        next_step()
        with in_process(env):
            request = _request(settings, workdir, dataset, domains, trainers, headers, weights, env)
            evaluation = run_evaluation(request)
        overall.update()

        next_step()
        shipped, note = (
            None,
            (
                f"The shipped models were not evaluated: they were trained on other data ({mismatch}); "
                f"--shape {' '.join(map(str, manifest.data['shape']))} makes data they suit."
            ),
        )
        if mismatch is None:
            with in_process(env):
                shipped, note = _evaluate_shipped(settings, workdir, request, manifest, env, dataset)
        overall.update()

    table = evaluation.table
    dice = {d: {t: table.mean(d, h, FOREGROUND) for t, h in zip(trainers, headers, strict=True)} for d in domains}
    files = evaluation.files
    return DemoResult(
        dice,
        trainers,
        extractor,
        evaluation.markdown,
        files["figure"],
        files["json"],
        weights,
        evaluation,
        shipped,
        note,
        manifest,
    )


def choose_extractor(requested: str | None, weights: Path | None) -> tuple[str, ResolvedWeights]:
    """The extractor the demo uses and its weights, resolved before anything is written.

    Asked for by name (or with a weights file, which is anatomix's unless named otherwise): that one or a
    WeightsError. Otherwise anatomix when its weights are here or download quickly, else the embedded
    extractor (EMBEDDED_EXTRACTOR), said in one line.
    """
    name = requested or (PREFERRED_EXTRACTOR if weights is not None else None)
    if name is not None:
        return name, _resolve(name, weights)
    try:
        return PREFERRED_EXTRACTOR, _resolve(PREFERRED_EXTRACTOR, None)
    except (WeightsMissing, WeightsDownloadFailed) as exc:
        say(
            f"{PREFERRED_EXTRACTOR} weights are not on this machine and cannot be downloaded now "
            f"({type(exc).__name__}); using the embedded extractor {EMBEDDED_EXTRACTOR} instead "
            f"(--extractor {PREFERRED_EXTRACTOR} insists on {PREFERRED_EXTRACTOR})."
        )
        return EMBEDDED_EXTRACTOR, _resolve(EMBEDDED_EXTRACTOR, None)


def _resolve(name: str, explicit: Path | None) -> ResolvedWeights:
    with warnings.catch_warnings():  # an unverified file is reported by run_demo, in the demo's own words
        warnings.simplefilter("ignore", UserWarning)
        return resolve_weights(name, get_extractor_spec(name).weights, explicit)


def _request(
    settings: DemoSettings,
    workdir: Path,
    dataset: Path,
    domains: list[str],
    trainers: tuple[str, str],
    headers: tuple[str, str],
    weights: ResolvedWeights,
    env: Mapping[str, str],
) -> EvaluationRequest:
    """Every domain is a test set (the source one in-domain); predictions and results go into the working folder."""
    model = convert_trainer_plans_config_to_identifier(trainers[0], settings.plans, CONFIGURATION)
    model_folder = Path(env["nnUNet_results"]) / dataset.name / model
    title = (
        f"Trained on '{SOURCE_DOMAIN}' only, {demo_iterations(settings.schedule)} iterations each (a tour of every "
        f"step, not a verdict): {trainers[0]} vs {trainers[1]}; DropGen's extractor: {weights.name}"
    )
    if not weights.verified:
        title += f"\nDropGen used UNVERIFIED extractor weights: not the published {weights.name} model"
    return EvaluationRequest(
        dataset=settings.dataset_id,
        models=[
            ModelSpec(trainer, plans=settings.plans, configuration=CONFIGURATION, folds=(FOLD,), label=header)
            for trainer, header in zip(trainers, headers, strict=True)
        ],
        test_sets=[TestSet(d, dataset / f"imagesTs_{d}", dataset / f"labelsTs_{d}") for d in domains],
        baseline=BASELINE_HEADER,
        out=workdir,
        prediction=PredictionSettings(device=settings.device),
        in_domain=(SOURCE_DOMAIN,),
        figure_name=FIGURE_NAME,
        title=title,
        slice_panels=feature_panels(model_folder, FOLD),
    )


def _evaluate_shipped(
    settings: DemoSettings,
    workdir: Path,
    tour: EvaluationRequest,
    manifest: ShippedManifest,
    env: Mapping[str, str],
    dataset: Path,
) -> tuple[EvaluationResult | None, str]:
    """The shipped models, rebuilt beside the demo's own, on the same test sets as the tour, and their note.

    A failure here costs the user nothing already computed: it becomes the note, and the tour's table stands.
    """
    results = Path(env["nnUNet_results"]) / dataset.name
    dropgen = next(m for m in manifest.models if m.extractor is not None)
    try:
        request = EvaluationRequest(
            dataset=settings.dataset_id,
            models=install_shipped_models(results),
            test_sets=tour.test_sets,
            baseline=manifest.baseline,
            out=workdir / SHIPPED_FOLDER,
            prediction=tour.prediction,
            in_domain=tour.in_domain,
            figure_name=SHIPPED_FIGURE_NAME,
            title=f"Models shipped with the package, {manifest.iterations} iterations each, trained on "
            f"'{SOURCE_DOMAIN}' only (DropGen's extractor: {dropgen.extractor})",
            slice_panels=feature_panels(results / dropgen.folder_name, FOLD),
        )
        return run_evaluation(request), manifest.describe()
    except (ShippedModelsError, EvaluationError, FeaturePipelineMismatch) as exc:
        return None, f"The shipped models could not be evaluated: {exc}"
    except Exception as exc:  # the demo's own results are complete: report this step's failure, do not lose them
        return None, f"The shipped models could not be evaluated ({type(exc).__name__}: {exc})."


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
    except ExistingDatasetDiffers as exc:
        raise DemoError(
            f"{exc.folder} already exists and {exc.reason}. The demo reuses its data only if made with the same "
            f"settings: use another --workdir, or delete {raw.parent} to start over."
        ) from exc
    except ValueError as exc:
        raise DemoError(str(exc)) from exc


def _train(settings: DemoSettings, trainer: str, header: str, env: Mapping[str, str], logs: Path) -> None:
    command = [
        nnunet_command("nnUNetv2_train"),
        str(settings.dataset_id),
        CONFIGURATION,
        FOLD,
        "-tr",
        trainer,
        "-p",
        settings.plans,
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
        f"published {weights.name} model."
    )


__all__ = ["DemoError", "DemoResult", "DemoSettings", "choose_extractor", "run_demo", "unverified_note"]
