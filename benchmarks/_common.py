"""Helpers shared by the benchmark scripts: machine description, timing, peak memory, process isolation.

Every measured configuration runs in its own spawned process so that peak memory (CUDA allocator
high-water or process RSS high-water) is not polluted by whatever ran before it.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MIB = 1024**2


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_description(device: torch.device) -> str:
    """One line naming the hardware the numbers were taken on, so tables from different machines are not mixed."""
    cpu = f"CPU {cpu_model()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"GPU {props.name} ({props.total_memory / 1024**3:.0f} GiB), CUDA {torch.version.cuda}"
        return f"{gpu} | {cpu} | torch {torch.__version__}"
    return f"{cpu} | torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Sample:
    """One timed call: wall-clock seconds and this process's CPU seconds (all its threads)."""

    wall: float
    cpu: float


def timed(fn: Callable[[], Any], device: torch.device) -> Sample:
    """Time one call, with the device's queued work finished on both sides.

    CPU time is kept besides wall time because on a shared CPU machine other people's jobs stretch wall
    time unevenly between configurations, while the CPU time a process spends stays close to its own work
    (exactly so with one torch thread; with more, OpenMP spin-waiting is counted too).
    """
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass(frozen=True)
class Timing:
    """The timed calls of one measurement (warm-up excluded)."""

    samples: list[Sample]

    @property
    def wall(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        """Median process CPU time in seconds."""
        return statistics.median(s.cpu for s in self.samples)

    def describe(self, with_cpu: bool) -> str:
        text = f"{self.wall:.3f} s (min {min(s.wall for s in self.samples):.3f}, n={len(self.samples)})"
        return f"{text}, CPU {self.cpu:.3f} s" if with_cpu else text


def _proc_status_kib(field: str) -> int | None:
    """A `VmRSS` / `VmHWM` line of /proc/self/status in KiB, or None where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_high_water() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory over a block: CUDA allocator high-water on GPU, process RSS high-water growth on CPU.

    GPU: torch.cuda.max_memory_allocated() (absolute: weights, optimizer state and activations that are
    allocated inside the block or before it). CPU: VmHWM at the end minus VmRSS at the start, after
    resetting VmHWM through /proc/self/clear_refs, i.e. how much the process grew at its worst inside the
    block; `peak_mib` is None ("n/a") where that is not measurable.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib: float | None = None

    @property
    def what(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (absolute, fresh process)"
        return "CPU process RSS high-water (VmHWM) minus RSS before the block, fresh process"

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / MIB
            return
        start_kib = _proc_status_kib("VmRSS") if _reset_rss_high_water() else None
        yield self
        end_kib = _proc_status_kib("VmHWM")
        if start_kib is not None and end_kib is not None:
            self.peak_mib = (end_kib - start_kib) / 1024


def format_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def format_ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def _child(connection: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        connection.send(("ok", fn(*args)))
    except Exception:  # the parent re-raises it with the child's traceback
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a fresh spawned process and return its (picklable) result.

    A plain Process, not a Pool: nnU-Net's data augmentation starts worker processes of its own,
    which daemonic pool workers may not do.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, fn, args))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"benchmark process for {fn.__name__} died (exit code {process.exitcode})") from None
    process.join()
    if status == "error":
        raise RuntimeError(f"benchmark process for {fn.__name__} failed:\n{payload}")
    return payload
