"""Diagnostic behind issue 30 item 2: why fp8-block's V2-104M classifier trajectory diverges.

``gfqual train-parity --objectives classify`` (H200, 44c66d7) fine-tunes V2-104M's seeded random
weights with a seeded head on one batch of 4 synthetic cells (256 tokens, 3 seeded labels),
repeated for 100 AdamW steps (lr 5e-5, 10 warm-up steps). fp8-block learned the labels by step 16
(loss 0.005), spiked to 3.5 nats at step 26 and ended at ln 2; HF, TE bf16, fp8-delayed and
fp8-current ended near 3e-4. A TE defect, or an instability that bf16 would show too at a higher
learning rate? This runs the same case (``training_parity``'s batch, labels, head and optimizer)
as *arms*, each ``NAME=BACKEND:PRECISION:LR[:OPTION,...]``, over seeds (each seed: its own random
weights, cells, labels and head, as ``gfqual train-parity --seed``), and records per step:

* the loss, and each layer's gradient and weight norm (``training_band.layer_norms``);
* each layer's largest |value| entering its GEMMs: activations, the gradients arriving at each
  linear module's output, and the weights. Block scaling has no amax history: each 1x128 (or
  128x128 weight) block's scale is set from that block's amax on every call, so these maxima are
  the largest scales' inputs;
* the gradient's error at the run's own weights: every step the same loss is differentiated again
  in fp32 (a second copy of the model, its weights copied in), and each layer's relative L2 of
  the run's gradient from that one is recorded. It says whether quantization noise swamps the
  gradient signal before the blow-up (the signal shrinks as the batch is memorized; the noise of
  a quantized GEMM does not).

Recipe options (TE 2.20's own recipe fields) take the recipe apart: ``format=HYBRID`` (E5M2
gradients, as fp8-delayed and fp8-current use, where fp8-block quantizes gradients to E4M3),
``backward=high_precision`` (the backward in bf16 from the unquantized operands: only the forward
is FP8), ``scales=fp32`` (block scales not rounded to powers of 2), ``format=E4M3`` on
fp8-current (per-tensor E4M3 gradients). The default arms: the reference (HF bf16, mixed), TE bf16
at 1x, 2x and 4x the rate, fp8-block at 1x, 1/2 and 1/4, fp8-delayed and fp8-current, and the
four ablations. Every run is one line of ``--out`` (a .jsonl.gz; the first line is the
environment), written when it ends, so a run cut short keeps the runs before it; ``--plot``
draws the loss, gradient-norm, amax and gradient-error curves of one seed from such a file.

On a GPU (TE), from the repository root, e.g.:

    NVIDIA_TF32_OVERRIDE=0 PYTHONPATH=. python harness/diagnostics/fp8_block_divergence.py \
        --seeds 0 1 2 --out $OUT/fp8-block-divergence.jsonl.gz > $OUT/fp8-block-divergence.log
    PYTHONPATH=. python harness/diagnostics/fp8_block_divergence.py \
        --plot results/h200/profiles/fp8-block-divergence.jsonl.gz --seed 0 --png FIG.png
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import time
from pathlib import Path

import torch

from harness.backends import build_backend
from harness.data.synthetic import synthetic_batch
from harness.environment import environment
from harness.parity.training_band import grouped_square_sums, layer_group, layer_norms
from harness.precision import get_precision, make_recipe
from harness.reasons import error_reason
from harness.training import LR, Trainee, adamw
from models.hf import random_hf_model
from models.registry import get_variant

DEFAULT_ARMS = [
    f"hf-bf16=hf-eager:bf16:{LR}",
    f"te-bf16=te:bf16:{LR}",
    f"te-bf16-lr2x=te:bf16:{2 * LR}",
    f"te-bf16-lr4x=te:bf16:{4 * LR}",
    f"block=te:fp8-block:{LR}",
    f"block-lr0.5x=te:fp8-block:{LR / 2}",
    f"block-lr0.25x=te:fp8-block:{LR / 4}",
    f"delayed=te:fp8-delayed:{LR}",
    f"current=te:fp8-current:{LR}",
    f"block-hybrid=te:fp8-block:{LR}:format=HYBRID",
    f"block-bwd-bf16=te:fp8-block:{LR}:backward=high_precision",
    f"block-fp32-scales=te:fp8-block:{LR}:scales=fp32",
    f"current-e4m3=te:fp8-current:{LR}:format=E4M3",
]
CELLS, LENGTH, STEPS = 4, 256, 100  # training_parity's classify trajectory on a GPU (gfqual train-parity --steps 100)


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    backend: str
    precision: str
    lr: float
    options: tuple[str, ...] = ()


def parse_arm(text: str) -> Arm:
    name, _, rest = text.partition("=")
    backend, precision, lr, *options = rest.split(":")
    return Arm(name, backend, precision, float(lr), tuple(o for part in options for o in part.split(",") if o))


def recipe_for(arm: Arm):
    """The precision's own recipe (``harness.precision.make_recipe``) with the arm's options."""
    precision = get_precision(arm.precision)
    if not arm.options:
        return make_recipe(precision) if precision.is_fp8 else None
    from transformer_engine.common import recipe as te_recipe

    fields: dict = {}
    fp32_scales = False
    for option in arm.options:
        key, _, value = option.partition("=")
        if key == "format":
            fields["fp8_format"] = te_recipe.Format[value]
        elif key == "backward":
            fields["backward_override"] = value
        elif key == "scales" and value == "fp32":
            fp32_scales = True
        else:
            raise SystemExit(f"arm {arm.name}: unknown option {option!r} (format=, backward=, scales=fp32)")
    recipe = dataclasses.replace(make_recipe(precision), **fields)
    if fp32_scales:  # class attributes of Float8BlockScaling, read when its quantizers are made
        for attr in ("fp8_quant_fwd_inp", "fp8_quant_fwd_weight", "fp8_quant_bwd_grad"):
            setattr(recipe, attr, dataclasses.replace(getattr(recipe, attr), power_2_scale=False))
    return recipe


class Amax:
    """Per layer, the largest |value| entering the linear modules' GEMMs in one step: activations
    (a module's input), gradients (arriving at its output) and weights; kept on the device and
    read once a step."""

    KINDS = ("act", "grad", "weight")

    def __init__(self, model: torch.nn.Module):
        self.handles, self.step_values, self.error = [], {k: {} for k in self.KINDS}, None
        self.modules = [(layer_group(n), m) for n, m in model.named_modules() if type(m).__name__ == "Linear"]
        for group, module in self.modules:
            self.handles.append(module.register_forward_hook(self._hook(group)))

    def _note(self, kind: str, group: str, tensor: torch.Tensor) -> None:
        value = tensor.detach().abs().amax().float()
        old = self.step_values[kind].get(group)
        self.step_values[kind][group] = value if old is None else torch.maximum(old, value)

    def _hook(self, group: str):
        def hook(_module, args, output):
            try:
                if args and isinstance(args[0], torch.Tensor):
                    self._note("act", group, args[0])
                out = output[0] if isinstance(output, tuple) else output
                if isinstance(out, torch.Tensor) and out.requires_grad:
                    out.register_hook(lambda g: self._note("grad", group, g))
            except Exception as exc:  # an observer must not stop the run it observes: the first failure is kept
                self.error = self.error or error_reason(exc)

        return hook

    def read(self) -> dict[str, dict[str, float]]:
        """This step's values by kind and layer (one host copy), then reset."""
        for group, module in self.modules:
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                self._note("weight", group, weight)
        keys = [(k, g) for k in self.KINDS for g in sorted(self.step_values[k])]
        values = torch.stack([self.step_values[k][g] for k, g in keys]).tolist() if keys else []
        self.step_values = {k: {} for k in self.KINDS}
        out: dict[str, dict[str, float]] = {k: {} for k in self.KINDS}
        for (k, g), v in zip(keys, values):
            out[k][g] = v
        return out


def gradient_error(trainee: Trainee, shadow: Trainee, batch, step: int) -> dict[str, float]:
    """Each layer's relative L2 of ``trainee``'s current gradient from the fp32 gradient of the
    same loss at the same weights (``shadow``: the same model and head in fp32)."""
    with torch.no_grad():
        mine = trainee.named_parameters()
        for name, p in shadow.named_parameters().items():
            p.copy_(mine[name])
            p.grad = None
    shadow.loss(batch, step).backward()
    groups, sums = grouped_square_sums(
        (name, (mine[name].grad.float() - p.grad.float(), p.grad))
        for name, p in shadow.named_parameters().items()
        if p.grad is not None and mine[name].grad is not None
    )
    values = sums.tolist()
    total = math.sqrt(sum(d for d, _ in values) / max(sum(r for _, r in values), 1e-300))
    return {"all": total, **{g: math.sqrt(d / r) if r > 0 else float("nan") for g, (d, r) in zip(groups, values)}}


def run_arm(arm: Arm, model, variant, seed: int, steps: int, cells: int, length: int, probe: bool) -> dict:
    """One trajectory of ``arm`` from ``model``'s weights: a row of per-step lists."""
    precision = get_precision(arm.precision)
    backend = build_backend(arm.backend, model, precision, training=True)
    backend._recipe = recipe_for(arm)  # the arm's recipe options (a fresh recipe object either way)
    trainee = Trainee(backend, "classify", variant, seed)
    shadow = None
    if probe:
        fp32 = build_backend(arm.backend, model, get_precision("fp32"), training=True)
        shadow = Trainee(fp32, "classify", variant, seed)
    batch = synthetic_batch(variant, cells, length, seed, multiple=precision.token_multiple)
    optimizer, schedule = adamw(trainee.named_parameters().values(), steps, arm.lr)
    amax = Amax(backend.model)
    row: dict = {"loss": [], "grad_norm": [], "weight_norm": [], "grad_error": [], "amax": []}
    started = time.perf_counter()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = trainee.loss(batch, step)
        loss.backward()
        if shadow is not None:
            try:
                row["grad_error"].append(gradient_error(trainee, shadow, batch, step))
            except Exception as exc:  # recorded; the trajectory goes on without the probe
                row["probe_error"], shadow = error_reason(exc), None
        if shadow is None:
            row["grad_error"].append(None)
        norms = layer_norms(trainee)  # gradients of this step, weights before its update
        optimizer.step()
        schedule.step()
        row["loss"].append(float(loss.detach()))
        row["grad_norm"].append({g: v[0] for g, v in norms.items()})
        row["weight_norm"].append({g: v[1] for g, v in norms.items()})
        row["amax"].append(amax.read())
    row["seconds"] = time.perf_counter() - started
    row["amax_error"] = amax.error
    row["attention_backend"] = backend.attention_backend
    row["recipe"] = repr(backend._recipe) if backend._recipe is not None else None
    return row


def summary(row: dict) -> str:
    """min loss (step) · largest later rise (step) · final loss · gradient error before the min."""
    if row.get("error"):
        return f"ERROR {row['error']}"
    losses = row["loss"]
    low = min(range(len(losses)), key=losses.__getitem__)
    peak = max(range(low, len(losses)), key=losses.__getitem__)
    errs = [e["all"] for e in row["grad_error"][max(0, low - 3) : low + 1] if e]
    err = f" · gradient error near the min {max(errs):.3g}" if errs else ""
    return (
        f"min {losses[low]:.4g} at {low} · then up to {losses[peak]:.4g} at {peak} · "
        f"final {losses[-1]:.4g}{err} · {row['seconds']:.1f} s"
    )


def main_run(args) -> None:
    variant = get_variant(args.variant)
    arms = [a for a in map(parse_arm, args.arms) if not args.only or a.name in args.only]
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite or another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = environment()
    print(
        f"fp8-block divergence on {env['gpu_name'] or 'cpu'}, TE {env['te']}, commit {env['git_commit']}: "
        f"{args.variant}, {args.cells} cells x {args.length} tokens, {args.steps} steps, seeds {args.seeds}; "
        "random weights (seeded), synthetic cells"
    )
    with gzip.open(out, "wt") as f:
        f.write(json.dumps({"env": env, "cells": args.cells, "length": args.length, "steps": args.steps}) + "\n")
        f.flush()
        for seed in args.seeds:
            model = random_hf_model(variant, seed)
            for arm in arms:
                base = {"seed": seed, **dataclasses.asdict(arm)}
                try:
                    run = run_arm(arm, model, variant, seed, args.steps, args.cells, args.length, not args.no_probe)
                    row = {**base, **run}
                except Exception as exc:  # a run that cannot train is a finding: recorded, the rest go on
                    row = {**base, "error": error_reason(exc)}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(f"seed {seed} {arm.name:<18} {summary(row)}", flush=True)
                f.write(json.dumps(row) + "\n")
                f.flush()


def main_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with gzip.open(args.plot, "rt") as f:
        head = json.loads(f.readline())
        rows = [r for r in map(json.loads, f) if r["seed"] == args.seed and not r.get("error")]
    names = args.plot_arms or [r["name"] for r in rows]
    rows = [r for r in rows if r["name"] in names]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), sharex=True)
    (ax_loss, ax_err), (ax_grad, ax_amax) = axes
    for r in rows:
        steps = range(len(r["loss"]))
        ax_loss.semilogy(steps, r["loss"], label=f"{r['name']} (lr {r['lr']:.3g})")
        if r["grad_error"][0]:
            ax_err.semilogy(steps, [e["all"] for e in r["grad_error"]], label=r["name"])
        ax_grad.semilogy(steps, [math.sqrt(sum(v * v for v in g.values())) for g in r["grad_norm"]], label=r["name"])
        ax_amax.semilogy(steps, [max(a["grad"].values(), default=float("nan")) for a in r["amax"]], label=r["name"])
    ax_loss.set_title("training loss (the repeated batch)")
    ax_err.set_title("gradient's relative L2 from fp32's, at the run's own weights")
    ax_grad.set_title("gradient norm (all parameters)")
    ax_amax.set_title("largest |gradient| arriving at a linear module's output")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    ax_loss.legend(fontsize=7)
    env = head["env"]
    fig.suptitle(
        f"V2-104M classifier, one batch of {head['cells']} cells x {head['length']} tokens, seed {args.seed}; "
        f"random weights; {env['gpu_name']}, TE {env['te']}, commit {(env['git_commit'] or '')[:7]}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="V2-104M")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help="NAME=BACKEND:PRECISION:LR[:OPTION,...]")
    ap.add_argument("--only", nargs="*", help="run only the arms of these names")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--cells", type=int, default=CELLS)
    ap.add_argument("--length", type=int, default=LENGTH)
    ap.add_argument("--no-probe", action="store_true", help="skip the fp32 gradient at each step")
    ap.add_argument("--out", help="the runs, .jsonl.gz")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--plot", help="a --out file to draw instead of running")
    ap.add_argument("--seed", type=int, default=0, help="the seed --plot draws")
    ap.add_argument("--plot-arms", nargs="*", help="the arms --plot draws (default: all)")
    ap.add_argument("--png")
    args = ap.parse_args()
    if args.plot:
        main_plot(args)
    elif args.out:
        main_run(args)
    else:
        ap.error("give --out (run) or --plot FILE --png PNG (draw)")


if __name__ == "__main__":
    main()
