"""Diagnostic behind TOLERANCES.md's "The fresh-cell drift on the CPU" (issue 30 item 3): on the
CPU, V1-10M's TE layout (``te-format-torch`` fp32) trained on fresh cells drifts from HF fp32 in
held-out loss although each step's gradients agree to ~1e-6. Is that drift a defect, or rounding
that training amplifies, as it amplifies any two correct fp32 implementations' rounding?

Every run is ``gfqual train-band``'s own run (``harness.parity.training_band.run_seed``: fresh
real cells each step, AdamW, held-out MLM loss every ``--eval-every`` steps), from the same seeded
random weights, cells, order and masks; they differ only in the backend, precision, thread count
or whether attention's key bias trains. Measured at each evaluation, for a candidate run against
a reference run: the held-out-loss gap (nats) and the weights' difference (every weight in HF
names, relative L2 to the reference's weights, and to how far the reference's weights have moved
since step 0). The pairs:

* the drift: TE layout fp32 against HF (sdpa) fp32, as ``train-band`` pairs them;
* the chaos floor, two correct fp32 implementations that differ only in rounding: HF fp32 on one
  thread against two (summation order), HF eager attention against sdpa;
* which side carries it: each fp32 run against HF eager in fp64;
* the key-bias hypothesis: the same pairs with attention's key bias frozen in both models (its
  gradient replaced by an exact zero, which its exact gradient is: softmax ignores a shift shared
  by a query's scores; AdamW's weight decay still scales it, identically in both).

Run from the repository root (one process; on 2 cores about 5 min a run at --max-len 128 beside another
job, 2.5-5 min at 512 alone), e.g.:

    PYTHONPATH=. python harness/diagnostics/cpu_drift.py \
        --cells TOK_CELLTYPIST_V1 TOK_CHR21_V1 --steps 48 --eval-every 24 --max-len 128 \
        > results/cpu/profiles/cpu-drift.log
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from unittest import mock

import torch

from harness.data.stream import read_tokenized
from harness.environment import environment
from harness.parity import training_band as band
from harness.parity.backward import in_hf_names
from harness.training import Trainee
from models.convert import _pack_qkv
from models.hf import random_hf_model
from models.registry import get_variant

VARIANT = get_variant("V1-10M")
HF_KEY_BIAS = "attention.self.key.bias"
TE_QKV_BIAS = "self_attention.qkv.bias"


def key_bias_keep(name: str, p: torch.Tensor) -> torch.Tensor | None:
    """Where a parameter's gradient is kept (1) and where it is the key bias's (0), in either layout;
    None for a parameter without a key bias (HF's own key bias, or the key rows of TE's fused qkv bias
    through the conversion table's packing)."""
    if name.endswith(HF_KEY_BIAS):
        return torch.zeros_like(p)
    if name.endswith(TE_QKV_BIAS):
        ones = torch.ones(p.numel() // 3, dtype=p.dtype)
        return _pack_qkv([ones, torch.zeros_like(ones), ones], VARIANT.num_attention_heads)[0]
    return None


class KeyBiasFrozen(Trainee):
    """A trainee whose key biases get an exact zero gradient: AdamW never steps them."""

    frozen = 0  # key-bias elements frozen by the last one built

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        KeyBiasFrozen.frozen = 0
        for name, p in self.named_parameters().items():
            keep = key_bias_keep(name, p)
            if keep is not None:
                p.register_hook(lambda g, keep=keep: g * keep)
                KeyBiasFrozen.frozen += int((keep == 0).sum())


KEY_BIAS: list[torch.Tensor] = []  # where the key biases sit in ``weights``' vector (set by its first call)


def weights(trainee: Trainee) -> torch.Tensor:
    """Every weight in HF names and order, as one fp64 vector."""
    tensors = {n: p.detach().double() for n, p in trainee.named_parameters().items()}
    hf = in_hf_names(tensors, "hf" if trainee.backend.spec.family == "hf" else "te", VARIANT)
    if not KEY_BIAS:
        KEY_BIAS.append(torch.cat([torch.full((hf[n].numel(),), n.endswith(HF_KEY_BIAS)) for n in sorted(hf)]))
    return torch.cat([hf[n].flatten() for n in sorted(hf)])


@contextlib.contextmanager
def threads(n: int | None):
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(backend: str, precision: str, pool, spec, seed: int, n_threads: int | None, frozen: bool):
    """(held-out rows, the weights at each evaluation) of one ``train-band`` run."""
    snapshots: list[torch.Tensor] = []
    original = band._loss_and_accuracy

    def evaluate(trainee, *args):
        snapshots.append(weights(trainee).float() if precision != "fp64" else weights(trainee))
        return original(trainee, *args)

    patches = [mock.patch.object(band, "_loss_and_accuracy", evaluate)]
    if frozen:
        patches.append(mock.patch.object(band, "Trainee", KeyBiasFrozen))
    with contextlib.ExitStack() as stack, threads(n_threads):
        for p in patches:
            stack.enter_context(p)
        rows, _ = band.run_seed(backend, precision, random_hf_model(VARIANT, seed), pool, spec, seed)
    return rows, snapshots


# (name, backend, precision, threads (None: the process's), key bias frozen, kept as a reference)
RUNS = (
    ("HF sdpa fp32", "hf-sdpa", "fp32", None, False, True),
    ("TE layout fp32", "te-format-torch", "fp32", None, False, True),
    ("HF sdpa fp32 K frozen", "hf-sdpa", "fp32", None, True, True),
    ("TE layout fp32 K frozen", "te-format-torch", "fp32", None, True, False),
    ("HF eager fp32", "hf-eager", "fp32", None, False, False),
    ("HF sdpa fp32 1 thread", "hf-sdpa", "fp32", 1, False, False),
    ("HF eager fp64", "hf-eager", "fp64", None, False, False),
)
# (candidate, reference): what each comparison asks
PAIRS = (
    ("TE layout fp32", "HF sdpa fp32", "the drift (train-band's pairing)"),
    ("HF eager fp32", "HF sdpa fp32", "floor: attention kernel (eager against sdpa)"),
    ("HF sdpa fp32 1 thread", "HF sdpa fp32", "floor: summation order (1 thread against 2)"),
    ("HF sdpa fp32 K frozen", "HF sdpa fp32", "freezing the key bias itself (HF)"),
    ("TE layout fp32 K frozen", "HF sdpa fp32 K frozen", "the drift, key bias frozen in both"),
    ("TE layout fp32 K frozen", "TE layout fp32", "freezing the key bias itself (TE layout)"),
    ("HF sdpa fp32 1 thread K frozen", "HF sdpa fp32 K frozen", "floor: threads, key bias frozen"),
    ("HF eager fp64", "HF sdpa fp32", "HF sdpa fp32 against fp64"),
    ("HF eager fp64", "TE layout fp32", "TE layout fp32 against fp64"),
)


def compare(cand: tuple, ref: tuple) -> list[tuple]:
    """Per evaluation: (step, reference loss, candidate loss, gap, weights rel L2, over the update,
    the key biases' share of the squared weight difference)."""
    (rows, snaps), (ref_rows, ref_snaps) = cand, ref
    out = []
    for r, c, w, rw in zip(ref_rows, rows, snaps, ref_snaps, strict=True):
        delta = w.double() - rw.double()
        diff = float(delta.norm())
        key = float(delta[KEY_BIAS[0]].pow(2).sum()) / diff**2 if diff else 0.0
        moved = float((rw.double() - ref_snaps[0].double()).norm())
        out.append(
            (
                r["step"],
                r["held_out_loss"],
                c["held_out_loss"],
                abs(c["held_out_loss"] - r["held_out_loss"]),
                diff / float(rw.double().norm()),
                diff / moved if moved else 0.0,
                key,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", required=True, help="tokenized V1 cell folders (gfqual tokenize)")
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=band.BandSpec.max_len, help="tokens per cell (train-band's)")
    ap.add_argument("--only", nargs="*", help="run only these RUNS names (smoke tests)")
    args = ap.parse_args()
    env = environment()
    print(
        f"cpu_drift.py at {env.get('git_commit')} (dirty: {env.get('git_dirty')}); "
        f"{platform.processor() or env.get('cpu_arch')}, "
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, {torch.get_num_threads()} threads"
    )
    cells: list[list[int]] = []
    for folder in args.cells:
        cells += [list(map(int, ids)) for ids in read_tokenized(folder, VARIANT)["input_ids"]]
    spec = band.BandSpec(
        variant=VARIANT.name,
        seeds=1,
        first_seed=args.seed,
        steps=args.steps,
        eval_every=args.eval_every,
        max_len=args.max_len,
    )
    pool = band.CellPool.from_cells(cells, None, spec)
    print(
        f"V1-10M MLM, seeded random weights (seed {args.seed}), {args.steps} steps of {spec.batch_cells} fresh cells "
        f"of <= {spec.max_len} tokens ({len(pool.train)} to train on, {len(pool.held_out)} held out), lr {spec.lr:g}"
    )
    kept: dict[str, tuple] = {}
    for name, backend, precision, n_threads, frozen, reference in RUNS:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        result = run(backend, precision, pool, spec, args.seed, n_threads, frozen)
        extra = f", {KeyBiasFrozen.frozen} key-bias elements frozen" if frozen else ""
        last = result[0][-1]["held_out_loss"]
        print(f"ran {name}: held-out loss {last:.6f} at step {args.steps} ({time.perf_counter() - start:.0f} s{extra})")
        for cand, ref, what in PAIRS:
            if (cand == name and ref in kept) or (ref == name and cand in kept):
                a, b = (result, kept[ref]) if cand == name else (kept[cand], result)
                print(f"\n{cand}  against  {ref}: {what}")
                print(
                    " step | loss reference | loss candidate |  gap (nats) | weights rel L2 | over the update"
                    " | key-bias share"
                )
                table = compare(a, b)
                for step, r, c, gap, rel, upd, key in table:
                    print(f"{step:5d} | {r:14.6f} | {c:14.6f} | {gap:11.3e} | {rel:14.3e} | {upd:15.3e} | {key:14.3f}")
                print(f"  worst gap {max(t[3] for t in table):.3e}; final weights rel L2 {table[-1][4]:.3e}\n")
        if reference:
            kept[name] = result
    print("done")


if __name__ == "__main__":
    main()
