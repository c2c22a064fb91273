"""Token batches: cells of different lengths padded into one tensor, with the masks every engine
needs (which positions are real, which are genes rather than <cls>/<eos>); or packed end to end
with no padding at all (TransformerEngine's THD layout), the cells told apart by cumulative
sequence lengths."""

from __future__ import annotations

from dataclasses import dataclass

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

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.gene_mask.to(device), self.full)

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
            Batch(self.input_ids[i : i + size], self.attention_mask[i : i + size], self.gene_mask[i : i + size],
                  self.full)
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
    ids = torch.full((len(cells), S), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, c in enumerate(cells):
        ids[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
        attention[i, : len(c)] = 1
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

    @property
    def real_tokens(self) -> int:
        return int(self.cu_seqlens[self.n_cells])

    @property
    def lengths(self) -> torch.Tensor:
        return (self.cu_seqlens[1 : self.n_cells + 1] - self.cu_seqlens[: self.n_cells]).long()

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.gene_mask.to(device),
                           self.cu_seqlens.to(device), self.max_seqlen, self.n_cells)


def pack(cells: list[list[int]], variant: Variant, multiple: int = 1) -> PackedBatch:
    """Cells end to end (THD); ``multiple`` rounds the token count up (FP8 GEMMs need 16)."""
    if not cells or any(len(c) == 0 for c in cells):
        raise ValueError("cannot pack an empty cell (a cell with no tokens)")
    ids = torch.as_tensor([t for c in cells for t in c], dtype=torch.long)
    return _packed(ids, _is_gene(ids, variant), [len(c) for c in cells], multiple, ids.device,
                   pad_id=variant.special_tokens["<pad>"])


def _packed(ids, gene_mask, lengths: list[int], multiple: int, device, pad_id: int = 0) -> PackedBatch:
    filler = -len(ids) % multiple
    segments = lengths + ([filler] if filler else [])
    if filler:
        ids = torch.cat([ids, torch.full((filler,), pad_id, dtype=ids.dtype, device=device)])
        gene_mask = torch.cat([gene_mask, torch.zeros(filler, dtype=torch.bool, device=device)])
    cu = torch.zeros(len(segments) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.as_tensor(segments), 0)
    positions = torch.cat([torch.arange(n) for n in segments]).to(device)
    return PackedBatch(ids, positions, gene_mask, cu.to(device), max(segments), len(lengths))


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
