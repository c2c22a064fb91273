"""In-silico perturbation (how the Geneformer paper used its cardiomyopathy model): delete a gene
from a cell's rank encoding, or overexpress it (move it to the first rank), and measure how the
cell embedding moves.

Per (cell, gene):
  * ``cos_shift`` = 1 − cos(original, perturbed): how far the cell moved;
  * ``goal_shift`` = cos(perturbed, goal) − cos(original, goal): the signed move toward a goal
    state (for example the centroid of non-failing cells, when perturbing dilated ones).
As in Geneformer, the perturbed gene itself is left out of both cell embeddings, so a shift
measures the effect on the other genes, not the gene's own vector. The original's embedding
without gene g is (sum over genes − h_g) / (n − 1), from one forward pass of the original.

Noise floor: every original cell is run a second time in another batching (half the token
budget, so other batch compositions and shapes, other kernels and reduction orders). The shifts
this null perturbation produces are pure arithmetic noise of that backend at that precision; HF vs
TE sign agreement is judged only on shifts above it.

Speed: originals and their perturbed copies go through the embedding engine
(``harness.embeddings.encode_cells``) in chunks of a few token budgets: batched to the budget in the
backend's fastest layout, only the layers up to the embedding layer, the gene sums and the deleted
genes' states kept on the GPU, and every shift computed there; one copy to the host at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.backends import Backend
from harness.embeddings import encode_cells, layers_to_run, synchronize, to_device, token_budget
from models.errors import UsageError
from models.registry import Variant

MODES = ("delete", "overexpress")
CHUNK_BUDGETS = 8  # cells and copies handled per engine pass, in token budgets


@dataclass
class PerturbResult:
    cell: np.ndarray  # index of the perturbed cell in the input
    gene: np.ndarray  # token id of the perturbed gene
    cos_shift: np.ndarray
    goal_shift: np.ndarray
    null_cos_shift: np.ndarray  # per original cell
    null_goal_shift: np.ndarray
    seconds: float
    real_tokens: int
    padded_tokens: int

    @property
    def noise_floor(self) -> float:
        return float(np.abs(self.null_goal_shift).max()) if len(self.null_goal_shift) else 0.0


def perturbed_copy(cell: list[int], position: int, mode: str, variant: Variant) -> list[int]:
    if mode == "delete":
        return cell[:position] + cell[position + 1 :]
    if mode == "overexpress":
        first = 1 if variant.has_cls_eos else 0  # after <cls>
        rest = cell[:position] + cell[position + 1 :]
        return rest[:first] + [cell[position]] + rest[first:]
    raise UsageError(f"perturbation mode must be one of {MODES}, not {mode!r}")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def _chunks(cells: list[list[int]], jobs: dict[int, list[int]], limit: int):
    """(cells, [(cell, position)]) pieces of about ``limit`` tokens, originals included; a cell
    with more copies than fit is split over several pieces, its original in each."""
    piece, todo, used = [], [], 0
    for c, cell in enumerate(cells):
        if piece and used + len(cell) > limit:
            yield piece, todo
            piece, todo, used = [], [], 0
        piece.append(c)
        used += len(cell)
        for p in jobs.get(c, []):
            if todo and used + len(cell) > limit:
                yield piece, todo
                piece, todo, used = [c], [], len(cell)
            todo.append((c, p))
            used += len(cell)
    if piece:
        yield piece, todo


@torch.no_grad()
def perturb(
    backend: Backend,
    cells: list[list[int]],
    variant: Variant,
    genes: list[int],
    goal: np.ndarray,
    mode: str = "delete",
    emb_layer: int = -1,
    max_tokens: int | None = None,
    progress=None,
) -> PerturbResult:
    """Perturb each of ``genes`` in every cell that expresses it; ``goal`` is a cell embedding;
    ``progress(n)`` is told of each perturbation queued."""
    if mode not in MODES:
        raise UsageError(f"perturbation mode must be one of {MODES}, not {mode!r}")
    n_layers = layers_to_run(variant, emb_layer)
    budget = token_budget(backend, variant, max_tokens)
    device = backend.device
    goal_t = torch.as_tensor(goal, dtype=torch.float32, device=device)
    wanted = set(genes) - set(variant.special_tokens.values())
    jobs = {c: [p for p, t in enumerate(cell) if t in wanted] for c, cell in enumerate(cells)}
    moved = 1 if variant.has_cls_eos else 0  # where an overexpressed gene goes (kept out of the mean)
    originals = torch.zeros(len(cells), variant.hidden_size, device=device)
    shifts, done, real, run = [], [], 0, 0
    start = time.perf_counter()
    for piece, todo in _chunks(cells, jobs, CHUNK_BUDGETS * budget):
        where = {c: k for k, c in enumerate(piece)}
        rows = [cells[c] for c in piece] + [perturbed_copy(cells[c], p, mode, variant) for c, p in todo]
        leave = [None] * len(piece) + [moved if mode == "overexpress" else None] * len(todo)
        pooled = encode_cells(
            backend, rows, variant, n_layers, budget, leave_out=leave, pick=[(where[c], p) for c, p in todo]
        )
        if progress is not None:
            progress(len(todo))
        k = len(piece)
        means = pooled.means().float()
        originals.index_copy_(0, to_device(piece, device), means[:k])
        real += pooled.real_tokens
        run += pooled.run_tokens
        if not todo:
            continue
        own = to_device([where[c] for c, _ in todo], device)
        count = pooled.counts[:k][own]
        without = ((pooled.sums[:k][own] - pooled.picked) / (count - 1).clamp(min=1)[:, None]).float()
        perturbed = means[k:]
        shifts.append(torch.stack([1 - _cos(without, perturbed), _cos(perturbed, goal_t) - _cos(without, goal_t)]))
        done += todo
    synchronize(device)
    seconds = time.perf_counter() - start
    null = encode_cells(backend, cells, variant, n_layers, max(variant.context, budget // 2)).means().float()
    null_cos, null_goal = 1 - _cos(originals, null), _cos(null, goal_t) - _cos(originals, goal_t)
    both = torch.cat(shifts, dim=1).cpu().numpy() if shifts else np.zeros((2, 0))
    return PerturbResult(
        np.array([c for c, _ in done], dtype=int),
        np.array([cells[c][p] for c, p in done], dtype=int),
        both[0],
        both[1],
        null_cos.cpu().numpy(),
        null_goal.cpu().numpy(),
        seconds,
        real,
        run,
    )


def shift_agreement(reference: PerturbResult, candidate: PerturbResult) -> dict:
    """Correlation of the two backends' shifts, and sign agreement above both noise floors."""
    if not (np.array_equal(reference.cell, candidate.cell) and np.array_equal(reference.gene, candidate.gene)):
        raise ValueError("the two perturbation runs did not perturb the same (cell, gene) pairs")
    floor = max(reference.noise_floor, candidate.noise_floor)
    above = (np.abs(reference.goal_shift) > floor) & (np.abs(candidate.goal_shift) > floor)
    same_sign = np.sign(reference.goal_shift[above]) == np.sign(candidate.goal_shift[above])

    def pearson(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")

    return {
        "cos_shift_pearson": pearson(reference.cos_shift, candidate.cos_shift),
        "goal_shift_pearson": pearson(reference.goal_shift, candidate.goal_shift),
        "goal_shift_max_abs_diff": float(np.abs(reference.goal_shift - candidate.goal_shift).max()),
        "noise_floor": floor,
        "n_pairs": len(reference.goal_shift),
        "n_above_floor": int(above.sum()),
        "sign_agreement_above_floor": float(same_sign.mean()) if above.any() else float("nan"),
    }
