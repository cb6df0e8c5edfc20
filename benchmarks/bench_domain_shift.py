"""Domain generalization on the synthetic domain-shift data: DropGen vs nnU-Net (ERM) vs nnU-Net's DA5.

Every arm trains on the `source` domain with the same plans, the same schedule (a trainer-name suffix, so
`nnUNetTrainer_<schedule>` and `nnUNetTrainerDA5_<schedule>` train exactly as long as DropGen) and the
same seed, and is scored by `nnunetv2_dropgen evaluate`'s code on every held-out domain:

  ERM           nnUNetTrainer_<schedule>
  DA5           nnUNetTrainerDA5_<schedule>                          (nnU-Net's strongest built-in augmentation)
  DropGen       DropGenTrainer_<extractor>[_pNNN]_<schedule>
  DropGen DA5   nnUNetTrainerDA5_DropGen_<extractor>[_pNNN]_<schedule> (the two composed)
  noDropout     DropGenTrainer_<extractor>_noDropout_<schedule>     (ablation: no channel dropout)
  featuresOnly  DropGenTrainer_<extractor>_featuresOnly_<schedule>  (ablation: features, never the image)
  <arm> N cases ERM, DA5 and DropGen trained on fold 0 of a few-shot split (`nnunetv2_dropgen splits`)
  anatomix      DropGenTrainer_anatomix[_pNNN]_<schedule> (--with-anatomix, when its weights are available)

On a CPU every arm uses the narrow plans (`nnunetv2_dropgen plans --cpu`, `-p nnUNetPlansCPU`) and the
`80epochs` schedule (20,000 iterations), the shortest measured after which every arm's pseudo-Dice curve is
flat (the report says whether it was; `cpuBench`, 3000 iterations, is a quick look at which DropGen has not
converged: benchmarks/RESULTS.md). Settings are chosen on a separately generated `validation` domain, never on
the test domains: with --choose-p, DropGen is trained once per dropout probability on the first seed and the p
with the best validation Dice is used for every seed. Each seed generates its own dataset (its own dataset id)
and seeds torch/numpy/random in the training process; nnU-Net's augmentation workers draw their own
randomness, which the spread over seeds includes. --cross-modality adds the CT-to-MR experiment: ERM and
DropGen trained on a CT with nnU-Net's CT plans and with per-image normalization plans, tested on MR-like
domains.

The report (Markdown, JSON, a figure of every arm's pseudo-Dice curve) gives Dice per domain (mean and
spread over seeds), DropGen minus ERM with a 95 % interval over seeds and test cases, convergence per arm
and the verdict against the targets. Trained models and predictions stay in --workdir, so an interrupted
run resumes; --parallel N trains N models at once, one torch thread each.

    PYTHONPATH=. python benchmarks/bench_domain_shift.py --parallel 2                # CPU: 80epochs (hours per seed)
    PYTHONPATH=. python benchmarks/bench_domain_shift.py --device cuda               # GPU: the 'demoGPU' schedule
    PYTHONPATH=. python benchmarks/bench_domain_shift.py --tiny                      # checks every step runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import machine_description
from _domain_shift_report import (
    SHIFTED_MEAN,
    TARGET_MEAN,
    convergence_table,
    dice_table,
    difference_table,
    per_case_dice,
    save_curves,
    shifted_targets,
    training_curve,
    training_seconds,
    verdict,
)
from filelock import FileLock, Timeout
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_dropgen.cli import splits_command
from nnunetv2_dropgen.demo.commands import cpu_processes, in_process, nnunet_command, nnunet_environment, run_logged
from nnunetv2_dropgen.evaluation import EvaluationRequest, ModelSpec, PredictionSettings, TestSet, run_evaluation
from nnunetv2_dropgen.evaluation.files import write_json_atomic, write_text_atomic
from nnunetv2_dropgen.evaluation.report import EvaluationTable
from nnunetv2_dropgen.feature_extractors import EMBEDDED_DEFAULT, available_extractors, get_extractor_spec
from nnunetv2_dropgen.network.feature_record import FeatureRecord
from nnunetv2_dropgen.network.options import OPTIONS, check_options
from nnunetv2_dropgen.plans import CPU_FIRST_STAGE_FEATURES, PlansVariant, write_variant
from nnunetv2_dropgen.synthetic import SOURCE_DOMAIN, generate_dataset, list_domains
from nnunetv2_dropgen.synthetic.domains import Domain
from nnunetv2_dropgen.synthetic.names import CT_SOURCE, MR_TARGETS
from nnunetv2_dropgen.trainers.schedule import schedule_from_token
from nnunetv2_dropgen.weights import WeightsError, resolve_weights

CONFIGURATION = "3d_fullres"
DEFAULT_PLANS, CPU_PLANS = "nnUNetPlans", "nnUNetPlansCPU"
VALIDATION = Domain("validation", (0.6, 0.2, 0.95, 0.35), noise_std=0.06, bias_field_strength=0.3)
"""The settings-selection domain: a contrast remapping with noise and bias that no test domain has."""
INFERENCE_ONLY_OPTIONS = ("volumeScaling",)
"""Options that change prediction only (network.options): their arm is DropGen's trained weights with the option
recorded, so the comparison with DropGen is paired, free of training noise, and costs no training."""
_TRAIN_SEEDED = (
    "import functools, os, random, sys, numpy, torch; seed = int(sys.argv[1]); random.seed(seed); "
    "numpy.random.seed(seed); torch.manual_seed(seed); threads = int(os.environ.get('DROPGEN_BENCH_THREADS', '0')); "
    "set_threads = torch.set_num_threads; torch.set_num_threads = lambda n: set_threads(threads or n); "
    "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as T; init = T.__init__; "
    "every = int(os.environ.get('DROPGEN_BENCH_SAVE_EVERY', '0')); "
    "T.__init__ = functools.wraps(init)(lambda self, *a, **k: "
    "(init(self, *a, **k), setattr(self, 'save_every', every or self.save_every))[0]); "
    "sys.argv = ['nnUNetv2_train', *sys.argv[2:]]; "
    "from nnunetv2.run.run_training import run_training_entry; run_training_entry()"
)
"""nnUNetv2_train, seeded, with as many torch threads as DROPGEN_BENCH_THREADS says (nnU-Net takes every core),
writing checkpoint_latest.pth every DROPGEN_BENCH_SAVE_EVERY epochs (nnU-Net: 50), so a run stopped at the end of
a session loses at most that many epochs."""


@dataclass(frozen=True)
class Arm:
    """One trained model: its name in the tables, the trainer, the fold it trains on and its plans."""

    label: str
    trainer: str
    fold: str = "all"
    plans: str = DEFAULT_PLANS


MAIN_ARMS = ("ERM", "DA5", "DropGen", "DropGen DA5", "noDropout", "featuresOnly")


def parse_args() -> argparse.Namespace:
    targets = [d for d in list_domains() if d != SOURCE_DOMAIN]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir", type=Path, default=Path("bench_domain_shift"), help="default: ./bench_domain_shift"
    )
    parser.add_argument("--tiny", action="store_true", help="smallest settings that run every step (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument(
        "--schedule", help="trainer-name schedule (default: demoGPU on cuda, 80epochs on cpu, demoTiny with --tiny)"
    )
    parser.add_argument("--plans", choices=("cpu", "default"), help="default: cpu (narrow) on a CPU, else nnU-Net's")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--tiny: 0)")
    parser.add_argument(
        "--extractor", default=EMBEDDED_DEFAULT, help=f"DropGen's extractor (default: {EMBEDDED_DEFAULT}, embedded)"
    )
    parser.add_argument("--with-anatomix", action="store_true", help="add DropGen with the published anatomix")
    parser.add_argument("--choose-p", type=float, nargs="+", help="dropout p to choose from on the validation domain")
    parser.add_argument(
        "--few-shot", type=int, default=2, help="training cases of the few-shot arms (default: 2; 0: no few-shot arms)"
    )
    parser.add_argument("--num-train", type=int, help="training cases (default: 8; --tiny: 4)")
    parser.add_argument("--num-test", type=int, help="test cases per domain (default: 4; --tiny: 1)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default: 32^3 (48^3 on cuda)")
    parser.add_argument("--domains", nargs="+", choices=targets, help="target domains (default: all; --tiny: inverted)")
    parser.add_argument("--cross-modality", action="store_true", help="add the CT-to-MR experiment")
    parser.add_argument(
        "--option-arms",
        action="store_true",
        help="measure the DropGen authors' behaviours (bnBatch, volumeScaling, unitImage, voxelNorm) against DropGen, "
        "also on test volumes padded to 8x the voxels with background (where per-volume scaling differs)",
    )
    parser.add_argument(
        "--options",
        nargs="+",
        choices=OPTIONS,
        help="with --option-arms: only these options (default: all four)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=MAIN_ARMS,
        help="train and report only these arms (ERM, the baseline, always; default: all; quote 'DropGen DA5'); "
        "a later run with more arms reuses every finished model",
    )
    parser.add_argument("--parallel", type=int, default=1, help="models trained at once, one thread each (default 1)")
    parser.add_argument(
        "--save-every",
        type=int,
        default=10,
        metavar="EPOCHS",
        help="write nnU-Net's checkpoint_latest.pth every EPOCHS epochs, from which a stopped run continues "
        "(default 10; nnU-Net's own: 50)",
    )
    parser.add_argument(
        "--disable-tta",
        action="store_true",
        help="predict without nnU-Net's mirroring (its --disable_tta): 8x fewer network passes, for slow CPUs",
    )
    parser.add_argument(
        "--dataset-id", type=int, default=620, help="seed s uses dataset id + s (CT to MR: id + 50 + s)"
    )
    parser.add_argument("--report", type=Path, help="Markdown report (default: <workdir>/domain_shift_report.md)")
    args = parser.parse_args()
    if args.save_every < 1:
        parser.error(f"--save-every must be at least 1 epoch, not {args.save_every}")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny, cpu = args.tiny, args.device == "cpu"
    args.schedule = args.schedule or ("demoTiny" if tiny else "80epochs" if cpu else "demoGPU")
    args.plans = CPU_PLANS if (args.plans or ("cpu" if cpu else "default")) == "cpu" else DEFAULT_PLANS
    args.seeds = args.seeds or ([0] if tiny else [0, 1, 2])
    args.choose_p = args.choose_p or ([0.5, 0.75] if tiny else [0.5, 0.75, 0.9])
    args.num_train = args.num_train or (4 if tiny else 8)
    args.num_test = args.num_test or (1 if tiny else 4)
    args.shape = tuple(args.shape or ((48, 48, 48) if not cpu and not tiny else (32, 32, 32)))
    args.domains = args.domains or (["inverted"] if tiny else targets)
    args.options = tuple(args.options or OPTIONS)
    args.workdir = args.workdir.resolve()
    args.report = (args.report or args.workdir / "domain_shift_report.md").resolve()
    return args


def check_extractor(name: str) -> None:
    """Stop before any training when DropGen's extractor or its weights are not there."""
    if name not in available_extractors():
        sys.exit(f"error: extractor {name!r} is not registered here (available: {', '.join(available_extractors())}).")
    try:
        resolve_weights(name, get_extractor_spec(name).weights)
    except WeightsError as exc:
        sys.exit(f"error: DropGen with {name} needs its weights: {exc}")


