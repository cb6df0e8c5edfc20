"""Pretraining throughput: data generation (compose + two views) beside the model step, in steps/s and voxels/s.

A step is `--batch` label maps composed from the pool, two renderings each (so 2 x batch volumes go
through the extractor), the contrastive loss over all supervised levels, backward and the AdamW update.
Data generation and the model step are also timed apart, so one sees which of the two limits a device.
The run's precision and memory layout are what `nnunetv2_dropgen pretrain` would use (--precision auto:
bf16 and channels-last 3D on a CPU with native bf16); --compare-fp32 also times the float32, contiguous
step in the same run and checks the extractor's features of both paths against each other.

    PYTHONPATH=. python benchmarks/bench_pretraining.py --ngf 8 --patch 64 --batch 2 --compare-fp32   # cpu
    PYTHONPATH=. python benchmarks/bench_pretraining.py --architecture anatomix --device cuda --patch 128
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from _common import Timing, default_device, machine_description, timed

from nnunetv2_dropgen.feature_extractors import (
    AnatomixConfig,
    ExtractorSpec,
    anatomix_spec,
    get_extractor_spec,
    register_extractor,
)
from nnunetv2_dropgen.pretraining import (
    AppearanceSettings,
    CompositionSettings,
    PretrainSettings,
    compose_label_maps,
    pool_from_synthetic,
    render_views,
)
from nnunetv2_dropgen.pretraining.loop import autocast_dtype, memory_format, validate_patch_size
from nnunetv2_dropgen.pretraining.objective import ContrastiveObjective, level_channels


def _spec(args: argparse.Namespace) -> ExtractorSpec:
    """The registered architecture, or an anatomix layout with the given widths (e.g. the embedded default's)."""
    if args.ngf is None:
        return get_extractor_spec(args.architecture)
    config = AnatomixConfig(output_nc=args.output_nc, num_downs=args.num_downs, ngf=args.ngf)
    return register_extractor(
        anatomix_spec(f"bench-anatomix-ngf{args.ngf}-d{args.num_downs}-f{args.output_nc}", config)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="anatomix", help="registered extractor (default anatomix)")
    parser.add_argument("--ngf", type=int, help="instead: an anatomix layout with this many first-level filters")
    parser.add_argument("--num-downs", type=int, default=4, help="with --ngf: levels (default 4)")
    parser.add_argument("--output-nc", type=int, default=16, help="with --ngf: feature channels (default 16)")
    parser.add_argument("--patch", type=int, nargs="+", default=[64], help="one size or Z Y X (default 64)")
    parser.add_argument("--batch", type=int, default=2, help="label maps per step (default 2, i.e. 4 volumes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device().type)
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (bf16/fp16 on cuda, bf16 on a CPU with native bf16, else fp32), fp32, bf16, fp16",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic structures in the pool (default 200)")
    parser.add_argument(
        "--compare-fp32", action="store_true", help="also time float32 contiguous steps and compare the features"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    spec = _spec(args)
    patch = tuple(args.patch * 3 if len(args.patch) == 1 else args.patch)
    validate_patch_size(spec, patch)
    pool = pool_from_synthetic(args.synthetic, seed=0).to(device)
    amp = autocast_dtype(args.precision, device)
    print(machine_description(device))
    runs = [(amp, memory_format(device, amp, patch))]
    if args.compare_fp32:
        runs.append((None, torch.contiguous_format))
    results = [measure(args, spec, pool, patch, device, dtype, layout) for dtype, layout in runs]
    if args.json:
        document = {
            "machine": machine_description(device),
            "architecture": spec.name,
            "patch": list(patch),
            "batch": args.batch,
            "runs": [
                {"precision": r["name"], "step_s": r["full"].wall, "steps_per_s": 1 / r["full"].wall} for r in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.compare_fp32:
        fast, reference = results
        print(
            f"  speed-up of {fast['name']} over {reference['name']}: {reference['full'].wall / fast['full'].wall:.2f}x "
            f"per full step ({reference['full'].wall:.3f} s -> {fast['full'].wall:.3f} s)"
        )
        print(f"  features, {fast['name']} vs float32 (same weights and input): {feature_agreement(spec, patch, runs)}")


def measure(
    args: argparse.Namespace,
    spec: ExtractorSpec,
    pool,
    patch: tuple[int, ...],
    device: torch.device,
    amp: torch.dtype | None,
    layout: torch.memory_format,
) -> dict:
    """Time data generation, the model step and the full step of one precision and memory layout."""
    composition, appearance = CompositionSettings(), AppearanceSettings()
    generator = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    extractor = spec.build().to(device)
    objective = ContrastiveObjective(extractor, level_channels(extractor, spec.min_spatial_size))
    objective = objective.to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=PretrainSettings.lr, weight_decay=PretrainSettings.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    batch: dict[str, torch.Tensor] = {}

    def generate() -> None:
        with torch.no_grad():
            labels = compose_label_maps(pool, args.batch, patch, generator, composition)
            batch["labels"] = labels
            views = spec.preprocessing(render_views(labels, generator, appearance).flatten(0, 1))
            batch["views"] = views.contiguous(memory_format=layout)

    def model_step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = objective(batch["views"], batch["labels"], generator)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def full_step() -> None:
        generate()
        model_step()

    for _ in range(args.warmup):
        full_step()
    data = Timing([timed(generate, device) for _ in range(args.steps)])
    model = Timing([timed(model_step, device) for _ in range(args.steps)])
    full = Timing([timed(full_step, device) for _ in range(args.steps)])

    voxels = 2 * args.batch * math.prod(patch)
    parameters = sum(p.numel() for p in extractor.parameters())
    with_cpu = device.type == "cpu"
    name = f"{amp or 'float32'}, {'channels-last 3D' if layout == torch.channels_last_3d else 'contiguous'}"
    print(
        f"{spec.name}: {parameters / 1e6:.2f}M parameters; patch {list(patch)}, batch {args.batch} x 2 views "
        f"({voxels:,} voxels per step), {name}, pool of {len(pool)} structures"
    )
    print(f"  data generation (compose + render): {data.describe(with_cpu)}")
    print(f"  model step (forward, loss, backward, AdamW): {model.describe(with_cpu)}")
    print(f"  full step: {full.describe(with_cpu)}")
    print(
        f"  throughput: {1 / full.wall:.3f} steps/s, {voxels / full.wall / 1e6:.3f} M voxels/s "
        f"(data generation {data.wall / full.wall:.0%} of a step)"
    )
    return {"name": name, "full": full}


def feature_agreement(spec: ExtractorSpec, patch: tuple[int, ...], runs: list) -> str:
    """How far the fast path's features are from float32's: relative error and cosine per voxel (eval mode)."""
    (amp, layout), _ = runs
    torch.manual_seed(0)
    extractor = spec.build().eval()
    images = torch.rand((2, 1, *patch), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = extractor(images)
        fast_extractor = extractor.to(memory_format=layout)
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            fast = fast_extractor(images.contiguous(memory_format=layout)).float()
    relative = float((fast - reference).norm() / reference.norm())
    cosine = float(torch.nn.functional.cosine_similarity(fast, reference, dim=1).mean())
    return f"relative error {relative:.2e}, mean cosine per voxel {cosine:.5f}"


if __name__ == "__main__":
    main()
