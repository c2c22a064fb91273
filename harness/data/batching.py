"""Token batches: cells of different lengths padded into one tensor, with the masks every engine
needs (which positions are real, which are genes rather than <cls>/<eos>)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.registry import Variant


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, S] int64
    attention_mask: torch.Tensor  # [B, S] int64, 1 = real token, 0 = padding
    gene_mask: torch.Tensor  # [B, S] bool, True = a gene token (not padding, not <cls>/<eos>)

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.gene_mask.to(device))

    def split(self, size: int) -> list["Batch"]:
        return [
            Batch(self.input_ids[i : i + size], self.attention_mask[i : i + size], self.gene_mask[i : i + size])
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
    S = -(-S // multiple) * multiple
    ids = torch.full((len(cells), S), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, c in enumerate(cells):
        ids[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
        attention[i, : len(c)] = 1
    specials = torch.as_tensor(sorted(variant.special_tokens.values()), dtype=torch.long)
    gene = attention.bool() & ~torch.isin(ids, specials)
    return Batch(ids, attention, gene)
