"""Domain generalization on the synthetic domain-shift data: DropGen vs nnU-Net (ERM) vs nnU-Net's DA5.

Every arm trains on the `source` domain with the same plans, the same schedule (a trainer-name suffix, so
`nnUNetTrainer_<schedule>` and `nnUNetTrainerDA5_<schedule>` train exactly as long as DropGen) and the
same seed, and is scored by `nnunetv2_dropgen evaluate`'s code on every held-out domain:

  ERM           nnUNetTrainer_<schedule>
  DA5           nnUNetTrainerDA5_<schedule>           (nnU-Net's strongest built-in augmentation)
  DropGen       DropGenTrainer_<extractor>[_pNNN]_<schedule>
  noDropout     DropGenTrainer_<extractor>_noDropout_<schedule>     (ablation: no channel dropout)
  featuresOnly  DropGenTrainer_<extractor>_featuresOnly_<schedule>  (ablation: features, never the image)
  <arm> 2 cases ERM, DA5 and DropGen trained on fold 0 of a few-shot split (`nnunetv2_dropgen splits`)
  anatomix      DropGenTrainer_anatomix[_pNNN]_<schedule> (--with-anatomix, when its weights are available)

Settings are chosen on a separately generated `validation` domain, never on the test domains: with
--choose-p, DropGen is trained once per dropout probability on the first seed and the p with the best
validation Dice is used for every seed. Each seed generates its own dataset (its own dataset id) and seeds
torch/numpy/random in the training process; nnU-Net's augmentation workers draw their own randomness,
which the spread over seeds includes. Results: mean and std over seeds, per domain, the mean over target
domains, the source domain, and wall time per trainer, written as Markdown (and JSON) with the command and
the machine. Trained models and predictions are kept in --workdir, so an interrupted run resumes.

    PYTHONPATH=. python benchmarks/bench_domain_shift.py                       # CPU: the 'demo' schedule
    PYTHONPATH=. python benchmarks/bench_domain_shift.py --device cuda         # GPU: the 'demoGPU' schedule
    PYTHONPATH=. python benchmarks/bench_domain_shift.py --tiny                # checks every step runs (minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import machine_description

from nnunetv2_dropgen.cli import splits_command
from nnunetv2_dropgen.demo.commands import cpu_processes, in_process, nnunet_command, nnunet_environment, run_logged
from nnunetv2_dropgen.evaluation import EvaluationRequest, ModelSpec, PredictionSettings, TestSet, run_evaluation
from nnunetv2_dropgen.evaluation.files import write_json_atomic, write_text_atomic
from nnunetv2_dropgen.evaluation.report import EvaluationTable
from nnunetv2_dropgen.feature_extractors import available_extractors, get_extractor_spec
from nnunetv2_dropgen.synthetic import SOURCE_DOMAIN, generate_dataset, list_domains
from nnunetv2_dropgen.synthetic.domains import Domain
from nnunetv2_dropgen.weights import WeightsError, resolve_weights

CONFIGURATION = "3d_fullres"
VALIDATION = Domain("validation", (0.6, 0.2, 0.95, 0.35), noise_std=0.06, bias_field_strength=0.3)
"""The settings-selection domain: a contrast remapping with noise and bias that no test domain has."""
TARGETS = {"ERM": 0.20, "DA5": 0.05}
"""DropGen's mean target-domain Dice must beat these arms by these margins."""
SOURCE_TOLERANCE = 0.02
"""...with its source-domain Dice within this distance of ERM's."""
_TRAIN_SEEDED = (
    "import random, sys, numpy, torch; seed = int(sys.argv[1]); random.seed(seed); numpy.random.seed(seed); "
    "torch.manual_seed(seed); sys.argv = ['nnUNetv2_train', *sys.argv[2:]]; "
    "from nnunetv2.run.run_training import run_training_entry; run_training_entry()"
)


@dataclass(frozen=True)
class Arm:
    """One trained model: its name in the tables, the trainer, and the fold it trains on."""

    label: str
    trainer: str
    fold: str = "all"


