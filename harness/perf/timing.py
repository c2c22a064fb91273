"""Timing a backend's forward pass on the GPU: warm-up, CUDA events, median and spread."""

from __future__ import annotations

import statistics
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

    def cells_per_s(self, cells: int) -> float:
        return cells / self.median_ms * 1e3


def time_forward(backend: Backend, batch: Batch, warmup: int = 3, repeats: int = 10) -> Timing:
    """Median of ``repeats`` forward passes after ``warmup`` (kernel selection, TE's JIT)."""
    if not torch.cuda.is_available():
        raise RuntimeError("timing needs a CUDA GPU; none is visible")
    batch = batch.to(backend.device)
    for _ in range(warmup):
        backend.forward(batch)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        backend.forward(batch)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return Timing(statistics.median(times), min(times), max(times), repeats)
