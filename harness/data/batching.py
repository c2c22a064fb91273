"""Token batches: cells of different lengths padded into one tensor, with the masks every engine
needs (which positions are real, which are genes rather than <cls>/<eos>); or packed end to end
with no padding at all (TransformerEngine's THD layout), the cells told apart by cumulative
sequence lengths."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from models.registry import Variant


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, S] int64
    attention_mask: torch.Tensor  # [B, S] int64, 1 = real token, 0 = padding
    gene_mask: torch.Tensor  # [B, S] bool, True = a gene token (not padding, not <cls>/<eos>)
    full: bool = False  # no cell is padded (known when batched): engines may skip the padding mask

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.gene_mask), self.full)

    def pin(self) -> "Batch":
        """The same batch in page-locked memory, so its copy to the GPU can run asynchronously."""
        return Batch(
            self.input_ids.pin_memory(), self.attention_mask.pin_memory(), self.gene_mask.pin_memory(), self.full
        )

    def first_cells(self, k: int, multiple: int = 1) -> "Batch":
        """The first ``k`` cells alone (a small batch to calibrate FP8 scales on)."""
        return Batch(self.input_ids[:k], self.attention_mask[:k], self.gene_mask[:k], self.full)

    def row_starts(self) -> list[int]:
        """Flat index of each cell's first token: row × length."""
        B, S = self.input_ids.shape
        return [r * S for r in range(B)]

    def row_ids(self) -> torch.Tensor:
        """[B*S] the cell each flattened position belongs to (on the batch's device)."""
        B, S = self.input_ids.shape
        return torch.arange(B, device=self.input_ids.device).repeat_interleave(S)

    @property
    def n_cells(self) -> int:
        return self.input_ids.shape[0]

    def packed(self, multiple: int = 1) -> tuple["PackedBatch", torch.Tensor]:
        """The same cells with the padding taken out, and the flat [B*S] positions their tokens
        came from (to put per-token outputs back in place). Cells are left-aligned (``collate``)."""
        lengths = self.lengths.tolist()
        where = self.attention_mask.flatten().nonzero().squeeze(1)
        flat_gene = self.gene_mask.flatten()[where]
        return _packed(self.input_ids.flatten()[where], flat_gene, lengths, multiple, self.input_ids.device), where

    def split(self, size: int) -> list["Batch"]:
        return [
            Batch(
                self.input_ids[i : i + size], self.attention_mask[i : i + size], self.gene_mask[i : i + size], self.full
            )
            for i in range(0, self.input_ids.shape[0], size)
        ]


def collate(cells: list[list[int]], variant: Variant, multiple: int = 1, length: int | None = None) -> Batch:
    """Pad a variant's token lists to one length: ``length`` if given, else the longest cell,
    rounded up to ``multiple`` (FP8 GEMMs need token counts divisible by 16)."""
    pad_id = variant.special_tokens["<pad>"]
    if not cells or any(len(c) == 0 for c in cells):
        raise ValueError("cannot batch an empty cell (a cell with no tokens)")
    longest = max(len(c) for c in cells)
    S = length if length is not None else longest
    if S < longest:
        raise ValueError(f"a cell has {longest} tokens, more than the batch length {S}")
    S = _round_up(S, multiple)
    ids = np.full((len(cells), S), pad_id, dtype=np.int64)
    attention = np.zeros_like(ids)
    for i, c in enumerate(cells):
        ids[i, : len(c)] = c
        attention[i, : len(c)] = 1
    ids, attention = torch.from_numpy(ids), torch.from_numpy(attention)
    gene = attention.bool() & _is_gene(ids, variant)
    return Batch(ids, attention, gene, full=all(len(c) == S for c in cells))


