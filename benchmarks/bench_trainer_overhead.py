"""What DropGenTrainer costs over nnUNetTrainer on the same dataset, plans, batch and patch.

Per trainer, in fresh processes (so peak memory is each trainer's own):
  - training: `trainer.on_train_start()` (nnU-Net's own dataloaders and augmentation), warm-up, then
    full iterations `train_step(next(dataloader_train))` (data loading included), then `train_step` alone
    on batches fetched beforehand (data loading excluded);
  - inference: nnU-Net's sliding window (`nnUNetPredictor.manual_initialization` +
    `predict_sliding_window_return_logits`, step 0.5, Gaussian, mirroring on) over one preprocessed case.
DropGen's features are computed inside the network from the augmented patch, as in real training.

Without --dataset, a small synthetic dataset is generated, planned and preprocessed in --workdir.
Trainer outputs (logs, debug.json, a final checkpoint) always go to <workdir>/nnUNet_results.

    PYTHONPATH=. DROPGEN_WEIGHTS_ANATOMIX=/path/anatomix.pth python benchmarks/bench_trainer_overhead.py
    PYTHONPATH=. python benchmarks/bench_trainer_overhead.py --device cuda     # 160^3 images, patch ~128^3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from _common import (
    PeakMemory,
    Timing,
    default_device,
    format_mib,
    format_ratio,
    machine_description,
    run_isolated,
    timed,
)
from torch._dynamo import OptimizedModule

from nnunetv2_dropgen.demo.commands import nnunet_command

if TYPE_CHECKING:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

SYNTHETIC_DATASET_ID = 990
SYNTHETIC_NAME = "DropGenBench"
PLANS = "nnUNetPlans"
TRAINERS = ("nnUNetTrainer", "DropGenTrainer")
# Targets for GPU 3d_fullres with ~128^3 patches (DropGen / nnU-Net).
TARGETS = {"train_step": 1.20, "train_iteration": 1.20, "inference": 1.50, "train_peak_mib": 1.10}


@dataclass(frozen=True)
class RunSpec:
    """What a measuring process needs; picklable so it can cross into a spawned process."""

    trainer: str
    dataset_name: str
    configuration: str
    fold: int
    device: str
    warmup: int
    iters: int
    infer_repeats: int
    threads: int | None
    log_dir: str


def make_trainer(spec: RunSpec) -> nnUNetTrainer:
    """Instantiate a trainer the way nnUNetv2_train does, from the preprocessed plans and dataset.json.

    nnU-Net is imported here, not at the top: it reads the nnUNet_* paths on import, which main() sets first.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_dropgen.trainers import DropGenTrainer

    trainer_class = {"nnUNetTrainer": nnUNetTrainer, "DropGenTrainer": DropGenTrainer}[spec.trainer]
    folder = Path(nnUNet_preprocessed) / spec.dataset_name
    plans = load_json(str(folder / f"{PLANS}.json"))
    dataset_json = load_json(str(folder / "dataset.json"))
    plans["continue_training"] = False  # nnU-Net 2.8's trainer pops this key; run_training.py sets it the same way
    return trainer_class(plans, spec.configuration, spec.fold, dataset_json, torch.device(spec.device))


@contextlib.contextmanager
def measuring_process(spec: RunSpec, phase: str) -> Iterator[None]:
    """Measuring-process setup as nnUNetv2_train does it (cudnn.benchmark), threads, console chatter to a log."""
    torch.backends.cudnn.benchmark = True  # run_training.py sets this before training and prediction
    if spec.threads:
        torch.set_num_threads(spec.threads)
    log = Path(spec.log_dir) / f"{spec.trainer}_{phase}.log"
    with open(log, "w") as handle, contextlib.redirect_stdout(handle):
        yield