def parse_args() -> argparse.Namespace:
    targets = [d for d in list_domains() if d != SOURCE_DOMAIN]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir", type=Path, default=Path("bench_domain_shift"), help="default: ./bench_domain_shift"
    )
    parser.add_argument("--tiny", action="store_true", help="smallest settings that run every step (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--schedule", help="trainer-name schedule (default: demoGPU on cuda, demo on cpu, demoTiny)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 (--tiny: 0)")
    parser.add_argument("--extractor", default="minimix", help="DropGen's extractor (default: minimix, embedded)")
    parser.add_argument("--with-anatomix", action="store_true", help="add DropGen with the published anatomix")
    parser.add_argument("--choose-p", type=float, nargs="+", help="dropout p to choose from on the validation domain")
    parser.add_argument("--few-shot", type=int, default=2, help="training cases of the few-shot arm (default: 2)")
    parser.add_argument("--num-train", type=int, help="training cases (default: 8; --tiny: 4)")
    parser.add_argument("--num-test", type=int, help="test cases per domain (default: 4; --tiny: 1)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default: 48^3 (--tiny: 32^3)")
    parser.add_argument("--domains", nargs="+", choices=targets, help="target domains (default: all; --tiny: inverted)")
    parser.add_argument(
        "--disable-tta",
        action="store_true",
        help="predict without nnU-Net's mirroring (its --disable_tta): 8x fewer network passes, for slow CPUs",
    )
    parser.add_argument("--dataset-id", type=int, default=620, help="first dataset id; seed i uses id + i")
    parser.add_argument("--report", type=Path, help="Markdown report (default: <workdir>/domain_shift_report.md)")
    args = parser.parse_args()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    args.schedule = args.schedule or ("demoTiny" if tiny else "demoGPU" if args.device == "cuda" else "demo")
    args.seeds = args.seeds or ([0] if tiny else [0, 1])
    args.choose_p = args.choose_p or ([0.5, 0.75] if tiny else [0.5, 0.75, 0.9])
    args.num_train = args.num_train or (4 if tiny else 8)
    args.num_test = args.num_test or (1 if tiny else 4)
    args.shape = tuple(args.shape or ((32, 32, 32) if tiny else (48, 48, 48)))
    args.domains = args.domains or (["inverted"] if tiny else targets)
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


def dropgen_name(extractor: str, schedule: str, p: float | None = None, ablation: str | None = None) -> str:
    parts = ["DropGenTrainer", get_extractor_spec(extractor).trainer_token]
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

    def dataset(self, index: int, seed: int) -> tuple[int, Path]:
        dataset_id = self.args.dataset_id + index
        folder = generate_dataset(
            Path(self.env["nnUNet_raw"]),
            dataset_id=dataset_id,
            name=f"DomainShiftSeed{seed}",
            num_train=self.args.num_train,
            num_test_per_domain=self.args.num_test,
            shape=self.args.shape,
            domains=[*self.args.domains, VALIDATION],
            seed=seed,
        )
        if not (Path(self.env["nnUNet_preprocessed"]) / folder.name / "nnUNetPlans.json").is_file():
            n = str(cpu_processes())
            command = [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION]
            run_logged(
                f"planning {folder.name}",
                [*command, "-np", n, "-npfp", n],
                self.logs / f"plan_{dataset_id}.log",
                self.env,
            )
        return dataset_id, folder

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

    def train(self, dataset_id: int, seed: int, arm: Arm) -> None:
        """Train `arm` unless its final checkpoint exists; record the wall time."""
        folder = next(Path(self.env["nnUNet_results"]).glob(f"Dataset{dataset_id:03d}_*"), None)
        model = (folder / f"{arm.trainer}__nnUNetPlans__{CONFIGURATION}") if folder else None
        if model is not None and (model / f"fold_{arm.fold}" / "checkpoint_final.pth").is_file():
            return
        command = [
            sys.executable,
            "-c",
            _TRAIN_SEEDED,
            str(seed),
            str(dataset_id),
            CONFIGURATION,
            arm.fold,
            "-tr",
            arm.trainer,
            "-device",
            self.args.device,
        ]
        log = self.logs / f"train_{dataset_id}_{arm.trainer}_fold{arm.fold}.log"
        print(f"  training {arm.label}: {arm.trainer}, fold {arm.fold} (log: {log})", flush=True)
        start = time.perf_counter()
        run_logged(f"training {arm.trainer} on dataset {dataset_id}", command, log, self.env)
        self.times[f"{dataset_id}/{arm.trainer}/{arm.fold}"] = time.perf_counter() - start
        write_json_atomic(self.times_file, self.times)

    def evaluate(
        self,
        dataset_id: int,
        folder: Path,
        arms: Sequence[Arm],
        domains: Sequence[str],
        out: str,
        in_domain: Sequence[str] = (SOURCE_DOMAIN,),
    ) -> EvaluationTable:
        request = EvaluationRequest(
            dataset=dataset_id,
            models=[ModelSpec(a.trainer, configuration=CONFIGURATION, folds=(a.fold,), label=a.label) for a in arms],
            test_sets=[TestSet(d, folder / f"imagesTs_{d}", folder / f"labelsTs_{d}") for d in domains],
            baseline=arms[0].label,
            out=self.args.workdir / out / folder.name,
            prediction=PredictionSettings(device=self.args.device, use_mirroring=not self.args.disable_tta),
            in_domain=tuple(in_domain),
        )
        with in_process(self.env):
            return run_evaluation(request).table

    def train_time(self, dataset_id: int, arm: Arm) -> float:
        return self.times.get(f"{dataset_id}/{arm.trainer}/{arm.fold}", math.nan)