@dataclass
class PackedBatch:
    """Cells laid end to end in one [T] token vector (THD): no padding between cells, so no work
    is spent on it. ``cu_seqlens`` [n+1] (int32) are the cells' boundaries; when FP8 needs the token
    count rounded up, the filler tokens form one extra segment after the last cell."""

    input_ids: torch.Tensor  # [T] int64
    position_ids: torch.Tensor  # [T] int64, position of each token inside its cell
    gene_mask: torch.Tensor  # [T] bool, True = a gene token
    cu_seqlens: torch.Tensor  # [segments + 1] int32
    max_seqlen: int  # longest segment (a Python int: TE takes it without a device sync)
    n_cells: int  # segments that are cells (a filler segment, if any, comes after them)
    segment_ids: torch.Tensor  # [T] int64, the segment (cell) each token belongs to

    @property
    def real_tokens(self) -> int:
        return int(self.cu_seqlens[self.n_cells])

    @property
    def lengths(self) -> torch.Tensor:
        return (self.cu_seqlens[1 : self.n_cells + 1] - self.cu_seqlens[: self.n_cells]).long()

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return PackedBatch(
            move(self.input_ids),
            move(self.position_ids),
            move(self.gene_mask),
            move(self.cu_seqlens),
            self.max_seqlen,
            self.n_cells,
            move(self.segment_ids),
        )

    def pin(self) -> "PackedBatch":
        pin = lambda t: t.pin_memory()  # noqa: E731
        return PackedBatch(
            pin(self.input_ids),
            pin(self.position_ids),
            pin(self.gene_mask),
            pin(self.cu_seqlens),
            self.max_seqlen,
            self.n_cells,
            pin(self.segment_ids),
        )

    def first_cells(self, k: int, multiple: int = 1) -> "PackedBatch":
        """The first ``k`` cells alone, packed again (token count rounded up to ``multiple``)."""
        k = min(k, self.n_cells)
        lengths = (self.cu_seqlens[1 : k + 1] - self.cu_seqlens[:k]).tolist()
        end = sum(lengths)
        return _packed(self.input_ids[:end], self.gene_mask[:end], lengths, multiple, self.input_ids.device)

    def row_starts(self) -> list[int]:
        """Flat index of each cell's first token: the cumulative lengths (a host list)."""
        return self.cu_seqlens.tolist()

    def row_ids(self) -> torch.Tensor:
        """[T] the cell each token belongs to (the filler segment, if any, is row ``n_cells``)."""
        return self.segment_ids


def pack(
    cells: list[list[int]], variant: Variant, multiple: int = 1, total: int | None = None, max_seqlen: int | None = None
) -> PackedBatch:
    """Cells end to end (THD); ``multiple`` rounds the token count up (FP8 GEMMs need 16).
    ``total`` fixes the token count (filler segments of at most ``FILLER_SEGMENT`` tokens make up
    the rest) and ``max_seqlen`` the declared longest segment, so that batches of different cells
    share one shape and TE's attention plan is built once."""
    if not cells or any(len(c) == 0 for c in cells):
        raise ValueError("cannot pack an empty cell (a cell with no tokens)")
    ids = torch.as_tensor(np.concatenate([np.asarray(c, dtype=np.int64) for c in cells]))
    if total is not None and total < len(ids):
        raise ValueError(f"{len(ids)} tokens do not fit a pack of {total}")
    return _packed(
        ids,
        _is_gene(ids, variant),
        [len(c) for c in cells],
        multiple,
        ids.device,
        pad_id=variant.special_tokens["<pad>"],
        total=total,
        max_seqlen=max_seqlen,
    )


FILLER_SEGMENT = 128  # filler is cut into short segments: its attention costs next to nothing


