"""Timing a backend's forward passes: warm-up, then repeats timed with CUDA events on a GPU (the
host clock after a synchronise would add launch latency) or the host clock on a CPU; median and
spread."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from harness.backends import Backend
from harness.data.batching import Batch


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @property
    def spread(self) -> float:
        """(max − min) / median: the noise a regression gate must see past."""
        return (self.max_ms - self.min_ms) / self.median_ms

    def per_s(self, amount: float) -> float:
        return amount / self.median_ms * 1e3


def warm(backend: Backend, batches: Batch | list[Batch], passes: int, step=None) -> list[Batch]:
    """The batches on the backend's device, after ``passes`` untimed runs of ``step`` (default:
    the backend's full forward to MLM logits)."""
    step = step or backend.forward
    batches = [b.to(backend.device) for b in (batches if isinstance(batches, list) else [batches])]
    for _ in range(passes):
        for b in batches:
            step(b)
    if backend.device.startswith("cuda"):
        torch.cuda.synchronize()
    return batches


def time_batches(backend: Backend, batches: Batch | list[Batch], repeats: int, step=None) -> Timing:
    """``repeats`` timed passes of ``step`` (default: the full forward) over ``batches`` (already warm)."""
    step = step or backend.forward
    batches = warm(backend, batches, 0)
    cuda = backend.device.startswith("cuda")
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for b in batches:
                step(b)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            for b in batches:
                step(b)
            times.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(times), min(times), max(times), repeats)