def choose_p(bench: Bench, dataset_id: int, folder: Path, seed: int) -> tuple[float, dict[float, float]]:
    """Train DropGen once per candidate p and keep the p with the best Dice on the validation domain."""
    args = bench.args
    arms = [Arm(f"p={p:g}", dropgen_name(args.extractor, args.schedule, p)) for p in args.choose_p]
    for arm in arms:
        bench.train(dataset_id, seed, arm)
    table = bench.evaluate(dataset_id, folder, arms, [VALIDATION.name], "selection", in_domain=())
    scores = {p: table.mean(VALIDATION.name, arm.label) for p, arm in zip(args.choose_p, arms, strict=True)}
    return max(scores, key=lambda p: -math.inf if math.isnan(scores[p]) else scores[p]), scores


def arms_for(args: argparse.Namespace, p: float) -> list[Arm]:
    schedule, extractor = args.schedule, args.extractor
    dropgen = dropgen_name(extractor, schedule, p)
    arms = [
        Arm("ERM", f"nnUNetTrainer_{schedule}"),
        Arm("DA5", f"nnUNetTrainerDA5_{schedule}"),
        Arm("DropGen", dropgen),
        Arm("noDropout", dropgen_name(extractor, schedule, ablation="noDropout")),
        Arm("featuresOnly", dropgen_name(extractor, schedule, ablation="featuresOnly")),
    ]
    if args.with_anatomix:
        arms.append(Arm("DropGen anatomix", dropgen_name("anatomix", schedule, p)))
    few = f"{args.few_shot} cases"
    arms += [
        Arm(f"ERM {few}", arms[0].trainer, "0"),
        Arm(f"DA5 {few}", arms[1].trainer, "0"),
        Arm(f"DropGen {few}", dropgen, "0"),
    ]
    return arms


