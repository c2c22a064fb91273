"""The environment a results file is stamped with (its ``env``): the hardware, the driver and every
library version that can change a number (cuDNN included), and the git commit of the code that
ran with whether the tree was dirty; never the host. Apart from the schema (harness/results.py),
which only carries it: measuring it asks git, NVML and torch, validating a file asks none of them.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict:
    """Commit of the code that ran, and whether tracked files differed from it. GFQUAL_COMMIT
    (and GFQUAL_GIT_DIRTY, 0 or 1), when set, win: a copied working tree (the GPU machine's) may
    carry a stale .git whose HEAD is not the code that ran; unset there, dirtiness is unknown."""
    if os.environ.get("GFQUAL_COMMIT"):
        dirty = os.environ.get("GFQUAL_GIT_DIRTY")
        return {"git_commit": os.environ["GFQUAL_COMMIT"], "git_dirty": None if dirty is None else dirty == "1"}
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if commit and status is not None:
        return {"git_commit": commit, "git_dirty": bool(status)}
    return {"git_commit": commit or "unknown", "git_dirty": None}


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver (CPU machine) or no nvidia-ml-py
        return None


def _cudnn_versions() -> dict:
    """The cuDNN torch runs with, and the one TE's fused attention reports when TE is loaded. torch
    refuses to name a runtime cuDNN other than the one it was built with (TE's libraries can load
    another first); its refusal, which names both versions, is then what is recorded."""
    import sys

    import torch

    try:
        torch_cudnn = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except RuntimeError as exc:
        torch_cudnn = str(exc).split(". ")[0]
    te_cudnn = None
    if "transformer_engine.pytorch" in sys.modules:
        from transformer_engine.pytorch.utils import get_cudnn_version

        te_cudnn = ".".join(map(str, get_cudnn_version()))
    return {"cudnn": torch_cudnn, "te_cudnn": te_cudnn}


def _version_of(package: str, version, missing) -> str | None:
    """A package's installed version, read from its metadata: importing transformers to ask
    would add a second to every command that never uses it (gfqual embed on TE)."""
    try:
        return version(package)
    except missing:
        return None


def environment() -> dict:
    """Everything that can change a number: hardware, driver and library versions, commit."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from harness.capability import probe
    from harness.precision import tf32_state

    cap = probe()
    return {
        **cap.describe(),
        "driver": _driver_version(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        **_cudnn_versions(),
        "transformers": _version_of("transformers", version, PackageNotFoundError),
        "te": cap.te_version,
        "python": platform.python_version(),
        "cpu_arch": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        **tf32_state(),
        **git_state(),
    }
