"""GPU identity: which column a results file belongs to, and whether the GPU it names is the GPU
its recorded compute capability (and memory, where recorded) says it is.

A file relabelled by hand (an H200's results carrying an A100's name) must not count for the A100:
the name is checked against a table of known GPUs, and a mismatch is a ``provenance`` failure.
A GPU not in the table gets a column of its own under its full name, never merged into another.
"""

from __future__ import annotations

# name -> (compute capability, total memory in GiB of each model sold under that name, as
# torch.cuda.get_device_properties reports it: the nominal size less what the driver reserves)
KNOWN_GPUS: dict[str, tuple[str, tuple[float, ...]]] = {
    "A100": ("8.0", (39.4, 79.2)),
    "H100": ("9.0", (79.1, 93.1)),
    "H200": ("9.0", (139.8, 140.4)),
    "GH200": ("9.0", (94.5, 140.4)),  # matched before H200, whose name it contains
    "B200": ("10.0", (178.4,)),
    "GB200": ("10.0", (184.0, 186.0)),
}
MEMORY_SLACK = 0.06  # a recorded total may differ from the table by this fraction (driver, ECC, MIG-less)
IN_SCOPE_BY_DEFAULT = ("H100", "H200")  # the GPUs a verdict expects; others only when a plan names them
COLUMN_ORDER = ("A100", "H100", "H200", "GB200")  # the columns a reader expects; others follow by name


def gpu_class(name: str | None) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; a CPU run -> 'CPU'; a GPU not in the table -> its name."""
    if not name:
        return "CPU"
    for short in sorted(KNOWN_GPUS, key=len, reverse=True):
        if short in name:
            return short
    return name


def result_gpu(result: dict) -> str:
    """The GPU column a results file belongs to."""
    return gpu_class(result["env"].get("gpu_name"))


def identity(env: dict) -> dict:
    """The GPU a file's ``env`` names, with a flag (text) when its name does not match its
    recorded compute capability or memory, else ``flag`` None."""
    name, cc, memory = env.get("gpu_name"), env.get("compute_capability"), env.get("gpu_memory_gib")
    known = KNOWN_GPUS.get(gpu_class(name))
    flag = None
    if known and cc is not None and str(cc) != known[0]:
        flag = f"{name!r} has compute capability {known[0]}, but this file records {cc}"
    elif known and memory is not None and not any(abs(memory - m) <= MEMORY_SLACK * m for m in known[1]):
        sizes = " or ".join(f"{m:g}" for m in known[1])
        flag = f"{name!r} has {sizes} GiB, but this file records {memory:g} GiB"
    return {"name": name, "compute_capability": cc, "memory_gib": memory, "flag": flag}


def column_order(gpus) -> list[str]:
    """Known GPUs in the table's order, then any other GPU (and the CPU) by name."""
    return sorted(gpus, key=lambda g: (COLUMN_ORDER.index(g) if g in COLUMN_ORDER else len(COLUMN_ORDER), g))
