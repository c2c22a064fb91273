"""gfqual harness: how the Geneformer HF reference and TE models are measured.

Strict fp32 by default: cuBLAS (and so TE's "fp32" GEMMs) would otherwise run fp32 matrix products
in TF32, which costs about 1e-4 relative error per layer and would hide conversion faults of that
size. ``NVIDIA_TF32_OVERRIDE=0`` must be in the environment before CUDA starts, so it is set here,
at the first import of the harness, unless the user already chose a value (the ``tf32`` precision
needs ``NVIDIA_TF32_OVERRIDE=1``). Every result records which mode ran.
"""

import os
import time

os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

STARTED = time.perf_counter()  # start-up (imports, model build, data) is measured from here

# The Python API (harness/api.py), re-exported on first use so that ``import harness`` stays light
# (torch, anndata and pandas load only when a function is called). ``parity`` is ``api.parity``:
# ``harness.parity`` is the parity engine's package.
API = ("tokenize", "embed", "load_results")


def __getattr__(name: str):
    if name in API:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
