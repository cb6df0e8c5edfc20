"""Write the benchmark's seed-0 models into the package, for `nnunetv2_dropgen demo` to evaluate.

The demo cannot train for 20,000 iterations on a CPU in minutes; it evaluates these models beside the ones
it trains (see nnunetv2_dropgen/demo/shipped.py). This script makes the shipped files from a domain-shift
benchmark's nnU-Net results: slim checkpoints (no optimizer state, no extractor weights), plans.json,
dataset.json and a manifest with what each model is, how long it trained, whether its curve was flat, and
on which data. Everything is written to a new folder first, checked by the package's own loader, and only
then replaces the package's folder.

    PYTHONPATH=.:benchmarks python benchmarks/export_demo_models.py --workdir /work/bench
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from _domain_shift_report import last_fifth_change, training_seconds
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_dropgen.demo.shipped import MANIFEST_FORMAT, load_manifest, shipped_dir, slim_checkpoint
from nnunetv2_dropgen.network.dropgen_network import RECORD_KEY
from nnunetv2_dropgen.synthetic import read_generation
from nnunetv2_dropgen.trainers.schedule import schedule_from_token
from nnunetv2_dropgen.weights import sha256_file
from nnunetv2_dropgen.weights.files import write_json_atomically

PLANS = "nnUNetPlansCPU"
CONFIGURATION = "3d_fullres"
NNUNET_ITERATIONS_PER_EPOCH = 250
"""nnUNetTrainer.__init__'s num_iterations_per_epoch, which '<N>epochs' schedules keep."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="the benchmark's --workdir")
    parser.add_argument("--dataset-id", type=int, default=620, help="default: 620 (seed 0)")
    parser.add_argument("--schedule", default="80epochs", help="the trainers' schedule part (default: 80epochs)")
    parser.add_argument("--dropgen", default="minimix2_p075", help="DropGen's trainer-name middle part")
    parser.add_argument("--out", type=Path, default=shipped_dir(), help="default: the package's folder")
    args = parser.parse_args()

    raw = sorted((args.workdir / "nnUNet_raw").glob(f"Dataset{args.dataset_id:03d}_*"))
    schedule = schedule_from_token(args.schedule)
    if not raw or schedule is None:
        print(f"error: no dataset {args.dataset_id} in {args.workdir}/nnUNet_raw, or no schedule {args.schedule!r}")
        return 1
    results = args.workdir / "nnUNet_results" / raw[0].name
    models = {
        "DropGen (minimix2)": f"DropGenTrainer_{args.dropgen}_{args.schedule}",
        "nnU-Net (ERM)": f"nnUNetTrainer_{args.schedule}",
        "nnU-Net DA5": f"nnUNetTrainerDA5_{args.schedule}",
    }
    folder = {t: convert_trainer_plans_config_to_identifier(t, PLANS, CONFIGURATION) for t in models.values()}
    checkpoints = {t: results / folder[t] / "fold_all" / "checkpoint_final.pth" for t in models.values()}
    missing = [str(path) for path in checkpoints.values() if not path.is_file()]
    if missing:
        print(f"error: not trained yet: {', '.join(missing)}")
        return 1
    per_epoch = schedule.iterations_per_epoch or NNUNET_ITERATIONS_PER_EPOCH

    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    entries = []
    for label, trainer in models.items():
        checkpoint = torch.load(checkpoints[trainer], map_location="cpu", weights_only=False)
        buffer = io.BytesIO()
        torch.save(slim_checkpoint(checkpoint), buffer)
        (staging / f"{trainer}.pth").write_bytes(buffer.getvalue())
        for name in ("plans.json", "dataset.json"):
            shutil.copyfile(checkpoints[trainer].parents[1] / name, staging / f"{trainer}.{name}")
        log = checkpoint["logging"]
        record = checkpoint["network_weights"].get(RECORD_KEY)
        entries.append(
            {
                "label": label,
                "trainer": trainer,
                "plans": PLANS,
                "configuration": CONFIGURATION,
                "weights_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                "plans_sha256": sha256_file(staging / f"{trainer}.plans.json"),
                "dataset_sha256": sha256_file(staging / f"{trainer}.dataset.json"),
                "iterations": checkpoint["current_epoch"] * per_epoch,
                "train_minutes": round(training_seconds(log) / 60, 1),
                "final_ema_pseudo_dice": round(float(log["ema_fg_dice"][-1]), 4),
                "last_fifth_change": round(last_fifth_change([float(v) for v in log["ema_fg_dice"]]), 4),
                "extractor": record["extractor"] if record else None,
            }
        )
    generation = read_generation(raw[0])
    write_json_atomically(
        staging / "manifest.json",
        {
            "format": MANIFEST_FORMAT,
            "models": entries,
            "baseline": "nnU-Net (ERM)",
            "data": generation,
            "provenance": (
                f"benchmarks/bench_domain_shift.py --schedule {args.schedule} --plans cpu, seed {generation['seed']} "
                f"(dataset {raw[0].name}), fold all, on a 2-core CPU; benchmarks/RESULTS.md reports them and "
                "how they were trained"
            ),
        },
    )
    for path in staging.iterdir():
        path.chmod(0o644)
    manifest = load_manifest(staging)  # the package's own checks, before the shipped folder is replaced
    if args.out.exists():
        shutil.rmtree(args.out)
    staging.rename(args.out)
    for model in manifest.models:
        print(f"{model.label}: {model.trainer}, {model.iterations} iterations, {model.train_minutes} min")
    print(f"Written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