def _packed(
    ids,
    gene_mask,
    lengths: list[int],
    multiple: int,
    device,
    pad_id: int = 0,
    total: int | None = None,
    max_seqlen: int | None = None,
) -> PackedBatch:
    filler = (_round_up(total, multiple) if total else _round_up(len(ids), multiple)) - len(ids)
    pieces = [FILLER_SEGMENT] * (filler // FILLER_SEGMENT) + (
        [filler % FILLER_SEGMENT] if filler % FILLER_SEGMENT else []
    )
    segments = lengths + (pieces if total else ([filler] if filler else []))
    if filler:
        ids = torch.cat([ids, torch.full((filler,), pad_id, dtype=ids.dtype, device=device)])
        gene_mask = torch.cat([gene_mask, torch.zeros(filler, dtype=torch.bool, device=device)])
    sizes = torch.as_tensor(segments)
    cu = torch.zeros(len(segments) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(sizes, 0)
    segment_ids = torch.repeat_interleave(torch.arange(len(segments)), sizes)
    positions = torch.arange(len(segment_ids)) - cu[:-1].long()[segment_ids]
    return PackedBatch(
        ids,
        positions.to(device),
        gene_mask,
        cu.to(device),
        max(max(segments), max_seqlen or 0),
        len(lengths),
        segment_ids.to(device),
    )


def pack_to_budget(cells: list[list[int]], variant: Variant, budget: int, multiple: int = 1) -> list[PackedBatch]:
    """Cells in order, packed greedily into batches of at most ``budget`` tokens each (a padded
    batch of B cells at length S has the same activation footprint as a budget of B×S)."""
    if any(_round_up(len(c), multiple) > budget for c in cells):
        raise ValueError(f"a cell has more tokens than the packing budget of {budget}")
    groups, current, used = [], [], 0
    for c in cells:
        if current and _round_up(used + len(c), multiple) > budget:
            groups.append(current)
            current, used = [], 0
        current.append(c)
        used += len(c)
    groups.append(current)
    return [pack(g, variant, multiple) for g in groups]


def _is_gene(ids: torch.Tensor, variant: Variant) -> torch.Tensor:
    """True where a token is a gene, not one of the variant's special tokens."""
    specials = torch.as_tensor(sorted(variant.special_tokens.values()), dtype=torch.long)
    return ~torch.isin(ids, specials)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# The default pad multiple (``budget_plan``'s, and ``Backend.pad_multiple``'s until a backend's own is
# measured): padded batches are rounded up to this length, so that few shapes occur and kernels are
# planned once.
SHAPE_MULTIPLE = 128


def batch_multiple(layout: str, multiple: int = 1, pad_multiple: int = SHAPE_MULTIPLE) -> int:
    """The token multiple a batch of ``layout`` is rounded up to: padded, both ``pad_multiple`` and
    the precision's ``multiple`` (FP8 needs 16); packed, ``multiple`` alone (a pack carries no padding)."""
    return math.lcm(pad_multiple, multiple) if layout == "padded" else multiple


def budget_groups(lengths: list[int], budget: int, padded: bool = True, step: int = 1) -> list[list[int]]:
    """Indices grouped longest first, greedily, each group within ``budget`` tokens: padded, every
    row costs the group's first (longest) length rounded up to ``step``; packed, each cell its own
    rounded length. A cell longer than the budget gets a group of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups, current, used = [], [], 0
    for i in order:
        cost = _round_up(lengths[current[0]] if current and padded else lengths[i], step)
        if current and used + cost > budget:
            groups.append(current)
            current, used = [], 0
            cost = _round_up(lengths[i], step)
        current.append(i)
        used += cost
    if current:
        groups.append(current)
    return groups


def budget_batches(
    cells: list[list[int]],
    variant: Variant,
    layout: str,
    budget: int,
    multiple: int = 1,
    fixed_shape: bool = True,
    pad_multiple: int = SHAPE_MULTIPLE,
) -> list[tuple[Batch | PackedBatch, list[int]]]:
    """``budget_plan``'s batches, built now: ``(batch, indices of its cells)``."""
    plan = budget_plan(cells, variant, layout, budget, multiple, fixed_shape, pad_multiple=pad_multiple)
    return [(make(), g) for make, g in plan]


def budget_plan(
    cells: list[list[int]],
    variant: Variant,
    layout: str,
    budget: int,
    multiple: int = 1,
    fixed_shape: bool = True,
    pad_multiple: int = SHAPE_MULTIPLE,
) -> list[tuple[Callable[[], Batch | PackedBatch], list[int]]]:
    """Cells batched for throughput, longest first, each batch within ``budget`` tokens (the same
    budget for every layout, so a padded and a packed backend get the same memory): ``(make,
    indices of its cells)``, where ``make()`` builds the batch, so that a pipeline builds each on
    its worker while the device runs the one before (building them all first kept V1-10M's GPU
    idle). Padded batches are rounded up to a multiple of ``pad_multiple`` tokens (the backend's
    own, ``Backend.pad_multiple``; default ``SHAPE_MULTIPLE``) and of ``multiple`` (``batch_multiple``)
    so that few distinct shapes occur; packed batches (THD) carry no padding at all; with
    ``fixed_shape`` every pack holds exactly ``budget`` tokens and declares the context as its
    longest cell (one attention plan), which only an attention that skips padding may be given. A
    cell longer than the budget gets a batch of its own."""
    if layout not in ("padded", "packed"):
        raise ValueError(f"batch layout must be 'padded' or 'packed', not {layout!r}")
    step = batch_multiple(layout, multiple, pad_multiple)
    groups = budget_groups([len(c) for c in cells], budget, padded=layout == "padded", step=step)
    if layout == "padded":
        return [(partial(collate, [cells[i] for i in g], variant, step), g) for g in groups]
    if not fixed_shape:
        return [(partial(pack, [cells[i] for i in g], variant, multiple), g) for g in groups]
    # every pack holds exactly ``budget`` tokens, the last one the next power of two: one or two shapes
    sizes = [sum(len(cells[i]) for i in g) for g in groups]
    last = min(budget, 1 << max(0, sizes[-1] - 1).bit_length())
    return [
        (
            partial(
                pack,
                [cells[i] for i in g],
                variant,
                multiple,
                total=max(n, budget if k < len(groups) - 1 else last),
                max_seqlen=variant.context,
            ),
            g,
        )
        for k, (g, n) in enumerate(zip(groups, sizes))
    ]