def measure_training(spec: RunSpec) -> dict:
    """Iteration time with data loading included and excluded, and the training peak memory."""
    device = torch.device(spec.device)
    memory = PeakMemory(device)
    with measuring_process(spec, "train"), memory.measure():
        trainer = make_trainer(spec)
        trainer.on_train_start()
        try:
            trainer.network.train()

            def full_iteration() -> None:
                trainer.train_step(next(trainer.dataloader_train))

            for _ in range(spec.warmup):
                timed(full_iteration, device)
            included = Timing([timed(full_iteration, device) for _ in range(spec.iters)])
            batches = [next(trainer.dataloader_train) for _ in range(spec.iters)]
            excluded = Timing([timed(lambda b=batch: trainer.train_step(b), device) for batch in batches])
            data_shape = tuple(batches[0]["data"].shape)
        finally:
            trainer.on_train_end()  # also shuts the augmentation workers down, so the process can exit
    network = trainer.network._orig_mod if isinstance(trainer.network, OptimizedModule) else trainer.network
    return {
        **compilation_counts(),
        "batch_size": trainer.batch_size,
        "patch_size": tuple(int(s) for s in trainer.configuration_manager.patch_size),
        "data_shape": data_shape,
        "network": type(network).__name__,
        "extractor_weights": network.record.weights_origin if hasattr(network, "record") else None,
        "compiled": isinstance(trainer.network, OptimizedModule),
        "train_step": excluded,
        "train_iteration": included,
        "train_peak_mib": memory.peak_mib,
        "memory_what": memory.what,
    }


def compilation_counts() -> dict[str, int]:
    """torch.compile's graphs and recompilations in this process so far (0 when nothing was compiled)."""

    if "torch._dynamo" not in sys.modules:
        return {"compiled_graphs": 0, "recompilations": 0}
    from torch._dynamo.utils import counters

    return {
        "compiled_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "recompilations": int(sum(counters["recompiles"].values())),
    }


def measure_inference(spec: RunSpec) -> dict:
    """nnU-Net's sliding-window prediction of one whole preprocessed case, mirroring on (nnU-Net's default).

    The network keeps its initial weights (the extractor's random ones for DropGen): the time does not depend
    on the weights' values.
    """
    import numpy as np
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    device = torch.device(spec.device)
    memory = PeakMemory(device)
    with measuring_process(spec, "inference"), memory.measure():
        trainer = make_trainer(spec)
        trainer.initialize()
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the mirroring axes
        trainer.set_deep_supervision_enabled(False)
        dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder)
        case = sorted(dataset.identifiers)[0]
        image = torch.from_numpy(np.asarray(dataset.load_case(case)[0][:]))
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=True,
            perform_everything_on_device=True,
            device=device,
            verbose=False,
            allow_tqdm=False,
        )
        predictor.manual_initialization(
            trainer.network,
            trainer.plans_manager,
            trainer.configuration_manager,
            None,
            trainer.dataset_json,
            spec.trainer,
            trainer.inference_allowed_mirroring_axes,
        )

        def predict() -> None:
            predictor.predict_sliding_window_return_logits(image)

        timed(predict, device)  # warm-up
        timing = Timing([timed(predict, device) for _ in range(spec.infer_repeats)])
    patch = list(trainer.configuration_manager.patch_size)
    padded = [max(s, p) for s, p in zip(image.shape[1:], patch, strict=True)]
    steps = compute_steps_for_sliding_window(padded, patch, 0.5)
    counts = compilation_counts()
    return {
        "inference_compiled_graphs": counts["compiled_graphs"],
        "inference_recompilations": counts["recompilations"],
        "inference": timing,
        "inference_peak_mib": memory.peak_mib,
        "case": case,
        "image_shape": tuple(image.shape),
        "tiles": int(np.prod([len(s) for s in steps])),
        "mirror_passes": 2 ** len(trainer.inference_allowed_mirroring_axes),
    }


