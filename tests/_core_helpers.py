"""Shared helpers for the core tests (extractors, channel dropout, DropGenNetwork).

Imported as `from _core_helpers import ...` (tests/ has no __init__.py, so pytest puts it on sys.path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

ANATOMIX_FEATURES = 16
"""anatomix's feature channels, as its published layout has them (checked against its spec in the tests)."""

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "anatomix"

FIXTURES_MISSING = "../shared/fixtures/anatomix not found: the parity fixtures ship only beside the CI checkout"
requires_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=FIXTURES_MISSING)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


def tiny_backbone(
    in_channels: int,
    num_classes: int = 2,
    features: tuple[int, ...] = (4, 8),
    deep_supervision: bool = False,
) -> PlainConvUNet:
    """A very small nnU-Net-style 3D U-Net (InstanceNorm, so it holds no BatchNorm)."""
    n = len(features)
    return PlainConvUNet(
        input_channels=in_channels,
        n_stages=n,
        features_per_stage=list(features),
        conv_op=nn.Conv3d,
        kernel_sizes=3,
        strides=[1] + [2] * (n - 1),
        n_conv_per_stage=1,
        num_classes=num_classes,
        n_conv_per_stage_decoder=1,
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision,
    )


class RepeatExtractor(nn.Module):
    """Identity-like extractor: output channel k is the input raised to the power k+1.

    Checks, like a real extractor, that every spatial size is a multiple of `spatial_multiple` and at
    least `min_size`, and records every input it sees (for spying on what DropGenNetwork feeds it).
    """

    def __init__(self, out_channels: int, spatial_multiple: int = 16, min_size: int | None = None) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.spatial_multiple = spatial_multiple
        self.min_size = min_size or spatial_multiple
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5 and x.shape[1] == 1, f"extractor fed shape {tuple(x.shape)}"
        for size in x.shape[2:]:
            assert size % self.spatial_multiple == 0 and size >= self.min_size, f"bad size {tuple(x.shape)}"
        self.seen.append(x.detach().clone())
        return torch.cat([x ** (k + 1) for k in range(self.out_channels)], dim=1)


def repeat_spec(feature_channels: int, spatial_multiple: int = 16, min_size: int = 0, name: str = "test-repeat"):
    """An ExtractorSpec whose build gives a fresh RepeatExtractor (not registered: DropGenNetwork takes the spec)."""
    from nnunetv2_dropgen.feature_extractors import ExtractorSpec

    return ExtractorSpec(
        name=name,
        build=lambda: RepeatExtractor(feature_channels, spatial_multiple, min_size or spatial_multiple),
        feature_channels=feature_channels,
        spatial_multiple=spatial_multiple,
        min_spatial_size=min_size,
    )


def mini_anatomix_spec(name: str = "test-mini-anatomix", output_nc: int = 4):
    """An anatomix-architecture extractor (BatchNorm, stride 16, reflect padding) small enough for CPU tests."""
    from nnunetv2_dropgen.feature_extractors import AnatomixConfig, anatomix_spec

    return anatomix_spec(name, AnatomixConfig(output_nc=output_nc, num_downs=4, ngf=2))


def randomize_batchnorm_stats(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics (so moving them would be visible)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _train_steps(module: nn.Module, forward, all_reduce_grads: bool, seed: int, steps: int = 2) -> None:
    import torch.distributed as dist

    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        output = forward(torch.randn(1, 1, 32, 32, 32))
        outputs = output if isinstance(output, list | tuple) else [output]  # deep supervision: one per level
        sum(o.mean() for o in outputs).backward()
        if all_reduce_grads:  # what DDP does, for the SyncBatchNorm model DDP refuses on CPU
            for p in module.parameters():
                if p.requires_grad:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        optimizer.step()
        module.train()  # as nnU-Net does every epoch


def _snapshot(net: nn.Module) -> dict:
    return {
        "extractor": {k: v.clone() for k, v in net.extractor.state_dict().items()},
        "backbone": {k: v.clone() for k, v in net.backbone.state_dict().items()},
        "extractor_requires_grad": [p.requires_grad for p in net.extractor.parameters()],
        "extractor_training": [m.training for m in net.extractor.modules()],
        "net_training": net.training,
    }


def _network(trainer_name: str | None) -> nn.Module:
    """A tiny anatomix DropGen network, or what `trainer_name` builds from ResEnc plans (deep supervision on, as
    nnU-Net trains: every parameter gets a gradient, which DDP requires)."""
    from nnunetv2_dropgen.network import build_dropgen_network

    if trainer_name is None:
        return build_dropgen_network("anatomix", tiny_backbone(1 + ANATOMIX_FEATURES), p=0.5)
    from _plans import make_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunetv2_dropgen.trainers as trainers

    plans = PlansManager(make_plans(1, residual=True))
    return getattr(trainers, trainer_name).build_network_architecture(
        plans, plans.get_configuration("3d_fullres"), 1, 3, True
    )


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str, trainer_name: str | None = None) -> None:
    """One rank of the DDP test; saves before/after snapshots of two runs to out_dir/rank<r>.pt.

    "syncbn": SyncBatchNorm.convert_sync_batchnorm(net), train mode, 2 SGD steps in the process group
    with gradients all-reduced by hand (torch's DDP refuses SyncBatchNorm on CPU: "SyncBatchNorm
    layers only work with GPU modules"). A SyncBatchNorm left in training mode would raise on CPU.
    "ddp": DistributedDataParallel(net), train mode, 2 SGD steps.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    results: dict = {}
    try:
        for run in ("syncbn", "ddp"):
            torch.manual_seed(0)  # same network on every rank
            net = _network(trainer_name)
            randomize_batchnorm_stats(net.extractor)
            before = _snapshot(net)
            if run == "syncbn":
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
                n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in net.extractor.modules())
                net.train()
                _train_steps(net, net, all_reduce_grads=True, seed=100 + rank)
            else:
                ddp = DistributedDataParallel(net)
                ddp.train()
                n_sync = 0
                _train_steps(ddp, ddp, all_reduce_grads=False, seed=100 + rank)
            results[run] = {"n_sync": n_sync, "before": before, "after": _snapshot(net)}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small tensors: one torch thread is several times faster than two contending for a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
