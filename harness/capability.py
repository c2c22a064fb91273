"""The one capability probe: what this machine can run, and why not when it cannot.

Engines and tests ask ``probe().skip_reason(backend, precision)``; a non-empty answer is the
sentence a report prints in place of a number ("skipped: MXFP8 needs compute capability 10.0
(Blackwell); this GPU is 9.0"). Nothing else in the suite inspects the hardware.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field

import torch

from harness.backend_names import backend_spec
from harness.precision import PRECISIONS, Precision
from harness.reasons import error_reason


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    gpu_name: str | None
    gpu_count: int
    compute_capability: tuple[int, int] | None
    te_version: str | None
    te_error: str | None  # why TE cannot be used, when it cannot
    te_support: dict = field(default_factory=dict)  # recipe family -> (ok, reason) from TE itself
    tf32_override: str | None = None
    gpu_memory_gib: float | None = None  # total memory of GPU 0: with its capability, what names the GPU

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def skip_reason(self, backend: str, precision: str | Precision) -> str | None:
        """None when ``backend`` can run ``precision`` here, else the reason it cannot."""
        p = PRECISIONS[precision] if isinstance(precision, str) else precision
        needs_te = backend_spec(backend).needs_te
        if needs_te:
            if not self.cuda:
                return "TransformerEngine needs a CUDA GPU; none is visible"
            if self.te_error:
                return f"TransformerEngine is not usable: {self.te_error}"
        elif p.recipe is not None:
            return f"{p.name} is a TransformerEngine recipe; {backend} has no FP8 path"
        if p.name == "tf32" and self.tf32_override == "0":
            return "tf32 needs NVIDIA_TF32_OVERRIDE=1 in the environment (gfqual defaults to strict fp32)"
        if p.min_compute_capability and needs_te:
            need = p.min_compute_capability
            if self.compute_capability < need:
                return (
                    f"{p.name} needs compute capability {need[0]}.{need[1]} ({p.hardware}); "
                    f"this GPU ({self.gpu_name}) is {self.compute_capability[0]}.{self.compute_capability[1]}"
                )
            ok, reason = self.te_support.get(p.recipe_family, (True, ""))
            if not ok:
                return f"{p.name}: TransformerEngine reports: {reason}"
        return None

    def describe(self) -> dict:
        return {
            "device": self.device,
            "gpu_name": self.gpu_name,
            "gpu_count": self.gpu_count,
            "compute_capability": ".".join(map(str, self.compute_capability)) if self.compute_capability else None,
            "gpu_memory_gib": self.gpu_memory_gib,
            "te_version": self.te_version,
            "te_error": self.te_error,
            "NVIDIA_TF32_OVERRIDE": self.tf32_override,
        }


def _te_status() -> tuple[str | None, str | None, dict]:
    # TE's package __init__ also tries its JAX extension wherever jax is installed (0.6 s of
    # gfqual embed's start-up on the H200 machine, results/h200/profiles/importtime-*): the suite
    # runs TE's PyTorch side only, so that import is refused.
    sys.modules.setdefault("transformer_engine.jax", None)  # type: ignore[arg-type]
    try:
        import transformer_engine
        import transformer_engine.pytorch as te
    except Exception as exc:  # ImportError, or TE's own error when its CUDA libraries are missing
        return None, error_reason(exc), {}
    support = {
        "fp8": te.is_fp8_available(return_reason=True),
        "fp8_block": te.is_fp8_block_scaling_available(return_reason=True),
        "mxfp8": te.is_mxfp8_available(return_reason=True),
    }
    return transformer_engine.__version__, None, support


@functools.cache
def probe() -> Capabilities:
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    cc = torch.cuda.get_device_capability(0) if cuda else None
    if cuda:
        te_version, te_error, support = _te_status()
    else:
        te_version, te_error, support = None, "no CUDA GPU", {}
    return Capabilities(
        cuda=cuda,
        gpu_name=name,
        gpu_count=torch.cuda.device_count() if cuda else 0,
        compute_capability=tuple(cc) if cc else None,
        te_version=te_version,
        te_error=te_error,
        te_support=support,
        tf32_override=os.environ.get("NVIDIA_TF32_OVERRIDE"),
        gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
    )
