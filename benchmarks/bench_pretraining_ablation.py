"""Which of pretraining's anatomix-like changes help: short runs with one change undone at a time.

Every arm pretrains the embedded architecture (anatomix's layout, 8 base filters) for the same steps, seed and patch,
then reports the held-out stability metric on structure kinds outside the pretraining pool (the synthetic
benchmark's kinds, never pretrained on): the cosine gap and the Dice a linear probe fitted on one appearance
keeps on others. Arms:

    full            anatomix's composition, two-stage appearance with MR artefacts, anatomix's six taps
    composition     as before this change: 4-12 structures, no wrap-around tiling, no shear, no median filter
    appearance      as before: stage 1 only, without k-space spikes, Gibbs ringing, sharpening (nor stage 2)
    taps            as before: the ends of the four decoder levels and the output

    PYTHONPATH=. python benchmarks/bench_pretraining_ablation.py --steps 500 --patch 32 --out /tmp/ablation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

from nnunetv2_dropgen.feature_extractors import MINIMIX, AnatomixUNet, anatomix_spec, registered_extractor
from nnunetv2_dropgen.pretraining import (
    AppearanceSettings,
    CompositionSettings,
    PretrainSettings,
    pretrain,
    training_and_held_out_pools,
)

ARMS = ("full", "composition", "appearance", "taps")


class DecoderLevelTaps(nn.Module):
    """The supervision before anatomix's taps: each decoder level's last activation, then the final output."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = AnatomixUNet(MINIMIX)
        upsamplings = [i for i, layer in enumerate(self.unet.model) if isinstance(layer, nn.Upsample)]
        self.level_ends = [i - 1 for i in upsamplings[1:]] + [len(self.unet.model) - 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        hooks = [
            self.unet.model[i].register_forward_hook(lambda _m, _i, out: levels.append(out.clone()))
            for i in self.level_ends
        ]
        try:
            output = self.unet(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [*levels, output]


def arm_settings(arm: str, base: PretrainSettings) -> PretrainSettings:
    if arm == "composition":
        old = CompositionSettings(structures=(4, 12), shear=0.0, wrap=False, median_filter=False)
        return dataclasses.replace(base, composition=old)
    if arm == "appearance":
        old = AppearanceSettings(
            second_stage=False, spike_probability=0.0, gibbs_probability=0.0, sharpen_probability=0.0
        )
        return dataclasses.replace(base, appearance=old)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--synthetic", type=int, default=400, help="structures in the pretraining pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for each arm's weights and record")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pool, held_out = training_and_held_out_pools([], args.synthetic, args.seed)
    rows = []
    for arm in args.arms:
        build = DecoderLevelTaps if arm == "taps" else (lambda: AnatomixUNet(MINIMIX))
        spec = dataclasses.replace(anatomix_spec(f"ablation-{arm}", MINIMIX), build=build)
        base = PretrainSettings(
            architecture=spec.name,
            out=args.out / f"{arm}.pth",
            steps=args.steps,
            patch_size=(args.patch,) * 3,
            seed=args.seed,
            evaluate_every=0,
            checkpoint_every=args.steps,
            resume=(args.out / f"{arm}.checkpoint.pth").exists(),
        )
        started = time.perf_counter()
        with registered_extractor(spec):
            result = pretrain(arm_settings(arm, base), spec, pool, held_out, command=f"ablation arm {arm}")
        metrics = result.metrics.as_dict() if result.metrics else {}
        rows.append({"arm": arm, "seconds": round(time.perf_counter() - started), **metrics})
        (args.out / "ablation.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{args.steps} steps, {args.patch}^3 patches, seed {args.seed}; held-out: benchmark kinds")
    print(
        "| arm | gap (cosine same voxel - different labels) | probe Dice, other appearances | probe Dice, fitted | s |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['arm']} | {row.get('gap', float('nan')):.3f} | {row.get('probe_dice_other', float('nan')):.3f} "
            f"| {row.get('probe_dice_fitted', float('nan')):.3f} | {row['seconds']} |"
        )


if __name__ == "__main__":
    main()
