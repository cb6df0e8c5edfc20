"""Write the benchmark's converged seed-0 models into the package, for `nnunetv2_dropgen demo` to evaluate.

The demo cannot train to convergence on a CPU in minutes; it evaluates these models instead, beside the
ones it trains (see nnunetv2_dropgen/demo/converged.py). This script makes the shipped files from a
domain-shift benchmark's nnU-Net results: slim checkpoints (no optimizer state, no extractor weights),
plans.json, dataset.json and a manifest with what each model is, how long it trained and on which data.

    PYTHONPATH=. python benchmarks/export_demo_models.py --workdir /work/bench --dataset-id 620 \
        --schedule 48epochs --extractor-token minimix2_p075
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

import torch

from nnunetv2_dropgen.demo.converged import EXTRA_STATE, MANIFEST_FORMAT, converged_dir, load_manifest, slim_checkpoint
from nnunetv2_dropgen.synthetic.dataset import DOMAINS_FILE
from nnunetv2_dropgen.trainers.schedule import schedule_from_token
from nnunetv2_dropgen.weights.files import write_json_atomically

PLANS = "nnUNetPlansCPU"
CONFIGURATION = "3d_fullres"
NNUNET_ITERATIONS_PER_EPOCH = 250
"""nnUNetTrainer.__init__'s num_iterations_per_epoch, which '<N>epochs' schedules keep."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="the benchmark's --workdir")
    parser.add_argument("--dataset-id", type=int, default=620, help="default: 620 (seed 0)")
    parser.add_argument("--schedule", default="48epochs")
    parser.add_argument("--extractor-token", default="minimix2_p075", help="DropGen's trainer-name middle part")
    parser.add_argument("--out", type=Path, default=converged_dir(), help="default: the package's folder")
    args = parser.parse_args()

    raw = next((args.workdir / "nnUNet_raw").glob(f"Dataset{args.dataset_id:03d}_*"))
    results = args.workdir / "nnUNet_results" / raw.name
    generation = json.loads((raw / DOMAINS_FILE).read_text())
    models = {
        "DropGen (minimix2)": f"DropGenTrainer_{args.extractor_token}_{args.schedule}",
        "nnU-Net (ERM)": f"nnUNetTrainer_{args.schedule}",
        "nnU-Net DA5": f"nnUNetTrainerDA5_{args.schedule}",
    }
    schedule = schedule_from_token(args.schedule)
    per_epoch = schedule.iterations_per_epoch or NNUNET_ITERATIONS_PER_EPOCH
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    entries = []
    for label, trainer in models.items():
        folder = results / f"{trainer}__{PLANS}__{CONFIGURATION}"
        checkpoint = torch.load(folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        buffer = io.BytesIO()
        torch.save(slim_checkpoint(checkpoint), buffer)
        (args.out / f"{trainer}.pth").write_bytes(buffer.getvalue())
        for name in ("plans.json", "dataset.json"):
            shutil.copyfile(folder / name, args.out / f"{trainer}.{name}")
        log = checkpoint["logging"]
        record = checkpoint["network_weights"].get(EXTRA_STATE)
        entries.append(
            {
                "label": label,
                "trainer": trainer,
                "plans": PLANS,
                "configuration": CONFIGURATION,
                "weights_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                "iterations": checkpoint["current_epoch"] * per_epoch,
                "train_minutes": round((log["epoch_end_timestamps"][-1] - log["epoch_start_timestamps"][0]) / 60, 1),
                "final_ema_pseudo_dice": round(float(log["ema_fg_dice"][-1]), 4),
                "extractor": record["extractor"] if record else None,
            }
        )
    write_json_atomically(
        args.out / "manifest.json",
        {
            "format": MANIFEST_FORMAT,
            "models": entries,
            "baseline": "nnU-Net (ERM)",
            "data": {"generator_version": generation["generator_version"], **generation["parameters"]},
            "provenance": (
                f"benchmarks/bench_domain_shift.py --schedule {args.schedule} --plans cpu, seed 0 (dataset "
                f"{raw.name}), fold all, one torch thread each on a 2-core CPU; benchmarks/RESULTS.md reports "
                "these models"
            ),
        },
    )
    manifest = load_manifest(args.out)
    for model in manifest.models:
        print(f"{model.label}: {model.trainer}, {model.iterations} iterations, {model.train_minutes} min")
    print(f"Written: {args.out}")


if __name__ == "__main__":
    main()