def _cell(values: Sequence[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{np.mean(finite):.3f} ± {np.std(finite):.3f}"


def _seconds(values: Sequence[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{np.mean(finite):.0f}" if finite else "n/a"


def report(args: argparse.Namespace, results: dict, machine: str, chosen: float, scores: dict[float, float]) -> str:
    """The Markdown report: Dice per domain per arm (mean ± std over seeds), target mean, source, train time."""
    domains = [SOURCE_DOMAIN, *args.domains]
    arms = list(results["dice"])
    lines = [
        "## Domain-shift benchmark",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {machine}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; total wall time {results['wall_s'] / 60:.1f} min",
        f"- Data: synthetic, {args.num_train} training cases ({SOURCE_DOMAIN}), {args.num_test} test case(s) per "
        f"domain, shape {'x'.join(map(str, args.shape))}; seeds {', '.join(map(str, args.seeds))}",
        f"- Schedule `{args.schedule}` for every trainer, plans nnUNetPlans, {CONFIGURATION}, fold all "
        f"(few-shot arms: fold 0 of a {args.few_shot}-case split); prediction "
        + ("without mirroring (--disable-tta)" if args.disable_tta else "with nnU-Net's mirroring"),
        f"- DropGen p chosen on the validation domain: {chosen:g} (validation Dice: "
        + ", ".join(f"p={p:g}: {s:.3f}" for p, s in scores.items())
        + ")",
        "",
        "Dice (foreground mean over labels; mean ± std over seeds)",
        "",
        "| arm | trainer | "
        + " | ".join(f"{d} (training domain)" if d == SOURCE_DOMAIN else d for d in domains)
        + " | mean over targets | train time (s) |",
        "| --- | --- | " + " | ".join("---:" for _ in domains) + " | ---: | ---: |",
    ]
    for arm in arms:
        per_domain = [_cell(results["dice"][arm][d]) for d in domains]
        lines.append(
            f"| {arm} | `{results['trainers'][arm]}` | "
            + " | ".join(per_domain)
            + f" | {_cell(results['target_mean'][arm])} | {_seconds(results['train_s'][arm])} |"
        )
    lines += ["", f"Targets (mean over target domains; source within {SOURCE_TOLERANCE} of ERM):", ""]
    dropgen = np.nanmean(results["target_mean"]["DropGen"])
    for arm, margin in TARGETS.items():
        other = np.nanmean(results["target_mean"][arm])
        verdict = "met" if dropgen >= other + margin else "MISSED"
        lines.append(f"- DropGen {dropgen:.3f} vs {arm} {other:.3f} + {margin:.2f}: {verdict}")
    source_gap = np.nanmean(results["dice"]["DropGen"][SOURCE_DOMAIN]) - np.nanmean(
        results["dice"]["ERM"][SOURCE_DOMAIN]
    )
    verdict = "met" if source_gap >= -SOURCE_TOLERANCE else "MISSED"
    lines.append(f"- DropGen source Dice minus ERM's: {source_gap:+.3f} (at least -{SOURCE_TOLERANCE}): {verdict}")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    check_extractor(args.extractor)
    if args.with_anatomix:
        check_extractor("anatomix")
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    machine = machine_description(device)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"{command}\n{machine}\nWorking folder: {args.workdir}", flush=True)
    bench = Bench(args)
    start = time.perf_counter()

    datasets = [bench.dataset(i, seed) for i, seed in enumerate(args.seeds)]
    print(f"Choosing DropGen's p on the '{VALIDATION.name}' domain (seed {args.seeds[0]})", flush=True)
    chosen, scores = choose_p(bench, *datasets[0], args.seeds[0])
    print(f"  chosen p = {chosen:g}: " + ", ".join(f"p={p:g} {s:.3f}" for p, s in scores.items()), flush=True)

    arms = arms_for(args, chosen)
    domains = [SOURCE_DOMAIN, *args.domains]
    results: dict = {
        "command": command,
        "trainers": {a.label: a.trainer for a in arms},
        "dice": {a.label: {d: [] for d in domains} for a in arms},
        "target_mean": {a.label: [] for a in arms},
        "train_s": {a.label: [] for a in arms},
    }
    for (dataset_id, folder), seed in zip(datasets, args.seeds, strict=True):
        print(f"Seed {seed}: dataset {folder.name}", flush=True)
        bench.few_shot_split(dataset_id, seed)
        for arm in arms:
            bench.train(dataset_id, seed, arm)
        table = bench.evaluate(dataset_id, folder, arms, domains, "evaluation")
        for arm in arms:
            for domain in domains:
                results["dice"][arm.label][domain].append(table.mean(domain, arm.label))
            results["target_mean"][arm.label].append(table.summary_mean(arm.label))
            results["train_s"][arm.label].append(bench.train_time(dataset_id, arm))
    results["wall_s"] = time.perf_counter() - start
    results["chosen_p"], results["validation_dice"] = chosen, {str(p): s for p, s in scores.items()}

    text = report(args, results, machine, chosen, scores)
    write_text_atomic(args.report, text + "\n")
    write_json_atomic(args.report.with_suffix(".json"), results)
    print("\n" + text + f"\n\nReport: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
