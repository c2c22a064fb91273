"""The attention-kernel check judges like a parity stage and refuses a kernel that is not
deterministic. TE is replaced by stand-in kernels here, so the judging runs on the CPU; the real
kernel runs on the GPU (suites/parity/test_attention_kernel.py)."""

from __future__ import annotations

import pytest
import torch

from harness.parity import attention_kernel
from models.registry import get_variant


class _AnyMachine:
    device = "cpu"

    def skip_reason(self, backend, precision):
        return None


def _sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def _noisy(scale):
    calls = iter(range(100))

    def kernel(precision, q, k, v):
        out = _sdpa(q, k, v).float()
        noise = [
            torch.randn(out.shape, generator=torch.Generator().manual_seed(next(calls) if scale < 0 else 0))
            for _ in range(2)
        ]
        return tuple(out + abs(scale) * out.std() * n for n in noise)

    return kernel


@pytest.mark.parametrize(
    ("kernel", "precision", "status", "says"),
    [
        (_noisy(0.0), "bf16", "pass", ""),  # the peer itself: error equal to the peer's
        (_noisy(0.05), "fp8-delayed-dpa", "pass", ""),  # FP8-sized error, the same both times
        (_noisy(0.5), "fp8-delayed-dpa", "fail", "rel_l2="),  # a wrong result
        (_noisy(-0.05), "fp8-delayed-dpa", "fail", "not deterministic"),  # small error, different each call
    ],
)
def test_kernel_check_judges_error_and_determinism(monkeypatch, kernel, precision, status, says):
    monkeypatch.setattr(attention_kernel, "probe", _AnyMachine)
    monkeypatch.setattr(attention_kernel, "_te_attention", kernel)
    record = attention_kernel.check_attention_kernel(get_variant("V1-10M"), precision, seq_len=64)
    assert record["status"] == status, record
    assert says in record["violations"]
    assert record["peer_rel_l2"] > 0 and record["heads"] * record["head_dim"] == 256


def test_kernel_check_without_a_gpu_is_skipped_with_the_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the kernel runs for real in suites/parity")
    record = attention_kernel.check_attention_kernel(get_variant("V2-104M"), "fp8-delayed-dpa", seq_len=64)
    assert record["status"] == "skipped" and "CUDA GPU" in record["reason"]
    assert "SKIPPED TransformerEngine needs a CUDA GPU" in attention_kernel.format_kernel_record(record)
