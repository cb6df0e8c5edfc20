"""Core cost of DropGen on one patch: anatomix forward, and a training step with and without DropGen.

Both training steps use nnU-Net's default 3d_fullres backbone (PlainConvUNet) configured the way
nnU-Net's ExperimentPlanner configures it for the given patch, built through nnU-Net's own
`get_network_from_plans`; DropGen's copy only has its input widened to 1 + 16 channels and is wrapped in
a DropGenNetwork. Each configuration runs in a fresh process so that peak memory is its own.

    PYTHONPATH=. python benchmarks/bench_network.py                 # cpu: 64^3, batch 2
    PYTHONPATH=. python benchmarks/bench_network.py --device cuda   # gpu: 128^3, batch 2, fp16 autocast
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
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
from torch import nn

NUM_CLASSES = 4  # background + 3 structures, as in the synthetic dataset
BACKBONE_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")


@dataclass(frozen=True)
class BenchConfig:
    """Everything a measuring process needs; picklable so it can cross into a spawned process."""

    device: str
    patch: tuple[int, int, int]
    batch: int
    repeats: int
    warmup: int
    amp: bool
    threads: int | None
    feature_bf16: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def amp_dtype(self) -> torch.dtype:
        return torch.float16 if self.device.startswith("cuda") else torch.bfloat16

    @property
    def voxels_per_batch(self) -> int:
        return self.batch * math.prod(self.patch)

    def prepare(self) -> torch.device:
        """Per-process setup as nnUNetv2_train does it (cudnn.benchmark), CPU threads; returns the device."""
        torch.backends.cudnn.benchmark = True
        if self.threads:
            torch.set_num_threads(self.threads)
        return self.torch_device

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.torch_device.type, dtype=self.amp_dtype, enabled=self.amp)


def plans_arch_kwargs(patch: tuple[int, int, int]) -> tuple[dict, tuple[int, ...]]:
    """PlainConvUNet kwargs as nnU-Net's default ExperimentPlanner writes them for an isotropic 1 mm patch.

    Same helper (get_pool_and_conv_props, feature maps >= 4), 32 features doubling per stage capped at 320,
    two convs per stage, InstanceNorm(affine), LeakyReLU. Returns the kwargs and the patch the topology
    accepts (nnU-Net rounds it to a multiple of 2**pooling).
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernel_sizes, patch_size, _ = get_pool_and_conv_props([1.0, 1.0, 1.0], list(patch), 4, 999999)
    num_stages = len(strides)
    arch_kwargs = {
        "n_stages": num_stages,
        "features_per_stage": [min(320, 32 * 2**i) for i in range(num_stages)],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": kernel_sizes,
        "strides": strides,
        "n_conv_per_stage": [2] * num_stages,
        "n_conv_per_stage_decoder": [2] * (num_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return arch_kwargs, tuple(int(s) for s in patch_size)


def build_model(variant: str, patch: tuple[int, int, int]) -> nn.Module:
    """'nnunet': the plain backbone on 1 channel; 'dropgen': the same backbone on 17 channels inside DropGen."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunetv2_dropgen.network import DropGenNetwork, build_dropgen_network

    arch_kwargs, _ = plans_arch_kwargs(patch)
    in_channels = 1 if variant == "nnunet" else DropGenNetwork.backbone_input_channels(1, 16)
    backbone = get_network_from_plans(
        BACKBONE_CLASS, arch_kwargs, REQUIRES_IMPORT, in_channels, NUM_CLASSES, allow_init=True, deep_supervision=True
    )
    if variant == "nnunet":
        return backbone
    return build_dropgen_network("anatomix", backbone, num_image_channels=1, pretrained=False)


def deep_supervision_loss(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over the deep-supervision outputs with nnU-Net's weights (1/2^i, lowest off, normalized)."""
    weights = [1 / 2**i for i in range(len(outputs))]
    if len(weights) > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return sum(w / total * F.cross_entropy(o.float(), t) for w, o, t in zip(weights, outputs, targets, strict=True))


def measure_features(config: BenchConfig) -> dict:
    """anatomix forward alone and DropGen's whole feature path (scale, pad, anatomix, crop, instance norm)."""
    device = config.prepare()
    network = build_model("dropgen", config.patch).to(device).eval()
    images = torch.randn(config.batch, 1, *config.patch, device=device)
    unit = torch.rand(config.batch, 1, *config.patch, device=device)
    results = {}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.feature_bf16 else config.autocast()
    with torch.no_grad(), autocast:
        for name, call in (
            ("extractor", lambda: network.extractor(unit)),
            ("feature_path", lambda: network.compute_features(images)),
        ):
            for _ in range(config.warmup):
                timed(call, device)
            results[name] = Timing([timed(call, device) for _ in range(config.repeats)])
    return results


def measure_train_step(config: BenchConfig, variant: str) -> dict:
    """Forward + deep-supervision CE + backward + SGD step (nnU-Net's optimizer settings), model built inside."""
    device = config.prepare()
    memory = PeakMemory(device)
    with memory.measure():
        model = build_model(variant, config.patch).to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
        scaler = torch.amp.GradScaler(device.type, enabled=config.amp and config.amp_dtype == torch.float16)
        data = torch.randn(config.batch, 1, *config.patch, device=device)
        with torch.no_grad(), config.autocast():
            shapes = [o.shape for o in model(data)]
        targets = [torch.randint(0, NUM_CLASSES, (s[0], *s[2:]), device=device) for s in shapes]

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with config.autocast():
                loss = deep_supervision_loss(model(data), targets)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, 12)
            scaler.step(optimizer)
            scaler.update()

        for _ in range(config.warmup):
            timed(step, device)
        timing = Timing([timed(step, device) for _ in range(config.repeats)])
    return {
        "timing": timing,
        "peak_mib": memory.peak_mib,
        "memory_what": memory.what,
        "trainable_params": sum(p.numel() for p in trainable),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default 64^3 cpu, 128^3 cuda")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3 cpu, 20 cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 1 cpu, 5 cuda)")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="autocast fp16 on cuda / bf16 on cpu (default: on for cuda, off for cpu, as nnU-Net does)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--feature-bf16", action="store_true", help="time the feature extraction under bf16 autocast")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device) if args.device else default_device()
    on_gpu = device.type == "cuda"
    requested = tuple(args.patch) if args.patch else ((128,) * 3 if on_gpu else (64,) * 3)
    arch_kwargs, patch = plans_arch_kwargs(requested)
    config = BenchConfig(
        device=str(device),
        patch=patch,
        batch=args.batch,
        repeats=args.repeats or (20 if on_gpu else 3),
        warmup=args.warmup if args.warmup is not None else (5 if on_gpu else 1),
        amp=on_gpu if args.amp is None else args.amp,
        threads=args.threads,
        feature_bf16=args.feature_bf16,
    )

    if args.threads:
        torch.set_num_threads(args.threads)  # so the header reports what the measuring processes use
    print("== DropGen network benchmark ==")
    print(f"machine: {machine_description(device)}")
    amp = f"autocast {str(config.amp_dtype).removeprefix('torch.')}" if config.amp else "fp32 (no autocast)"
    print(
        f"device {device} | patch {'x'.join(map(str, patch))} (asked {'x'.join(map(str, requested))}) | "
        f"batch {config.batch} | {amp} | {config.repeats} timed repeats after {config.warmup} warm-up"
    )
    print(
        f"backbone: PlainConvUNet, {arch_kwargs['n_stages']} stages, features {arch_kwargs['features_per_stage']}, "
        "InstanceNorm(affine), LeakyReLU, deep supervision on (nnU-Net 3d_fullres defaults)"
    )

    giga_voxels = config.voxels_per_batch / 1e9  # seconds / giga_voxels = ns per voxel
    features = run_isolated(measure_features, config)
    nnunet = run_isolated(measure_train_step, config, "nnunet")
    dropgen = run_isolated(measure_train_step, config, "dropgen")

    with_cpu = not on_gpu
    print()
    print(f"anatomix feature extraction (no grad, eval), batch {config.batch} x {'x'.join(map(str, patch))}")
    header = f"  {'':<26}{'wall median':>12}{'wall min':>10}{'ns/voxel':>10}"
    print(header + (f"{'CPU median':>12}{'CPU ns/voxel':>14}" if with_cpu else ""))
    for name, label in (("extractor", "anatomix forward"), ("feature_path", "DropGen feature path")):
        timing = features[name]
        wall_min = min(sample.wall for sample in timing.samples)
        row = f"  {label:<26}{timing.wall:>10.3f} s{wall_min:>8.3f} s{timing.wall / giga_voxels:>10.1f}"
        print(row + (f"{timing.cpu:>10.3f} s{timing.cpu / giga_voxels:>14.1f}" if with_cpu else ""))
    print("  (feature path = scale to [0,1] + pad to a multiple of 16 + anatomix + crop + instance norm)")

    print()
    print("training step: forward + deep-supervision CE + backward + SGD step (optimizer, clip as nnU-Net)")
    header = f"  {'':<26}{'wall median':>12}{'wall min':>10}" + (f"{'CPU median':>12}" if with_cpu else "")
    print(header + f"{'peak memory':>13}{'trainable params':>18}")
    for label, result in (("nnU-Net (1 ch)", nnunet), ("DropGen (1+16 ch, p=0.75)", dropgen)):
        timing = result["timing"]
        row = f"  {label:<26}{timing.wall:>10.3f} s{min(sample.wall for sample in timing.samples):>8.3f} s"
        row += f"{timing.cpu:>10.3f} s" if with_cpu else ""
        print(row + f"{format_mib(result['peak_mib']):>13}{result['trainable_params']:>18,}")
    base, ours = nnunet["timing"], dropgen["timing"]
    row = f"  {'ratio DropGen/nnU-Net':<26}{format_ratio(ours.wall, base.wall):>12}"
    row += f"{format_ratio(min(s.wall for s in ours.samples), min(s.wall for s in base.samples)):>10}"
    row += f"{format_ratio(ours.cpu, base.cpu):>12}" if with_cpu else ""
    print(row + f"{format_ratio(dropgen['peak_mib'], nnunet['peak_mib']):>13}")
    print(f"  peak memory = {nnunet['memory_what']}")
    if with_cpu:
        print("  CPU = process CPU time (all threads); steadier than wall time when other jobs share the machine")
    if args.json:
        figures = {
            "machine": machine_description(device),
            "patch": list(patch),
            "batch": config.batch,
            "autocast": str(config.amp_dtype) if config.amp else None,
            "feature_autocast": "torch.bfloat16"
            if config.feature_bf16
            else (str(config.amp_dtype) if config.amp else None),
            "extractor_forward_ms": features["extractor"].wall * 1e3,
            "feature_path_ms": features["feature_path"].wall * 1e3,
            "train_step_s": {"nnunet": base.wall, "dropgen": ours.wall},
            "train_step_ratio": ours.wall / base.wall,
            "peak_mib": {"nnunet": nnunet["peak_mib"], "dropgen": dropgen["peak_mib"]},
            "peak_memory_ratio": (dropgen["peak_mib"] / nnunet["peak_mib"]) if nnunet["peak_mib"] else None,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