def dropgen_name(
    extractor: str, schedule: str, p: float | None = None, ablation: str | None = None, base: str | None = None
) -> str:
    """A DropGen trainer name; `base`: an nnU-Net trainer it goes on (nnUNetTrainerDA5 -> ..._DropGen_...)."""
    parts = [f"{base}_DropGen" if base else "DropGenTrainer", get_extractor_spec(extractor).trainer_token]
    if p is not None:
        parts.append(f"p{round(p * 100):03d}")
    if ablation:
        parts.append(ablation)
    return "_".join([*parts, schedule])


class Bench:
    """One benchmark run: datasets per seed, trainings (reused when finished), evaluations."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = nnunet_environment(args.workdir, args.device, None, args.extractor)
        self.logs = args.workdir / "logs"
        self.times_file = args.workdir / "train_times.json"
        self.times: dict[str, float] = json.loads(self.times_file.read_text()) if self.times_file.is_file() else {}
        # --parallel trainings finish together and record at once, and two runs may share a --workdir: a file
        # lock excludes both (filelock, a torch dependency, opens the lock file per thread)
        self.times_lock = FileLock(self.times_file.with_name(f"{self.times_file.name}.lock"))

    def dataset(self, dataset_id: int, seed: int, cross_modality: bool = False) -> tuple[int, Path]:
        """Generate (or reuse) a seed's dataset, plan it, and write the CPU (and per-image) plans."""
        # two runs started together on one --workdir would write and plan the same dataset at once
        with FileLock(self.args.workdir / f".dataset_{dataset_id}.lock"):
            return self._dataset(dataset_id, seed, cross_modality)

    def _dataset(self, dataset_id: int, seed: int, cross_modality: bool) -> tuple[int, Path]:
        args = self.args
        domains = list(MR_TARGETS) if cross_modality else [*args.domains, VALIDATION]
        folder = generate_dataset(
            Path(self.env["nnUNet_raw"]),
            dataset_id=dataset_id,
            name=f"{'CTtoMR' if cross_modality else 'DomainShift'}Seed{seed}",
            num_train=args.num_train,
            num_test_per_domain=args.num_test,
            shape=args.shape,
            domains=domains,
            seed=seed,
            cross_modality=cross_modality,
        )
        preprocessed = Path(self.env["nnUNet_preprocessed"]) / folder.name
        if not (preprocessed / f"{DEFAULT_PLANS}.json").is_file():
            n = str(cpu_processes())
            command = [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION]
            run_logged(
                f"planning {folder.name}",
                [*command, "-np", n, "-npfp", n],
                self.logs / f"plan_{dataset_id}.log",
                self.env,
            )
        narrow = CPU_FIRST_STAGE_FEATURES if args.plans == CPU_PLANS else None
        if narrow:
            write_variant(preprocessed, PlansVariant(first_stage_features=narrow), name=CPU_PLANS)
        if cross_modality:
            name = self.per_image_plans
            write_variant(
                preprocessed, PlansVariant(per_image_normalization=True, first_stage_features=narrow), name=name
            )
            if not (preprocessed / f"{name}_{CONFIGURATION}").is_dir():
                command = [nnunet_command("nnUNetv2_preprocess"), "-d", str(dataset_id), "-plans_name", name]
                run_logged(f"preprocessing {name}", [*command, "-c", CONFIGURATION, "-np", str(cpu_processes())],
                           self.logs / f"preprocess_{dataset_id}_{name}.log", self.env)  # fmt: skip
        return dataset_id, folder

    @property
    def per_image_plans(self) -> str:
        return "nnUNetPlansPerImageNorm" + ("CPU" if self.args.plans == CPU_PLANS else "")

    def few_shot_split(self, dataset_id: int, seed: int) -> None:
        """Fold 0 of a few-shot split through `nnunetv2_dropgen splits` (folds: as many as leave N to draw from)."""
        folds = max(2, min(5, self.args.num_train // 2))
        parser = argparse.ArgumentParser()
        splits_command.register(parser.add_subparsers())
        argv = ["splits", "-d", str(dataset_id), "--few-shot", str(self.args.few_shot), "--folds", str(folds)]
        split_args = parser.parse_args([*argv, "--seed", str(seed), "--force"])
        with in_process(self.env):
            if split_args.func(split_args) != 0:
                sys.exit("error: the few-shot split could not be written (see above).")

    def model_folder(self, dataset_id: int, arm: Arm) -> Path | None:
        folder = next(Path(self.env["nnUNet_results"]).glob(f"Dataset{dataset_id:03d}_*"), None)
        if folder is None:
            return None
        model = convert_trainer_plans_config_to_identifier(arm.trainer, arm.plans, CONFIGURATION)
        return folder / model / f"fold_{arm.fold}"

    def train(self, dataset_id: int, seed: int, arm: Arm, wait: bool = True) -> bool:
        """Train `arm` unless its final checkpoint exists; record the wall time. False (nothing done) when another
        run on this --workdir is training the same model and `wait` is False; with `wait`, wait for it.

        A training interrupted after nnU-Net wrote checkpoint_latest.pth (every --save-every epochs) continues from
        it (nnUNetv2_train --c); its time is then read from the checkpoint's epoch timestamps (train_time).
        """
        # ERM is in every run: two runs sharing a --workdir would otherwise both train it into one folder
        lock = FileLock(self.args.workdir / f".train_{self.time_key(dataset_id, arm).replace('/', '_')}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                return False
            sys.stdout.write(
                f"  waiting: another run on this --workdir is training {arm.trainer} (dataset {dataset_id})\n"
            )
            sys.stdout.flush()
            lock.acquire()
        try:
            self._train(dataset_id, seed, arm)
        finally:
            lock.release()
        return True

    def _train(self, dataset_id: int, seed: int, arm: Arm) -> None:
        fold = self.model_folder(dataset_id, arm)
        if fold is not None and (fold / "checkpoint_final.pth").is_file():
            return
        resume = fold is not None and (fold / "checkpoint_latest.pth").is_file()
        command = [sys.executable, "-c", _TRAIN_SEEDED, str(seed), str(dataset_id), CONFIGURATION, arm.fold]
        command += ["-tr", arm.trainer, "-p", arm.plans, "-device", self.args.device, *(["--c"] if resume else [])]
        log = self.logs / f"train_{dataset_id}_{arm.trainer}_{arm.plans}_fold{arm.fold}.log"
        if resume:
            log = log.with_name(f"{log.stem}_resumed{log.suffix}")
        how = "continuing from checkpoint_latest.pth (delete it to start over)" if resume else "training"
        # one write per line: print() writes the text and its newline separately, and --parallel threads interleave
        sys.stdout.write(f"  {how} {arm.label}: {arm.trainer} -p {arm.plans}, fold {arm.fold} (log: {log})\n")
        sys.stdout.flush()
        env = dict(self.env, DROPGEN_BENCH_SAVE_EVERY=str(self.args.save_every))
        if self.args.parallel > 1:
            env["DROPGEN_BENCH_THREADS"] = "1"
        start = time.perf_counter()
        run_logged(f"training {arm.trainer} on dataset {dataset_id}", command, log, env)
        if not resume:
            self.record_time(self.time_key(dataset_id, arm), time.perf_counter() - start)

    def record_time(self, key: str, seconds: float) -> None:
        """Add one training's wall time to train_times.json, keeping what other threads and runs on the same
        --workdir wrote meanwhile."""
        with self.times_lock:
            if self.times_file.is_file():
                recorded = json.loads(self.times_file.read_text())
                self.times.update({k: v for k, v in recorded.items() if k not in self.times})
            self.times[key] = seconds
            write_json_atomic(self.times_file, self.times)

    def train_all(self, dataset_id: int, seed: int, arms: Sequence[Arm]) -> None:
        """Train every distinct model of `arms` (an arm listed twice trains once), --parallel at a time."""
        distinct = list({(a.trainer, a.plans, a.fold): a for a in arms}.values())
        with ThreadPoolExecutor(max_workers=max(1, self.args.parallel)) as pool:
            # models another run is training come last, so this run's cores train the others meanwhile
            started = list(pool.map(lambda arm: self.train(dataset_id, seed, arm, wait=False), distinct))
            deferred = [arm for arm, done in zip(distinct, started, strict=True) if not done]
            for done in [pool.submit(self.train, dataset_id, seed, arm) for arm in deferred]:
                done.result()

    def derive(self, dataset_id: int, trained: Arm, derived: Arm, option: str) -> None:
        """`derived`'s model: `trained`'s final checkpoint with `option` (inference only) added to its feature
        record and its trainer name, beside a copy of its plans and dataset.json. nnUNetv2_predict then builds
        the network with the option, and the record check still refuses any other difference."""
        source, target = self.model_folder(dataset_id, trained), self.model_folder(dataset_id, derived)
        if (target / "checkpoint_final.pth").is_file():
            return
        checkpoint = torch.load(source / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        weights = checkpoint["network_weights"]
        record = FeatureRecord.from_state(weights["_extra_state"])
        options = check_options((*record.options, option))
        weights["_extra_state"] = dataclasses.replace(record, options=options).to_state()
        checkpoint["trainer_name"] = derived.trainer
        target.mkdir(parents=True, exist_ok=True)
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copyfile(source.parent / name, target.parent / name)
        partial = target / "checkpoint_final.pth.partial"
        torch.save(checkpoint, partial)
        partial.replace(target / "checkpoint_final.pth")
        print(f"  {derived.label}: {trained.trainer}'s weights with {option} at prediction (no training)", flush=True)

    def evaluate(
        self,
        dataset_id: int,
        folder: Path,
        arms: Sequence[Arm],
        domains: Sequence[str],
        out: str,
        in_domain: Sequence[str] = (SOURCE_DOMAIN,),
    ) -> tuple[EvaluationTable, dict[str, Path]]:
        """Predict and score `arms` on `domains`; the table and each arm's (label's) predictions folder."""
        out_folder = self.args.workdir / out / folder.name
        request = EvaluationRequest(
            dataset=dataset_id,
            models=[
                ModelSpec(a.trainer, plans=a.plans, configuration=CONFIGURATION, folds=(a.fold,), label=a.label)
                for a in arms
            ],
            test_sets=[TestSet(d, folder / f"imagesTs_{d}", folder / f"labelsTs_{d}") for d in domains],
            baseline=arms[0].label,
            out=out_folder,
            prediction=PredictionSettings(device=self.args.device, use_mirroring=not self.args.disable_tta),
            in_domain=tuple(in_domain),
        )
        with in_process(self.env):
            result = run_evaluation(request)
        return result.table, {m.label: out_folder / "predictions" / m.identifier for m in result.models}

    @staticmethod
    def time_key(dataset_id: int, arm: Arm) -> str:
        return f"{dataset_id}/{arm.trainer}/{arm.plans}/{arm.fold}"

    def train_time(self, dataset_id: int, arm: Arm) -> float:
        """Wall time of the training (s); for one without a record (resumed, or run by hand), the sum of its
        epochs' durations from the checkpoint (start-up and gaps between sessions excluded)."""
        recorded = self.times.get(self.time_key(dataset_id, arm))
        fold = self.model_folder(dataset_id, arm)
        if recorded is not None or fold is None or not (fold / "checkpoint_final.pth").is_file():
            return math.nan if recorded is None else recorded
        return training_seconds(
            torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
        )


def choose_p(bench: Bench, dataset_id: int, folder: Path, seed: int) -> tuple[float, dict[float, float]]:
    """Train DropGen once per candidate p and keep the p with the best Dice on the validation domain."""
    args = bench.args
    arms = [Arm(f"p={p:g}", dropgen_name(args.extractor, args.schedule, p), plans=args.plans) for p in args.choose_p]
    bench.train_all(dataset_id, seed, arms)
    table, _ = bench.evaluate(dataset_id, folder, arms, [VALIDATION.name], "selection", in_domain=())
    scores = {p: table.mean(VALIDATION.name, arm.label) for p, arm in zip(args.choose_p, arms, strict=True)}
    return max(scores, key=lambda p: -math.inf if math.isnan(scores[p]) else scores[p]), scores


def arms_for(args: argparse.Namespace, p: float) -> list[Arm]:
    schedule, extractor, plans = args.schedule, args.extractor, args.plans
    erm, da5 = f"nnUNetTrainer_{schedule}", f"nnUNetTrainerDA5_{schedule}"
    dropgen = dropgen_name(extractor, schedule, p)
    trainers = {
        "ERM": erm,
        "DA5": da5,
        "DropGen": dropgen,
        "DropGen DA5": dropgen_name(extractor, schedule, p, base="nnUNetTrainerDA5"),
        "noDropout": dropgen_name(extractor, schedule, ablation="noDropout"),
        "featuresOnly": dropgen_name(extractor, schedule, ablation="featuresOnly"),
    }
    chosen = {"ERM", *args.arms} if args.arms else set(MAIN_ARMS)
    arms = [Arm(label, trainers[label], plans=plans) for label in MAIN_ARMS if label in chosen]
    if args.with_anatomix:
        arms.append(Arm("DropGen anatomix", dropgen_name("anatomix", schedule, p), plans=plans))
    if not args.few_shot:
        return arms
    few = f"{args.few_shot} cases"
    few_shot = {"ERM": erm, "DA5": da5, "DropGen": dropgen}
    return arms + [Arm(f"{label} {few}", trainer, "0", plans) for label, trainer in few_shot.items() if label in chosen]


def option_arms(args: argparse.Namespace, p: float) -> list[Arm]:
    """DropGen (the baseline of the paired differences), DropGen with each chosen authors' behaviour
    (network.options.OPTIONS), and ERM."""
    dropgen = dropgen_name(args.extractor, args.schedule, p)
    base = dropgen.removesuffix(f"_{args.schedule}")
    arms = [Arm("DropGen", dropgen, plans=args.plans)]
    arms += [Arm(f"DropGen {o}", f"{base}_{o}_{args.schedule}", plans=args.plans) for o in args.options]
    return [*arms, Arm("ERM", f"nnUNetTrainer_{args.schedule}", plans=args.plans)]


def inference_only_option(label: str) -> str | None:
    """The option of the option arm `label` if it changes prediction only (its training is DropGen's), else None."""
    return next((o for o in INFERENCE_ONLY_OPTIONS if label == f"DropGen {o}"), None)


def padded_test_set(folder: Path, domain: str, factor: int = 2) -> str:
    """The test set `domain` embedded in background `factor` times larger per axis (structures in a corner),
    written once as imagesTs_<domain>_padded: a volume much larger than the patch, mostly background."""
    import numpy as np
    import SimpleITK as sitk

    name = f"{domain}_padded"
    images, labels = folder / f"imagesTs_{name}", folder / f"labelsTs_{name}"
    if labels.is_dir():
        return name
    rng = np.random.default_rng(0)
    for target in (images, labels):
        target.mkdir(exist_ok=True)
    for path in sorted((folder / f"labelsTs_{domain}").iterdir()):
        label_image = sitk.ReadImage(str(path))
        image = sitk.ReadImage(str(folder / f"imagesTs_{domain}" / path.name.replace(".nii.gz", "_0000.nii.gz")))
        array, label = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label_image)
        background = array[label == 0]
        big = rng.normal(np.median(background), background.std(), [n * factor for n in array.shape])
        big = big.astype(np.float32)
        big_label = np.zeros(big.shape, dtype=label.dtype)
        big[tuple(slice(0, n) for n in array.shape)] = array
        big_label[tuple(slice(0, n) for n in label.shape)] = label
        for data, reference, target in ((big, image, images / path.name.replace(".nii.gz", "_0000.nii.gz")),
                                        (big_label, label_image, labels / path.name)):  # fmt: skip
            written = sitk.GetImageFromArray(data)
            written.SetSpacing(reference.GetSpacing())
            sitk.WriteImage(written, str(target))
    return name


def cross_modality_arms(args: argparse.Namespace, bench: Bench, p: float) -> list[Arm]:
    """ERM and DropGen with nnU-Net's CT plans (before), and with per-image normalization plans (after)."""
    ct_plans = args.plans
    dropgen = dropgen_name(args.extractor, args.schedule, p)
    return [
        Arm("ERM, CT plans", f"nnUNetTrainer_{args.schedule}", plans=ct_plans),
        Arm("DropGen, CT plans", dropgen, plans=ct_plans),
        Arm("ERM, per-image plans", f"nnUNetTrainer_{args.schedule}", plans=bench.per_image_plans),
        Arm("DropGen, per-image plans", dropgen, plans=bench.per_image_plans),
    ]


def collect(
    results: dict, bench: Bench, dataset_id: int, table: EvaluationTable, predictions: dict[str, Path],
    arms: Sequence[Arm], domains: Sequence[str], targets: Sequence[str] = (),
) -> None:  # fmt: skip
    """Add one seed's Dice, target mean, train time, curves and paired per-case differences to `results`.

    Differences: every arm minus the first (ERM), and DropGen minus DA5 (the two margins of issue 14's targets),
    per domain and, where `targets` are given, per test case averaged over them (`TARGET_MEAN`): the test cases
    of all domains share their anatomy, so that mean is paired too.
    """
    per_case = {}
    for arm in arms:
        for domain in domains:
            results["dice"][arm.label][domain].append(table.mean(domain, arm.label))
        results["target_mean"][arm.label].append(table.summary_mean(arm.label))
        results["train_s"][arm.label].append(bench.train_time(dataset_id, arm))
        fold = bench.model_folder(dataset_id, arm)
        results["curves"].setdefault(arm.label, []).append(training_curve(fold / "checkpoint_final.pth"))
        for domain in domains:
            per_case[(arm.label, domain)] = per_case_dice(predictions[arm.label] / domain / "summary.json")
    labels = [arm.label for arm in arms]
    pairs = [(label, labels[0]) for label in labels[1:]]
    if "DropGen" in labels and "DA5" in labels:
        pairs.append(("DropGen", "DA5"))
    shifted = shifted_targets(targets)
    means_over = {TARGET_MEAN: targets, **({SHIFTED_MEAN: shifted} if shifted else {})}
    for label, baseline in pairs:
        differences = {}
        for domain in domains:
            ours, base = per_case[(label, domain)], per_case[(baseline, domain)]
            differences[domain] = {c: ours[c] - base[c] for c in sorted(ours) if c in base}
            _add_paired(results, f"{label}|{baseline}|{domain}", list(differences[domain].values()))
        for row, over in means_over.items() if targets else ():
            cases = set.intersection(*(set(differences[d]) for d in over))
            means = [float(np.mean([differences[d][c] for d in over])) for c in sorted(cases)]
            _add_paired(results, f"{label}|{baseline}|{row}", means)


def _add_paired(results: dict, key: str, differences: list[float]) -> None:
    """One seed's paired per-case differences, and their mean (the unit of the interval over seeds)."""
    results["paired"].setdefault(key, []).extend(differences)
    finite = [d for d in differences if not math.isnan(d)]
    results["paired_seeds"].setdefault(key, []).append(float(np.mean(finite)) if finite else math.nan)


def new_results(arms: Sequence[Arm], domains: Sequence[str], command: str) -> dict:
    return {
        "command": command,
        "trainers": {a.label: a.trainer for a in arms},
        "plans": {a.label: a.plans for a in arms},
        "dice": {a.label: {d: [] for d in domains} for a in arms},
        "target_mean": {a.label: [] for a in arms},
        "train_s": {a.label: [] for a in arms},
        "curves": {},
        "paired": {},
        "paired_seeds": {},
    }


def _p_sentence(results: dict) -> str:
    """How p was set: chosen here among several, or given as the one value of --choose-p (chosen in an earlier run)."""
    scores = ", ".join(f"p={p}: {s:.3f}" for p, s in results["validation_dice"].items())
    if len(results["validation_dice"]) == 1:
        return (
            f"p fixed at {results['chosen_p']:g} (--choose-p with one value, chosen on the validation domain in an "
            f"earlier run; its validation Dice here: {scores})"
        )
    return f"p chosen on the validation domain: {results['chosen_p']:g} (validation Dice: {scores})"


def report(args: argparse.Namespace, results: dict, cross: dict | None, machine: str, figure: Path) -> str:
    """The Markdown report."""
    domains = [SOURCE_DOMAIN, *args.domains]
    arms = list(results["dice"])
    schedule = schedule_from_token(args.schedule)
    iterations = (schedule.epochs or 1000) * (schedule.iterations_per_epoch or 250) if schedule else math.nan
    lines = [
        "## Domain-shift benchmark",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {machine}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; total wall time {results['wall_s'] / 60:.1f} min",
        f"- Data: synthetic, {args.num_train} training cases ({SOURCE_DOMAIN}), {args.num_test} test case(s) per "
        f"domain, shape {'x'.join(map(str, args.shape))}; seeds {', '.join(map(str, args.seeds))}",
        f"- Schedule `{args.schedule}` ({iterations} iterations) for every trainer, plans `{args.plans}`, "
        f"{CONFIGURATION}, fold all"
        + (f" (few-shot arms: fold 0 of a {args.few_shot}-case split)" if args.few_shot else " (no few-shot arms)")
        + "; prediction "
        + ("without mirroring (--disable-tta)" if args.disable_tta else "with nnU-Net's mirroring"),
        f"- DropGen's extractor: `{args.extractor}`; {_p_sentence(results)}",
        "",
        "Dice (foreground mean over labels; mean ± population std (ddof 0) over seeds)",
        "",
        *dice_table(results, arms, domains, SOURCE_DOMAIN),
        "",
        "DropGen minus ERM, per domain (paired per seed and test case; 95 % t-intervals over the seed x case "
        "pairs, which hold test-case variation only, and over the seeds' mean differences, which hold training "
        "variation too):",
        "",
        *difference_table(results, [*domains, TARGET_MEAN, SHIFTED_MEAN], "DropGen", "ERM"),
        "",
        "DropGen minus DA5 (as above):",
        "",
        *difference_table(results, [*domains, TARGET_MEAN, SHIFTED_MEAN], "DropGen", "DA5"),
        "",
        "Convergence: nnU-Net's EMA pseudo Dice on the training domain over the last fifth of training "
        f"(curves: `{figure.name}`)",
        "",
        *convergence_table(results, arms),
        "",
        "Targets:",
        "",
        *verdict(results, SOURCE_DOMAIN),
    ]
    if cross is not None:
        cross_domains = [CT_SOURCE, *MR_TARGETS]
        lines += [
            "",
            "### CT to MR (train on a CT with its channel named CT, test on MR-like domains)",
            "",
            *dice_table(cross, list(cross["dice"]), cross_domains, CT_SOURCE),
        ]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    check_extractor(args.extractor)
    if args.with_anatomix:
        check_extractor("anatomix")
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_description(torch.device(args.device))
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"{command}\n{machine}\nWorking folder: {args.workdir}", flush=True)
    bench = Bench(args)
    start = time.perf_counter()

    datasets = [bench.dataset(args.dataset_id + seed, seed) for seed in args.seeds]
    print(f"Choosing DropGen's p on the '{VALIDATION.name}' domain (seed {args.seeds[0]})", flush=True)
    chosen, scores = choose_p(bench, *datasets[0], args.seeds[0])
    print(f"  chosen p = {chosen:g}: " + ", ".join(f"p={p:g} {s:.3f}" for p, s in scores.items()), flush=True)

    arms = arms_for(args, chosen)
    domains = [SOURCE_DOMAIN, *args.domains]
    results = new_results(arms, domains, command)
    results["chosen_p"], results["validation_dice"] = chosen, {f"{p:g}": s for p, s in scores.items()}
    options = cross = None
    if args.option_arms:
        option_domains = [*domains, *(padded_test_set(datasets[0][1], d) for d in (SOURCE_DOMAIN, "inverted"))]
        options = new_results(option_arms(args, chosen), option_domains, command)
    if args.cross_modality:
        cross = new_results(cross_modality_arms(args, bench, chosen), [CT_SOURCE, *MR_TARGETS], command)
    # seed by seed, every experiment of a seed before the next seed, the report rewritten after each
    # experiment (a run stopped half-way leaves what finished); options and CT to MR join it once measured
    shown: dict[str, dict | None] = {"options": None, "cross": None}

    def report_so_far(index: int) -> None:
        results["wall_s"] = time.perf_counter() - start
        final = index == len(args.seeds) - 1 and shown["cross"] is cross and shown["options"] is options
        write_report(args, results, shown["cross"], shown["options"], machine, final)

    for index, ((dataset_id, folder), seed) in enumerate(zip(datasets, args.seeds, strict=True)):
        print(f"Seed {seed}: dataset {folder.name}", flush=True)
        if args.few_shot:
            bench.few_shot_split(dataset_id, seed)
        option_list = []
        if options is not None and index == 0:
            option_list = [Arm(label, trainer, plans=plans) for label, trainer, plans in _arms_of(options)]
        # the options train in the same pool as the main arms: two cores stay busy until the last model
        bench.train_all(dataset_id, seed, [*arms, *(a for a in option_list if not inference_only_option(a.label))])
        table, predictions = bench.evaluate(dataset_id, folder, arms, domains, "evaluation")
        collect(results, bench, dataset_id, table, predictions, arms, domains, args.domains)
        report_so_far(index)
        if option_list:
            print(f"Options: seed {seed}, dataset {folder.name}", flush=True)
            dropgen = next(a for a in option_list if a.label == "DropGen")
            for arm in option_list:
                if option := inference_only_option(arm.label):
                    bench.derive(dataset_id, dropgen, arm, option)
            option_domains = list(next(iter(options["dice"].values())))
            table, predictions = bench.evaluate(dataset_id, folder, option_list, option_domains, "evaluation_options")
            collect(options, bench, dataset_id, table, predictions, option_list, option_domains)
            shown["options"] = options
            report_so_far(index)
        if cross is not None:
            cross_id, cross_folder = bench.dataset(args.dataset_id + 50 + seed, seed, cross_modality=True)
            cross_list = [Arm(label, trainer, plans=plans) for label, trainer, plans in _arms_of(cross)]
            print(f"Seed {seed}: CT to MR, dataset {cross_folder.name}", flush=True)
            bench.train_all(cross_id, seed, cross_list)
            cross_domains = [CT_SOURCE, *MR_TARGETS]
            table, predictions = bench.evaluate(
                cross_id, cross_folder, cross_list, cross_domains, "evaluation", (CT_SOURCE,)
            )
            collect(cross, bench, cross_id, table, predictions, cross_list, cross_domains)
            shown["cross"] = cross
            report_so_far(index)
    return 0


def _arms_of(results: dict) -> list[tuple[str, str, str]]:
    return [(label, results["trainers"][label], results["plans"][label]) for label in results["dice"]]


def write_report(
    args: argparse.Namespace, results: dict, cross: dict | None, options: dict | None, machine: str, final: bool
) -> None:
    """Markdown, JSON and curves for the seeds finished so far (the final report once every seed is done)."""
    schedule = schedule_from_token(args.schedule)
    figure = save_curves(
        results, list(results["dice"]), args.report.with_suffix(".curves.png"),
        (schedule.iterations_per_epoch or 250) if schedule else 250,
    )  # fmt: skip
    text = report(args, results, cross, machine, figure)
    if options is not None:
        option_domains = list(next(iter(options["dice"].values())))
        option_labels = [label for label in options["dice"] if label.startswith("DropGen ")]
        derived = [option for label in option_labels if (option := inference_only_option(label))]
        lines = [
            "",
            "",
            "### The DropGen authors' behaviours as options (first seed)",
            "",
            *dice_table(options, list(options["dice"]), option_domains, SOURCE_DOMAIN),
        ]
        if derived:
            lines += [
                "",
                f"{', '.join(derived)} change(s) prediction only: DropGen's trained weights, predicted with it.",
            ]
        for label in option_labels:
            lines += ["", f"{label} minus DropGen (paired per test case; 95 % t-interval):", ""]
            lines += difference_table(options, option_domains, label, "DropGen")
        trained = [label for label in options["dice"] if not inference_only_option(label)]
        lines += ["", "Convergence of the trained option arms (as above):", "", *convergence_table(options, trained)]
        text += "\n".join(lines)
    if not final:
        done = len(next(iter(results["target_mean"].values())))
        missing = [
            name
            for name, wanted, shown in (
                ("the options", args.option_arms, options),
                ("CT to MR", args.cross_modality, cross),
            )
            if wanted and not shown
        ]
        text = (
            f"**Partial: {done} of {len(args.seeds)} seeds done"
            + (f"; not yet measured: {' and '.join(missing)}" if missing else "")
            + ".**\n\n"
            + text
        )
    write_text_atomic(args.report, text + "\n")
    document = {"benchmark": results, "cross_modality": cross, "options": options, "final": final}
    write_json_atomic(args.report.with_suffix(".json"), document)
    print("\n" + text + f"\n\nReport: {args.report}\nCurves: {figure}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
