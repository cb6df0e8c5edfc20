"""The pretraining loop: compose label maps, render two views, minimise the contrastive loss, save, report.

AdamW (anatomix: lr 2e-4, betas 0.9/0.999, weight decay 1e-5), the learning rate kept and then decayed
linearly over the last `lr_decay_fraction` of the steps (anatomix: constant, then linear decay over its
last epochs), autocast (bf16 on CUDA where supported, else fp16 with a gradient scaler; bf16 with
channels-last 3D tensors on CPUs with native bf16, 2.2x faster per step at 64^3 on this project's CPU),
a tqdm bar with the loss and the latest stability metrics, atomic checkpoints every `checkpoint_every`
steps and at the end, the best weights by the held-out stability metric kept beside the output,
`resume` to continue a run, and Ctrl-C (KeyboardInterrupt) or SIGTERM (`kill`, a cluster's time limit)
saving a checkpoint and the weights before returning. Under torchrun every rank trains on its own data
stream inside DistributedDataParallel; only rank 0 writes files and reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nnunetv2_dropgen.feature_extractors import ExtractorSpec
from nnunetv2_dropgen.pretraining.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from nnunetv2_dropgen.pretraining.composition import CompositionSettings, compose_label_maps
from nnunetv2_dropgen.pretraining.distributed import DistributedContext
from nnunetv2_dropgen.pretraining.heads import HEAD_WIDTH
from nnunetv2_dropgen.pretraining.loss import SAMPLES_PER_LEVEL, TEMPERATURE
from nnunetv2_dropgen.pretraining.objective import ContrastiveObjective, level_channels
from nnunetv2_dropgen.pretraining.pool import StructurePool
from nnunetv2_dropgen.pretraining.progress import progress_path, write_progress
from nnunetv2_dropgen.pretraining.references import initialise_extractor, random_extractor
from nnunetv2_dropgen.pretraining.stability import (
    StabilityBenchmark,
    StabilityMetrics,
    StabilitySettings,
    measure_stability,
)
from nnunetv2_dropgen.pretraining.views import AppearanceSettings, render_views
from nnunetv2_dropgen.weights import save_pretrained

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

SELECTION_METRIC = "probe_dice_other"
"""What picks the best weights: the Dice a linear probe fitted on one appearance of a held-out map keeps on
the others (what a segmentation head trained on one domain keeps on another), on structures of kinds the
synthetic pretraining pool never holds."""

CHANNELS_LAST_MIN_SIDE = 48
"""On the CPU with bf16, channels-last 3D tensors make a step faster from 48^3 patches on (1.3x at 48^3,
1.4x at 64^3 on this project's CPU) and slower below, where layout conversions outweigh the convolutions."""

_MUST_MATCH_ON_RESUME = (
    "architecture",
    "patch_size",
    "batch_size",
    "seed",
    "lr",
    "weight_decay",
    "samples_per_level",
    "temperature",
    "head_width",
)


class PretrainingError(ValueError):
    """Settings that cannot work; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class PretrainSettings:
    """One pretraining run. `steps` is the total, also when resuming; 0 disables `evaluate_every`."""

    architecture: str
    out: Path
    steps: int
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    lr: float = 2e-4
    weight_decay: float = 1e-5
    seed: int = 0
    samples_per_level: int = SAMPLES_PER_LEVEL
    temperature: float = TEMPERATURE
    head_width: int = HEAD_WIDTH
    evaluate_every: int = 0
    checkpoint_every: int = 50
    lr_decay_fraction: float = 0.2
    device: str = "cpu"
    precision: str = "auto"
    init: str | None = None
    resume: bool = False
    composition: CompositionSettings = field(default_factory=CompositionSettings)
    appearance: AppearanceSettings = field(default_factory=AppearanceSettings)
    stability: StabilitySettings = field(default_factory=StabilitySettings)

    def recorded(self) -> dict[str, Any]:
        """The settings as plain JSON values (for the checkpoint and the record)."""
        document = dataclasses.asdict(self)
        document["out"] = str(self.out)
        document["patch_size"] = list(self.patch_size)
        return document


@dataclass
class PretrainResult:
    """What a run did; `state_dict` (every rank) is the extractor's final weights, on the CPU.

    losses: this rank's training loss at each step this call ran (not those before a resume).
    """

    step: int
    interrupted: bool
    state_dict: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    metrics: StabilityMetrics | None = None
    sha256: str | None = None
    checkpoint: Path | None = None


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: float32 throughout).

    auto: bf16 on CUDA where supported, else fp16; bf16 on a CPU with native bf16, else float32.
    """
    if precision not in PRECISIONS:
        raise PretrainingError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise PretrainingError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU.")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def memory_format(
    device: torch.device, amp_dtype: torch.dtype | None, patch_size: tuple[int, ...]
) -> torch.memory_format:
    """channels-last 3D where it was measured faster (CPU, bf16, patches of CHANNELS_LAST_MIN_SIDE or more)."""
    if device.type == "cpu" and amp_dtype == torch.bfloat16 and min(patch_size) >= CHANNELS_LAST_MIN_SIDE:
        return torch.channels_last_3d
    return torch.contiguous_format