def prepare_synthetic_dataset(
    shape: tuple[int, int, int], configuration: str, raw_dir: Path, preprocessed_dir: Path
) -> str:
    """Generate (or reuse) the synthetic dataset and run nnU-Net's planning and preprocessing for `configuration`."""
    from nnunetv2_dropgen.synthetic import generate_dataset

    folder = generate_dataset(
        raw_dir, dataset_id=SYNTHETIC_DATASET_ID, name=SYNTHETIC_NAME, shape=shape, num_train=5, num_test_per_domain=0
    )
    name = folder.name
    if not (preprocessed_dir / name / f"{PLANS}_{configuration}").is_dir():
        workers = str(min(4, os.cpu_count() or 1))
        command = [
            nnunet_command("nnUNetv2_plan_and_preprocess"),  # beside this Python, else on PATH (a --target install)
            "-d",
            str(SYNTHETIC_DATASET_ID),
            "-c",
            configuration,
            "-np",
            workers,
            "-npfp",
            workers,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="an existing preprocessed dataset (id or name) under $nnUNet_raw/$nnUNet_preprocessed; "
        "default: generate a synthetic one in --workdir",
    )
    parser.add_argument(
        "--dataset-shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default 64^3 cpu, 160^3 gpu"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given; default: a temporary folder")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per mode (default 3 cpu, 30 gpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 1 cpu, 5 gpu)")
    parser.add_argument("--infer-repeats", type=int, default=1, help="timed whole-volume predictions (after 1 warm-up)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set nnUNet_compile (default: on for cuda as in nnU-Net, off for cpu where nnU-Net ignores it)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--anatomix-weights", type=Path, default=None, help="sets DROPGEN_WEIGHTS_ANATOMIX")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args()


TIMED_ROWS = (
    ("train step (data excluded)", "train_step"),
    ("train iteration (data incl.)", "train_iteration"),
    ("sliding-window inference", "inference"),
)
MEMORY_ROWS = (("peak memory, training", "train_peak_mib"), ("peak memory, inference", "inference_peak_mib"))


def report_row(label: str, base: float | None, dropgen: float | None, target: float | None, unit: str) -> str:
    """One table line: both values, their ratio, the target and whether the ratio meets it."""
    if unit == "s":
        cells = f"{base:>14.3f} s{dropgen:>14.3f} s"
    else:
        cells = f"{format_mib(base):>16}{format_mib(dropgen):>16}"
    flag = "-"
    if target is not None and base and dropgen is not None:
        flag = "PASS" if dropgen / base <= target else "ABOVE"
    target_text = f"<={target:.2f}x" if target else "-"
    return f"{label:<34}{cells}{format_ratio(dropgen, base):>9}{target_text:>9}  {flag}"


def print_report(results: dict[str, dict], on_gpu: bool, log_note: str) -> None:
    base, dropgen = results["nnUNetTrainer"], results["DropGenTrainer"]
    print()
    print(f"{'':<34}{'nnUNetTrainer':>16}{'DropGenTrainer':>16}{'ratio':>9}{'target':>9}  flag")
    for label, key in TIMED_ROWS:
        print(report_row(f"{label}, wall", base[key].wall, dropgen[key].wall, TARGETS.get(key), "s"))
    if not on_gpu:
        for label, key in TIMED_ROWS:
            print(report_row(f"{label}, CPU", base[key].cpu, dropgen[key].cpu, TARGETS.get(key), "s"))
    for label, key in MEMORY_ROWS:
        print(report_row(label, base[key], dropgen[key], TARGETS.get(key), "MiB"))
    print()
    for name in TRAINERS:
        r = results[name]
        print(
            f"{name}: step {r['train_step'].describe(not on_gpu)}; iteration "
            f"{r['train_iteration'].describe(not on_gpu)}; inference {r['inference'].describe(not on_gpu)}"
        )
    print("wall = median wall-clock time per call; CPU = median CPU time of the training/inference process")
    print("(all its threads; excludes nnU-Net's augmentation workers), steadier than wall time on a shared machine")
    print(f"peak memory = {base['memory_what']}, over the whole training or inference phase")
    if not on_gpu:
        print("note: the targets are for GPU 3d_fullres with ~128^3 patches; on CPU the flags are only indicative")
    print(f"nnU-Net console output: {log_note}")


def figures(results: dict[str, dict], device: torch.device) -> dict:
    """The measured figures as plain JSON values: seconds, MiB, ratios, compilation counts."""
    document: dict = {"machine": machine_description(device), "nnUNet_compile": os.environ["nnUNet_compile"]}
    for name, result in results.items():
        document[name] = {
            key: (value.wall if isinstance(value, Timing) else value)
            for key, value in result.items()
            if isinstance(value, Timing | int | float | str | bool | tuple) or value is None
        }
    base, dropgen = results["nnUNetTrainer"], results["DropGenTrainer"]
    for _, key in (*TIMED_ROWS, *MEMORY_ROWS):
        b, d = base[key], dropgen[key]
        b, d = (b.wall, d.wall) if isinstance(b, Timing) else (b, d)
        document[f"{key}_ratio"] = d / b if b else None
    return document


