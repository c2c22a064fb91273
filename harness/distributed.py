"""Data parallelism over PyTorch's own engine: ``torchrun --nproc-per-node N -m harness ...``.

torchrun starts one process per GPU and sets RANK / WORLD_SIZE / LOCAL_RANK; ``context()`` joins
them into one process group (NCCL on GPUs, gloo on CPUs) the first time it is asked, and is a
world of one otherwise, so every command runs unchanged without torchrun. Under torchrun the
group is joined even with one process, so a one-GPU run goes through the same shard, gather and
NCCL path as eight.

Embedding extraction (``harness.embeddings.extract``, and through it ``gfqual embed`` and the
probe mode of ``gfqual eval``) shards cells across ranks and gathers the vectors back to every
rank in input order. Shards are dealt longest-first in turn, so every rank gets a similar token
load. A rank that fails does not leave the others waiting on a collective for ever: every rank
reports its outcome before any result is exchanged, and all of them raise ``RankFailure``
naming the failed ranks and their errors. Only rank 0 writes results files.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(minutes=30)  # a rank that dies hard: the others give up after this


class RankFailure(RuntimeError):
    pass


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: str | None  # this rank's GPU under torchrun with CUDA; None leaves the choice to the probe
    distributed: bool = False  # joined a process group (launched by torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@functools.cache
def context() -> Context:
    """This process's place in the data-parallel world (joins the process group once)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        return Context(0, 1, None)
    device = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device else "gloo", timeout=TIMEOUT)
        atexit.register(_leave)
    return Context(dist.get_rank(), dist.get_world_size(), device, distributed=True)


def _leave() -> None:
    """Leave the group in step with the others: tearing it down mid-exit can abort the process."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(lengths: list[int], rank: int, world_size: int) -> list[int]:
    """Indices this rank handles: longest first, dealt round-robin (balanced tokens per rank)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return order[rank::world_size]


def run_on_every_rank(work: Callable[[], object], gather: bool = True):
    """``work()`` on this rank, then every rank's outcome on every rank: a list of results in rank
    order (``gather=False``: this rank's own result, for callers that reduce it themselves), or
    ``RankFailure`` everywhere when any rank raised."""
    ctx = context()
    if not ctx.distributed:  # a world of one: the error, if any, is the caller's own
        result = work()
        return [result] if gather else result
    try:
        outcome = ("ok", work())
    except Exception as exc:  # reported to every rank below, then raised
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    statuses = [None] * ctx.world_size
    dist.all_gather_object(statuses, outcome[0] if outcome[0] == "ok" else outcome)
    failed = [(r, s[1]) for r, s in enumerate(statuses) if s != "ok"]
    if failed:
        raise RankFailure("; ".join(f"rank {r} of {ctx.world_size} failed: {why}" for r, why in failed))
    if not gather:
        return outcome[1]
    return all_ranks(outcome[1])


def all_ranks(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    ctx = context()
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def reassemble(parts: list[tuple[list[int], object]], n: int, stack: Callable) -> object:
    """Pieces (indices, rows) from every rank back into input order; refuses a lost or
    duplicated cell rather than returning a silently wrong matrix."""
    indices = [i for idx, _ in parts for i in idx]
    if sorted(indices) != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        dupes = len(indices) - len(set(indices))
        raise RankFailure(
            f"gathered {len(indices)} rows for {n} cells: {len(missing)} missing "
            f"(first {missing[:5]}), {dupes} duplicated"
        )
    return stack(parts, indices)


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (on this rank's GPU for NCCL, on the CPU for gloo)."""
    ctx = context()
    if not ctx.distributed:
        return tensor
    on = tensor.to(ctx.device) if ctx.device else tensor
    dist.all_reduce(on)
    return on.to(tensor.device)


def barrier() -> None:
    if context().distributed:
        dist.barrier()
