"""The dense-matmul ceiling of this GPU, measured in the same run as the sweep (datasheet numbers
are leads, not ceilings): an 8192³ bf16 product on random data, median of repeats."""

from __future__ import annotations

import statistics

import torch


def matmul_tflops(dtype: torch.dtype = torch.bfloat16, n: int = 8192, repeats: int = 20) -> float | None:
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(times) / 1e12