def main() -> None:
    args = parse_args()
    device = torch.device(args.device) if args.device else default_device()
    on_gpu = device.type == "cuda"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dropgen_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.dataset is None:
        os.environ["nnUNet_raw"] = str(workdir / "nnUNet_raw")
        os.environ["nnUNet_preprocessed"] = str(workdir / "nnUNet_preprocessed")
    os.environ["nnUNet_results"] = str(workdir / "nnUNet_results")
    compile_network = on_gpu if args.compile is None else args.compile
    os.environ["nnUNet_compile"] = "true" if compile_network else "false"
    if args.anatomix_weights is not None:
        os.environ["DROPGEN_WEIGHTS_ANATOMIX"] = str(args.anatomix_weights.resolve())
    log_dir = workdir / "logs"
    log_dir.mkdir(exist_ok=True)

    try:
        if args.dataset is None:
            shape = tuple(args.dataset_shape) if args.dataset_shape else ((160,) * 3 if on_gpu else (64,) * 3)
            dataset_name = prepare_synthetic_dataset(
                shape, args.configuration, Path(os.environ["nnUNet_raw"]), Path(os.environ["nnUNet_preprocessed"])
            )
        else:
            from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

            dataset_name = maybe_convert_to_dataset_name(args.dataset)

        specs = {
            name: RunSpec(
                trainer=name,
                dataset_name=dataset_name,
                configuration=args.configuration,
                fold=args.fold,
                device=str(device),
                warmup=args.warmup if args.warmup is not None else (5 if on_gpu else 1),
                iters=args.iters or (30 if on_gpu else 3),
                infer_repeats=args.infer_repeats,
                threads=args.threads,
                log_dir=str(log_dir),
            )
            for name in TRAINERS
        }
        results = {}
        for name, spec in specs.items():
            results[name] = run_isolated(measure_training, spec) | run_isolated(measure_inference, spec)

        base, dropgen = results["nnUNetTrainer"], results["DropGenTrainer"]
        assert base["batch_size"] == dropgen["batch_size"], "the trainers must use the same batch size"
        assert base["patch_size"] == dropgen["patch_size"], "the trainers must use the same patch size"
        assert base["data_shape"] == dropgen["data_shape"], "the trainers must get the same batches"
        assert base["data_shape"][0] == base["batch_size"] and base["data_shape"][2:] == base["patch_size"]
        spec = specs["nnUNetTrainer"]
        if args.threads:
            torch.set_num_threads(args.threads)  # so the header reports what the measuring processes use
        print("== DropGenTrainer vs nnUNetTrainer overhead ==")
        print(f"machine: {machine_description(device)}")
        print(
            f"dataset {dataset_name} | {spec.configuration} fold {spec.fold} | batch {base['batch_size']} | "
            f"patch {'x'.join(map(str, base['patch_size']))} (same for both trainers) | "
            f"nnUNet_compile={os.environ['nnUNet_compile']} (compiled: nnU-Net {base['compiled']}, "
            f"DropGen {dropgen['compiled']}) | nnU-Net autocast {'fp16' if on_gpu else 'off (cpu)'}"
        )
        print(
            f"training: {spec.warmup} warm-up + {spec.iters} timed iterations per mode | inference: case "
            f"{base['case']} {'x'.join(map(str, base['image_shape'][1:]))}, {base['tiles']} tiles x "
            f"{base['mirror_passes']} mirrored passes, 1 warm-up + {spec.infer_repeats} timed"
        )
        print(f"DropGen network {dropgen['network']}, extractor weights: {dropgen['extractor_weights']}")
        kept = "" if args.workdir else " (deleted at exit; pass --workdir to keep it)"
        print_report(results, on_gpu, f"{log_dir}{kept}")
        if args.json:
            args.json.write_text(json.dumps(figures(results, device), indent=2) + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
