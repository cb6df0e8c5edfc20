"""How far a target domain moves DropGen's features, and how much of a trained model's Dice that move costs.

An extractor can look appearance-invariant by cosine similarity and still lose a segmentation network trained
on one domain: what matters is how large the remaining shift is for the network that reads the features. For
one trained DropGen model (its extractor, options and feature normalization, as recorded in its checkpoint)
and the benchmark's test cases, this prints per target domain:

- the features' shift from the source rendering of the same case: per-voxel cosine similarity (foreground,
  background), mean |difference| per channel on the foreground in units of the channel's spread (features are
  standardized per channel), against the distance between label centroids on the source;
- the model's Dice when its features are moved a fraction a of the way from the source's to the target's,
  the network's image channel being the target's (for featuresOnly models there is none): a = 0 isolates
  what the image channel costs, a = 1 is the model's Dice on the target, the curve in between is the
  network's sensitivity to the feature shift.

Test images go through nnU-Net's own preprocessing (the model's plans), then one forward pass over the whole
volume (the synthetic benchmark's volumes are one patch), without mirroring.

    PYTHONPATH=. python benchmarks/bench_feature_shift.py --workdir /work/bench --dataset-id 620 \\
        --trainer DropGenTrainer_minimix2_featuresOnly_48epochs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from _common import machine_description
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_dropgen.ext_trainers import trainer_dir
from nnunetv2_dropgen.synthetic.names import SOURCE_DOMAIN, TARGET_DOMAINS

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="bench_domain_shift.py's --workdir")
    parser.add_argument("--dataset-id", type=int, default=620)
    parser.add_argument("--trainer", required=True, help="a DropGen trainer name trained on that dataset")
    parser.add_argument("--plans", default="nnUNetPlansCPU")
    parser.add_argument("--fold", default="all")
    parser.add_argument("--source", default=SOURCE_DOMAIN, help="the training domain's test set (CT to MR: ct)")
    parser.add_argument("--domains", nargs="+", default=list(TARGET_DOMAINS), help="target test sets (imagesTs_*)")
    return parser.parse_args()


def load_predictor(args: argparse.Namespace) -> nnUNetPredictor:
    results = args.workdir / "nnUNet_results"
    dataset = next(results.glob(f"Dataset{args.dataset_id:03d}_*"), None)
    model = convert_trainer_plans_config_to_identifier(args.trainer, args.plans, "3d_fullres")
    folder = dataset / model if dataset else None
    if folder is None or not (folder / f"fold_{args.fold}" / "checkpoint_final.pth").is_file():
        sys.exit(f"no trained model {args.trainer} ({args.plans}, fold {args.fold}) under {results}: train it first.")
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), (args.fold,), "checkpoint_final.pth")
    if not hasattr(predictor.network, "compute_features"):
        sys.exit(f"{args.trainer} is not a DropGen model: it has no features to shift.")
    return predictor


def preprocessed_case(predictor: nnUNetPredictor, image: Path, labels: Path) -> tuple[torch.Tensor, np.ndarray]:
    """(1, C, *spatial) image and (*spatial) labels after the model's own nnU-Net preprocessing."""
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, seg, _ = preprocessor.run_case(
        [str(image)], str(labels), predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    )
    return torch.from_numpy(np.asarray(data, dtype=np.float32))[None], np.asarray(seg[0])


def dice(prediction: np.ndarray, truth: np.ndarray, labels: list[int]) -> float:
    """Mean Dice over `labels` (nnU-Net's tp/fp/fn)."""
    scores = []
    for label in labels:
        tp, fp, fn, _ = compute_tp_fp_fn_tn(truth == label, prediction == label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
    return float(np.nanmean(scores))


@torch.no_grad()
def predict_with(network: torch.nn.Module, image: torch.Tensor, features: torch.Tensor) -> np.ndarray:
    """The network's segmentation of `image` with `features` in place of the ones it would compute."""
    network.compute_features = lambda images: features  # forward() builds the rest (options, image channel)
    try:
        return network(image).argmax(1)[0].numpy()
    finally:
        del network.compute_features


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(F, *spatial) x2 -> (*spatial) cosine similarity per voxel."""
    return torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-8)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("nnUNet_extTrainer", str(trainer_dir()))
    for name in ("raw", "preprocessed", "results"):
        os.environ.setdefault(f"nnUNet_{name}", str(args.workdir / f"nnUNet_{name}"))
    predictor = load_predictor(args)
    network = predictor.network.eval()
    raw = next((args.workdir / "nnUNet_raw").glob(f"Dataset{args.dataset_id:03d}_*"))
    missing = [d for d in [args.source, *args.domains] if not (raw / f"imagesTs_{d}").is_dir()]
    if missing:
        sys.exit(f"{raw} has no test set {', '.join(missing)}: pick --source and --domains among its imagesTs_*.")
    label_ids = sorted(int(v) for v in predictor.dataset_json["labels"].values() if int(v) > 0)
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / f"imagesTs_{args.source}").glob("*_0000.nii.gz"))
    print(f"{machine_description(torch.device('cpu'))}\nmodel {args.trainer}, dataset {raw.name}, {len(cases)} cases")

    def case(domain: str, name: str) -> tuple[torch.Tensor, np.ndarray]:
        return preprocessed_case(
            predictor, raw / f"imagesTs_{domain}" / f"{name}_0000.nii.gz", raw / f"labelsTs_{domain}" / f"{name}.nii.gz"
        )

    source = {name: case(args.source, name) for name in cases}
    source_features = {name: network.compute_features(image)[0] for name, (image, _) in source.items()}
    separation = []
    for name, (_, labels) in source.items():
        mask = torch.from_numpy(labels)
        centroids = [source_features[name][:, mask == k].mean(1) for k in [0, *label_ids] if bool((mask == k).any())]
        separation += [float((a - b).norm()) for i, a in enumerate(centroids) for b in centroids[i + 1 :]]
    print(f"{args.source}: distance between label centroids (background included) {np.mean(separation):.2f} (mean)\n")
    header = "| domain | cosine, foreground | cosine, background | mean abs shift per channel, foreground | "
    print(header + " | ".join(f"Dice at a = {a:g}" for a in FRACTIONS) + " |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in FRACTIONS) + " |")
    for domain in [args.source, *args.domains]:
        cos_fg, cos_bg, shift, dices = [], [], [], {a: [] for a in FRACTIONS}
        for name in cases:
            image, labels = source[name] if domain == args.source else case(domain, name)
            if not np.array_equal(labels, source[name][1]):
                sys.exit(f"{domain}/{name} does not share the source case's label map: not a paired test set.")
            ours, theirs = network.compute_features(image)[0], source_features[name]
            foreground = torch.from_numpy(labels > 0)
            similarity = cosine(ours, theirs)
            cos_fg.append(float(similarity[foreground].mean()))
            cos_bg.append(float(similarity[~foreground].mean()))
            shift.append(float((ours - theirs).abs()[:, foreground].mean()))
            for a in FRACTIONS:
                moved = theirs + a * (ours - theirs)
                dices[a].append(dice(predict_with(network, image, moved[None]), labels, label_ids))
        cells = [f"{np.mean(cos_fg):.3f}", f"{np.mean(cos_bg):.3f}", f"{np.mean(shift):.3f}"]
        print(f"| {domain} | " + " | ".join(cells + [f"{np.mean(dices[a]):.3f}" for a in FRACTIONS]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
