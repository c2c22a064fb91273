"""Precisions and FP8 recipes as data, and the one place that turns a name into a context.

A precision says which dtype the weights and activations have, whether fp32 matrix products may
use TF32, and which TransformerEngine recipe (if any) quantises the encoder GEMMs. The MLM head is
plain PyTorch in every model, so it stays out of FP8.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from models.errors import UsageError


@dataclass(frozen=True)
class Precision:
    name: str
    dtype_name: str  # a torch dtype's name: the table is read without importing torch (CLI start-up)
    tf32: bool = False
    recipe: str | None = None  # TE recipe class name
    recipe_family: str | None = None  # key of TE's own availability check
    fp8_attention: bool = False  # the recipe's fp8_dpa: attention (QK^T, softmax·V) in FP8 too
    min_compute_capability: tuple[int, int] | None = None
    hardware: str = ""
    description: str = ""

    @property
    def dtype(self):
        """The torch dtype of weights and activations."""
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def is_fp8(self) -> bool:
        return self.recipe is not None

    @property
    def mixed(self) -> bool:
        """Trained in mixed precision: fp32 master weights, products at ``dtype`` under autocast
        (HF Trainer's ``bf16=True``; TE's recipes keep fp32 weights under FP8 as well)."""
        return self.dtype_name not in ("float32", "float64")

    @property
    def token_multiple(self) -> int:
        """Token counts a batch must be rounded up to: FP8 GEMMs need dimensions divisible by 16."""
        return FP8_TOKEN_MULTIPLE if self.is_fp8 else 1

    @property
    def peer(self) -> str:
        """The HF precision a candidate at this precision is judged against: its own, or bf16 for
        FP8 (HF has no FP8 path)."""
        return "bf16" if self.is_fp8 else self.name

    @property
    def unit_roundoff(self) -> float:
        """The relative rounding of this precision's coarsest products: a difference smaller than
        it times a quantity's scale is rounding, not an error (backward parity judges gradients
        that are zero in exact arithmetic by it)."""
        if self.is_fp8:
            return FP8_UNIT_ROUNDOFF
        return TF32_UNIT_ROUNDOFF if self.tf32 else UNIT_ROUNDOFF[self.dtype_name]

    @property
    def experimental(self) -> bool:
        """TE marks FP8 attention (fp8_dpa) a beta feature: its verdicts are reported, never gating."""
        return self.fp8_attention


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            "fp64", "float64", description="reference only: HF in float64 (forward parity on the CPU, training parity)"
        ),
        Precision("fp32", "float32", description="IEEE fp32, TF32 off everywhere"),
        Precision("tf32", "float32", tf32=True, description="fp32 storage, TF32 matrix products"),
        Precision("bf16", "bfloat16", description="bf16 weights and activations"),
        Precision(
            "fp8-delayed",
            "bfloat16",
            recipe="DelayedScaling",
            recipe_family="fp8",
            min_compute_capability=(8, 9),
            hardware="Ada or Hopper",
            description="E4M3/E5M2 (HYBRID), per-tensor scales from the amax history of a calibration pass",
        ),
        Precision(
            "fp8-current",
            "bfloat16",
            recipe="Float8CurrentScaling",
            recipe_family="fp8",
            min_compute_capability=(8, 9),
            hardware="Ada or Hopper",
            description="per-tensor scales from the current tensor's amax",
        ),
        Precision(
            "fp8-delayed-dpa",
            "bfloat16",
            recipe="DelayedScaling",
            recipe_family="fp8",
            fp8_attention=True,
            min_compute_capability=(9, 0),
            hardware="Hopper",
            description="fp8-delayed, with attention in FP8 as well (TE's fp8_dpa, cuDNN FP8 attention)",
        ),
        Precision(
            "fp8-current-dpa",
            "bfloat16",
            recipe="Float8CurrentScaling",
            recipe_family="fp8",
            fp8_attention=True,
            min_compute_capability=(9, 0),
            hardware="Hopper",
            description="fp8-current, with attention in FP8 as well (TE's fp8_dpa; S and dP take delayed scales)",
        ),
        Precision(
            "fp8-block",
            "bfloat16",
            recipe="Float8BlockScaling",
            recipe_family="fp8_block",
            min_compute_capability=(9, 0),
            hardware="Hopper",
            description="1x128 / 128x128 block scales (DeepSeek-V3 style)",
        ),
        Precision(
            "mxfp8",
            "bfloat16",
            recipe="MXFP8BlockScaling",
            recipe_family="mxfp8",
            min_compute_capability=(10, 0),
            hardware="Blackwell",
            description="MX 1x32 blocks with E8M0 scales",
        ),
    )
}

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}
TF32_UNIT_ROUNDOFF = 2.0**-11  # TF32 keeps 10 mantissa bits
FP8_UNIT_ROUNDOFF = 2.0**-3  # E5M2, the coarsest format TE's FP8 recipes round to (HYBRID's gradients)
FP8_TOKEN_MULTIPLE = 16  # FP8 GEMMs need both dimensions divisible by 16: pad token counts to it


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def make_recipe(precision: Precision):
    """A fresh TE recipe object for an FP8 precision (TE imported only here and in models/te.py)."""
    from transformer_engine.common import recipe as te_recipe

    options = {"fp8_dpa": True} if precision.fp8_attention else {}
    if precision.recipe == "DelayedScaling":
        return te_recipe.DelayedScaling(
            fp8_format=te_recipe.Format.HYBRID, amax_history_len=16, amax_compute_algo="max", **options
        )
    return getattr(te_recipe, precision.recipe)(**options)


def set_tf32(enabled: bool) -> None:
    """PyTorch's own TF32 switches (the cuBLAS-wide one is NVIDIA_TF32_OVERRIDE, see harness)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def quantization(precision: Precision, recipe=None):
    """Enter TE's FP8 autocast for FP8 precisions; nothing for the others."""
    if not precision.is_fp8:
        yield
        return
    import transformer_engine.pytorch as te

    with te.autocast(enabled=True, recipe=recipe if recipe is not None else make_recipe(precision)):
        yield


def calibrate(precision: Precision, recipe, forward) -> None:
    """DelayedScaling takes its scales from the amax history, which TE updates only when an FP8
    region with autograd on closes: one ``forward()`` so, before anything is measured."""
    import torch

    with torch.enable_grad(), quantization(precision, recipe):
        forward()


def tf32_state() -> dict:
    import os

    import torch

    return {
        "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
    }
