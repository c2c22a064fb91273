"""``pytest suites/perf``: a small sweep through pytest-benchmark (``--benchmark-json`` for its
JSON). On a CPU it times the HF reference and the TE-layout forward at a short length; TE points
skip with their reason. Full sweeps: ``gfqual bench --sweep gpu-baseline``."""

from __future__ import annotations

import pytest

from harness.backends import build_backend
from harness.capability import probe
from harness.perf.sweep import Point, layout_batches
from harness.precision import get_precision
from models.registry import get_variant

ON_GPU = probe().cuda
POINTS = [
    Point("V1-10M", backend, precision, "full", 2 if not ON_GPU else 8, 64 if not ON_GPU else 2048)
    for backend in ("hf-eager", "hf-sdpa", "te-format-torch", "te")
    for precision in (("fp32",) if not ON_GPU else ("bf16", "fp8-current"))
]


@pytest.mark.parametrize(
    "point",
    [pytest.param(p, marks=[pytest.mark.gpu] if p.backend == "te" else []) for p in POINTS],
    ids=[p.key for p in POINTS],
)
def test_forward_throughput(point, benchmark, hf_model):
    reason = probe().skip_reason(point.backend, point.precision)
    if reason:
        pytest.skip(reason)
    variant = get_variant(point.variant)
    backend = build_backend(point.backend, hf_model(variant), get_precision(point.precision))
    (batch,) = layout_batches(point, variant, seed=0)
    batch = batch.to(backend.device)

    def forward():
        backend.forward(batch)
        if ON_GPU:
            import torch

            torch.cuda.synchronize()

    benchmark.extra_info.update(point.__dict__)
    benchmark.pedantic(forward, warmup_rounds=1, rounds=3 if not ON_GPU else 10)
    assert benchmark.stats.stats.median > 0