def learning_rate_factor(step: int, steps: int, decay_fraction: float) -> float:
    """1 until the last `decay_fraction` of `steps`, then linearly down towards 0 (anatomix's const_linear).

    Computed from the step alone, so a resumed run continues the same schedule.
    """
    decay_steps = round(steps * decay_fraction)
    decay_start = steps - decay_steps
    if step < decay_start:
        return 1.0
    return 1.0 - (step - decay_start + 1) / (decay_steps + 1)


def held_out_settings(spec: ExtractorSpec, stability: StabilitySettings) -> StabilitySettings:
    """`stability` with its patch enlarged to the smallest size `spec` accepts, when it is smaller."""
    multiple = spec.spatial_multiple
    side = max(stability.patch_size, spec.min_spatial_size)
    return dataclasses.replace(stability, patch_size=-(-side // multiple) * multiple)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one rank's data at one step: independent streams, reproducible after a resume."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def validate_patch_size(spec: ExtractorSpec, patch_size: tuple[int, ...]) -> None:
    """A clear error when the patch does not fit the architecture's spatial multiple or minimum size."""
    if len(patch_size) != 3:
        raise PretrainingError(f"the patch size needs 1 or 3 values (Z Y X); got {list(patch_size)}.")
    bad = [s for s in patch_size if s % spec.spatial_multiple or s < spec.min_spatial_size]
    if bad:
        raise PretrainingError(
            f"patch size {list(patch_size)} does not fit {spec.name!r}: every side must be a multiple of "
            f"{spec.spatial_multiple} and at least {spec.min_spatial_size}; e.g. --patch-size "
            f"{max(spec.min_spatial_size, 64 // spec.spatial_multiple * spec.spatial_multiple)}."
        )


def check_settings(settings: PretrainSettings, spec: ExtractorSpec) -> None:
    """Refuse settings that cannot work, before any data is read or anything is written."""
    counts = {
        "--steps": settings.steps,
        "--batch-size": settings.batch_size,
        "--checkpoint-every": settings.checkpoint_every,
    }
    for option, value in counts.items():
        if value < 1:
            raise PretrainingError(f"{option} must be at least 1; got {value}.")
    if not 0 <= settings.lr_decay_fraction <= 1:
        raise PretrainingError(f"--lr-decay must be a share of the steps, 0 to 1; got {settings.lr_decay_fraction}.")
    if settings.evaluate_every < 0:
        raise PretrainingError(f"--evaluate-every must be 0 (at the end only) or more; got {settings.evaluate_every}.")
    validate_patch_size(spec, settings.patch_size)
    autocast_dtype(settings.precision, torch.device(settings.device))
    if not settings.out.parent.is_dir():
        raise PretrainingError(f"the folder of --out {settings.out} does not exist; create it first.")
    if settings.out.suffix == ".json":
        raise PretrainingError(
            f"--out {settings.out} ends in .json, the suffix of the record written beside it; "
            f"name the weights e.g. {settings.out.with_suffix('.pth').name}."
        )
    if not settings.resume and settings.out.exists():
        checkpoint = checkpoint_path(settings.out)
        resume = (
            f"pass --resume to continue that run (its checkpoint {checkpoint.name} is beside it), or "
            if checkpoint.exists()
            else ""
        )
        raise PretrainingError(
            f"--out {settings.out} exists (the weights of an earlier run); {resume}choose another --out, or delete "
            "it to start over: a new run would replace those weights and their record."
        )


def _check_resumable(
    state: dict[str, Any], settings: PretrainSettings, path: Path, run: dict[str, Any] | None = None
) -> None:
    """Refuse a resume whose settings, training data (`run`: the pool's sources and size) or process count
    differ from the checkpoint's: the weights and their record would describe a run that never happened.
    `init` is compared only when given again (the documented resume repeats the command, --init included);
    `run` only where the checkpoint records it (checkpoints from before 2026-12-07 do not)."""
    recorded = state.get("settings", {})
    current = settings.recorded()
    differ = [
        f"{key} {recorded.get(key)!r} -> {current[key]!r}"
        for key in _MUST_MATCH_ON_RESUME
        if recorded.get(key) != current[key]
    ]
    if "init" in recorded and settings.init is not None and recorded["init"] != current["init"]:
        differ.append(f"init {recorded['init']!r} -> {current['init']!r}")
    if "lr_decay_fraction" in recorded and recorded["lr_decay_fraction"] != current["lr_decay_fraction"]:
        differ.append(f"lr_decay_fraction {recorded['lr_decay_fraction']!r} -> {current['lr_decay_fraction']!r}")
    for key, value in (run or {}).items():
        if key in state.get("run", {}) and state["run"][key] != value:
            differ.append(f"{key} {state['run'][key]!r} -> {value!r}")
    if differ:
        raise CheckpointError(
            f"the checkpoint {path} was written with other settings ({'; '.join(differ)}); resume with the "
            "same settings, or give another --out to start a new run."
        )
    if settings.steps < int(state["step"]):
        raise CheckpointError(
            f"the checkpoint {path} is at step {state['step']}, beyond --steps {settings.steps}: a run cannot be "
            f"resumed to fewer steps than it has trained. Give --steps {state['step']} or more (its weights at "
            f"step {state['step']} are in --out already)."
        )


def warm_restart_warning(state: dict[str, Any], settings: PretrainSettings) -> str | None:
    """A resume with more --steps after the learning rate began to decay restarts it from its full value: say so.

    The schedule is a function of --steps, so a longer run moves the decay to its new end; a checkpoint still at
    the full rate continues seamlessly, one already decaying jumps back up (a warm restart, not a continuation).
    """
    recorded = state.get("settings", {})
    step, steps = int(state["step"]), recorded.get("steps")
    if not steps or settings.steps <= steps:
        return None
    before = learning_rate_factor(min(step, steps) - 1, steps, settings.lr_decay_fraction) if step else 1.0
    after = learning_rate_factor(step, settings.steps, settings.lr_decay_fraction)
    if before >= 1.0 or after <= before:
        return None
    return (
        f"warning: the checkpoint's learning rate had decayed to {before:.3f} x --lr at step {step} (of --steps "
        f"{steps}); with --steps {settings.steps} it goes back to {after:.3f} x --lr, a warm restart rather than "
        "a continuation. To only extend the decay, resume from a checkpoint saved before it began, or accept the "
        "restart (the best weights so far stay in the .best.pth file)."
    )


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Run:
    """The state of one rank's run; rank 0 also holds the held-out benchmark and writes files."""

    def __init__(
        self,
        settings: PretrainSettings,
        spec: ExtractorSpec,
        pool: StructurePool,
        evaluation_pool: StructurePool,
        context: DistributedContext,
    ) -> None:
        self.settings, self.spec, self.context = settings, spec, context
        device = context.device
        self.amp_dtype = autocast_dtype(settings.precision, device)
        self.memory_format = memory_format(device, self.amp_dtype, settings.patch_size)
        self.pool = pool.to(device)
        self.checkpoint = checkpoint_path(settings.out)
        torch.manual_seed(settings.seed)  # the same initial extractor and heads on every rank
        extractor = spec.build().to(device)
        self.init_description = f"random initialisation (torch seed {settings.seed})"
        if settings.init and not settings.resume and context.is_main:  # DDP copies rank 0's weights to the others
            self.init_description = initialise_extractor(extractor, settings.init, spec.name)
        self.objective = ContrastiveObjective(
            extractor,
            level_channels(extractor, spec.min_spatial_size),
            settings.head_width,
            settings.samples_per_level,
            settings.temperature,
        ).to(device, memory_format=self.memory_format)
        self.optimizer = torch.optim.AdamW(
            self.objective.parameters(), lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step, self.seconds, self.history, self.started = 0, 0.0, [], _now()
        self.best: dict[str, float] | None = None  # the held-out metrics and step of the best weights so far
        if settings.resume:
            self._restore()
        elif self.checkpoint.exists():
            raise CheckpointError(
                f"a checkpoint of an earlier run exists at {self.checkpoint}; pass --resume to continue it, or "
                "delete it (or choose another --out) to start over."
            )
        trained: nn.Module = self.objective
        if context.distributed:
            if device.type == "cuda":
                # BatchNorm statistics across all GPUs; torch's DDP refuses SyncBatchNorm on CPU, so gloo runs
                # keep per-rank BatchNorm statistics (rank 0's buffers are broadcast at every forward).
                trained = nn.SyncBatchNorm.convert_sync_batchnorm(trained)
            trained = DistributedDataParallel(trained, device_ids=[device] if device.type == "cuda" else None)
        self.trained = trained
        self.benchmark = (
            # rendered with the default appearance model whatever this run trains with, so that runs compare
            StabilityBenchmark.build(
                evaluation_pool.to(device), settings.seed, held_out_settings(spec, settings.stability)
            )
            if context.is_main
            else None
        )
        self.generator = torch.Generator(device=device)

    def _restore(self) -> None:
        state = load_checkpoint(self.checkpoint)
        _check_resumable(state, self.settings, self.checkpoint, self.run_facts())
        if self.context.is_main and (warning := warm_restart_warning(state, self.settings)):
            print(warning, file=sys.stderr)
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.history, self.started = list(state["history"]), str(state["started"])
        self.init_description = str(state["init"])
        self.best = state.get("best")

    def run_facts(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint besides its settings: data and process count."""
        sources = list(self.pool.sources)
        return {"data_sources": sources, "structures": len(self.pool), "world_size": self.context.world_size}

    def save_checkpoint(self) -> None:
        save_checkpoint(
            self.checkpoint,
            {
                "step": self.step,
                "run": self.run_facts(),
                "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "data": "per-step generator seeded with (seed, rank, step)"},
                "settings": self.settings.recorded(),
                "seconds": self.seconds,
                "history": self.history,
                "started": self.started,
                "init": self.init_description,
                "best": self.best,
            },
        )

    def synchronise_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (DDP only does so at the start of each forward)."""
        for buffer in self.objective.buffers():
            torch.distributed.broadcast(buffer, src=0)

    def train_step(self) -> float:
        settings = self.settings
        self.generator.manual_seed(step_seed(settings.seed, self.context.rank, self.step))
        with torch.no_grad():
            labels = compose_label_maps(
                self.pool, settings.batch_size, settings.patch_size, self.generator, settings.composition
            )
            views = render_views(labels, self.generator, settings.appearance).flatten(0, 1)
            inputs = self.spec.preprocessing(views).contiguous(memory_format=self.memory_format)
        factor = learning_rate_factor(self.step, settings.steps, settings.lr_decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = settings.lr * factor
        with torch.autocast(self.context.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.trained(inputs, labels, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return float(loss.detach())

    def measure(self, extractor: nn.Module | None = None) -> StabilityMetrics:
        """Stability of `extractor` (default: the one being trained) on the held-out benchmark (rank 0 only)."""
        assert self.benchmark is not None, "only rank 0 measures"
        module = self.objective.extractor if extractor is None else extractor
        return measure_stability(module, self.benchmark, self.spec.preprocessing, self.spec.normalization)

    def keep_if_best(self, metrics: StabilityMetrics, command: str, pool: StructurePool) -> bool:
        """Write the current weights as the best ones when `metrics` beat every earlier evaluation (rank 0)."""
        score = metrics.as_dict()[SELECTION_METRIC]
        if self.best is not None and score <= self.best[SELECTION_METRIC]:
            return False
        self.best = {"step": self.step, **metrics.as_dict()}
        record = _record(self, pool, command, metrics, None, interrupted=False)
        save_pretrained(_plain_state(self.objective.extractor), best_path(self.settings.out), record)
        return True

    def write_progress(self, final: StabilityMetrics | None = None, reference: StabilityMetrics | None = None) -> None:
        """Redraw the curve beside the weights (rank 0): the history, the `final` measurement when the last
        evaluation was at another step, the random-weights `reference` once measured."""
        history = list(self.history)
        if final is not None and (not history or history[-1]["step"] != self.step):
            history.append({"step": self.step, **final.as_dict()})
        if not history:
            return
        title = f"{self.settings.out.name} ({self.settings.architecture}): stability on the held-out maps"
        write_progress(
            progress_path(self.settings.out), history, self.best, reference.as_dict() if reference else None, title
        )


def best_path(out: Path) -> Path:
    """Where the best weights by the held-out metric go: `model.pth` -> `model.best.pth` (with its record)."""
    return out.with_name(f"{out.stem}.best{out.suffix or '.pth'}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run as Ctrl-C does (checkpoint and weights written); in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pretrain(
    settings: PretrainSettings,
    spec: ExtractorSpec,
    pool: StructurePool,
    evaluation_pool: StructurePool,
    command: str | None = None,
) -> PretrainResult:
    """Pretrain `spec`'s architecture on label maps composed from `pool`; rank 0 writes the weights and record.

    The held-out stability benchmark is built from `evaluation_pool` with a seed stream of its own.
    """
    check_settings(settings, spec)
    context = DistributedContext.start(settings.device)
    try:
        run = _Run(settings, spec, pool, evaluation_pool, context)
        with _terminate_as_interrupt():
            return _train(run, pool, command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    finally:
        context.close()


def _train(run: _Run, pool: StructurePool, command: str) -> PretrainResult:
    settings, context = run.settings, run.context
    if context.is_main:
        parameters = sum(p.numel() for p in run.objective.extractor.parameters())
        print(
            f"pretraining {settings.architecture} ({parameters / 1e6:.2f}M parameters) on {len(pool)} structures "
            f"from {'; '.join(pool.sources)}; patch {list(settings.patch_size)}, "
            f"batch {settings.batch_size} x 2 views, "
            f"{context.world_size} process(es) on {context.device}, autocast {run.amp_dtype or 'off'}; "
            f"{run.init_description}" + (f"; resuming at step {run.step}" if run.step else "")
        )
    interrupted, losses = _steps(run, pool, command)
    if context.distributed and not interrupted:
        run.synchronise_buffers()
    result = PretrainResult(run.step, interrupted, _plain_state(run.objective.extractor), losses)
    if context.is_main:
        _write_outputs(run, result, pool, command)
    return result


def _steps(run: _Run, pool: StructurePool, command: str) -> tuple[bool, list[float]]:
    """Train until `steps`; returns whether Ctrl-C stopped it, and the losses."""
    settings, context = run.settings, run.context
    bar = tqdm(total=settings.steps, initial=run.step, desc="pretrain", unit="step", disable=not context.is_main)
    average, losses = None, []
    try:
        while run.step < settings.steps:
            started = time.perf_counter()
            loss = run.train_step()
            run.seconds += time.perf_counter() - started
            losses.append(loss)
            average = loss if average is None else 0.9 * average + 0.1 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{average:.3f}", **_postfix(run.history))
            if context.is_main and settings.evaluate_every and run.step % settings.evaluate_every == 0:
                metrics = run.measure()
                run.history.append({"step": run.step, **metrics.as_dict()})
                bar.set_postfix(loss=f"{average:.3f}", **_postfix(run.history))
                best = run.keep_if_best(metrics, command, pool)
                bar.write(f"step {run.step}: {metrics.describe()}" + (" (best so far, kept)" if best else ""))
                run.write_progress()
            if context.is_main and run.step % settings.checkpoint_every == 0 and run.step < settings.steps:
                run.save_checkpoint()
    except KeyboardInterrupt:
        return True, losses
    finally:
        bar.close()
    return False, losses


def _write_outputs(run: _Run, result: PretrainResult, pool: StructurePool, command: str) -> None:
    """Rank 0: checkpoint, final stability (skipped by Ctrl-C), then the weights and their record."""
    settings = run.settings
    run.save_checkpoint()
    result.checkpoint = run.checkpoint
    reference = None
    if not result.interrupted:
        try:
            result.metrics = run.measure()
            reference = run.measure(random_extractor(run.spec, settings.seed).to(run.context.device))
            print(f"stability after {run.step} steps: {result.metrics.describe()}")
            print(f"reference, random weights: {reference.describe()}")
            run.keep_if_best(result.metrics, command, pool)
            run.write_progress(result.metrics, reference)
        except KeyboardInterrupt:
            result.interrupted, result.metrics = True, None
            print("final stability metrics skipped (Ctrl-C); writing the weights")
    record = _record(run, pool, command, result.metrics, reference, result.interrupted)
    result.sha256 = save_pretrained(result.state_dict, settings.out, record)
    state = "interrupted at" if result.interrupted else "after"
    print(
        f"wrote {settings.out} ({state} {run.step} steps, sha256 {result.sha256[:12]}...) and its record; "
        f"checkpoint {run.checkpoint} (continue with --resume and a larger --steps)"
    )


def _record(
    run: _Run,
    pool: StructurePool,
    command: str,
    metrics: StabilityMetrics | None,
    reference: StabilityMetrics | None,
    interrupted: bool,
) -> dict[str, Any]:
    """The JSON record written beside a weights file: what made it, how long, how stable it is."""
    settings = run.settings
    return {
        "architecture": settings.architecture,
        "data": {"sources": list(pool.sources), "structures": len(pool)},
        "steps": run.step,
        "interrupted": interrupted,
        "seed": settings.seed,
        "init": run.init_description,
        "settings": settings.recorded(),
        "world_size": run.context.world_size,
        "device": str(run.context.device),
        "precision": str(run.amp_dtype or "float32"),
        "torch": torch.__version__,
        "metrics": {
            "trained": metrics.as_dict() if metrics else None,
            "random_weights": reference.as_dict() if reference else None,
            "held_out": run.benchmark.description if run.benchmark is not None else None,
            "selection": SELECTION_METRIC,
            "best": run.best,
            "history": run.history,
        },
        "time": {"started": run.started, "finished": _now(), "training_seconds": round(run.seconds, 1)},
        "command": command,
    }


def _postfix(history: list[dict[str, Any]]) -> dict[str, str]:
    if not history:
        return {}
    return {"gap": f"{history[-1]['gap']:.3f}", "probe": f"{history[-1]['probe_dice_other']:.3f}"}
