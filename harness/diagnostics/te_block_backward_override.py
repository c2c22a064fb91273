"""Minimal reproduction: TE's Float8BlockScaling with ``backward_override`` (TE 2.20's recipe field:
"high_precision" keeps the unquantized operands for the backward, "dequantized" dequantizes the
saved FP8 ones) on one ``te.Linear``, forward and backward under bf16 autocast, as the suite
trains. Seen in harness/diagnostics/fp8_block_divergence.py's ablation on an H200 (TE 2.20.2):
"high_precision" failed every step with cuBLAS "Unable to find suitable cuBLAS GEMM algorithm".

Exit 0 when every override trains (the day TE fixes it), 1 when one fails (each named), 3 with no
CUDA GPU. Run from the repository root: ``python -m harness.diagnostics.te_block_backward_override``.
"""

from __future__ import annotations

import sys

import torch

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # V2-104M's attention output, fc1 and fc2
TOKENS = 1024


def try_override(override: str | None) -> str:
    """ "" when a forward and backward through each shape run, else the first error."""
    import transformer_engine.pytorch as te
    from transformer_engine.common import recipe

    for n_in, n_out in SHAPES:
        layer = te.Linear(n_in, n_out, params_dtype=torch.float32).cuda()
        x = torch.randn(TOKENS, n_in, device="cuda", requires_grad=True)
        try:
            with (
                torch.autocast("cuda", dtype=torch.bfloat16),
                te.autocast(enabled=True, recipe=recipe.Float8BlockScaling(backward_override=override)),
            ):
                y = layer(x)
            y.float().pow(2).mean().backward()
            torch.cuda.synchronize()
        except Exception as exc:
            return f"{n_in}x{n_out}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return ""


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU (Hopper or newer for Float8BlockScaling)", file=sys.stderr)
        return 3
    import transformer_engine

    print(f"TE {transformer_engine.__version__} on {torch.cuda.get_device_name()}")
    failed = 0
    for override in (None, "dequantized", "high_precision"):
        error = try_override(override)
        print(f"Float8BlockScaling(backward_override={override!r}): {'FAILS: ' + error if error else 'trains'}")
        failed += bool(error)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
