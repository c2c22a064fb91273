"""Where an embedding pass's wall time goes (issue 28): torch.profiler over one ``extract`` pass of
``gfqual embed``'s engine, per backend, at a given budget, on real cells repeated to N.

Prints the wall time, the GPU's kernel time (busy share), the host-side operations that take the
most time, the kernels that take the most, and the time to build the batch plan alone (host work
done before the first forward). Run on the GPU machine:

    python harness/diagnostics/embed_profile.py --cells TOKENIZED --variant V1-10M \
        --backends te-packed hf-sdpa --max-tokens 1048576 262144
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from harness.backends import build_backend
from harness.data.stream import read_tokenized
from harness.embeddings import batch_plan, extract
from harness.precision import get_precision
from models.hf import random_hf_model
from models.registry import get_variant


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", required=True)
    ap.add_argument("--variant", default="V1-10M")
    ap.add_argument("--backends", nargs="+", default=["te-packed", "hf-sdpa"])
    ap.add_argument("--max-tokens", nargs="+", type=int, default=[1 << 20])
    ap.add_argument("--repeat-to", type=int, default=5031)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    variant = get_variant(args.variant)
    pool = list(read_tokenized(args.cells, variant)["input_ids"])
    cells = [pool[i % len(pool)] for i in range(args.repeat_to)]
    source = random_hf_model(variant, 0)
    for name in args.backends:
        backend = build_backend(name, source, get_precision("bf16"))
        for budget in args.max_tokens:
            extract(backend, cells, variant, max_tokens=budget)  # warm: shapes met, plans built
            torch.cuda.synchronize()
            start = time.perf_counter()
            plan = batch_plan(backend, cells, variant, None, budget)
            plan_s = time.perf_counter() - start
            start = time.perf_counter()
            extract(backend, cells, variant, max_tokens=budget)
            plain_s = time.perf_counter() - start
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                start = time.perf_counter()
                extract(backend, cells, variant, max_tokens=budget)
                wall = time.perf_counter() - start
            events = prof.key_averages()
            on_gpu = [e for e in events if e.device_type == DeviceType.CUDA]  # kernels and copies, each once
            kernels = sum(e.self_device_time_total for e in on_gpu) / 1e6
            print(
                f"PROFILE {args.variant} {name} budget {budget}: {len(plan)} batches, {len(cells)} cells; "
                f"unprofiled pass {plain_s:.3f} s ({len(cells) / plain_s:.0f} cells/s); profiled wall {wall:.3f} s, "
                f"kernels {kernels:.3f} s (busy {kernels / wall:.0%}); batch plan alone {plan_s:.3f} s"
            )
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
                print(f"   cpu {e.self_cpu_time_total / 1e3:9.1f} ms x {e.count:5d} {e.key[:90]}")
            for e in sorted(on_gpu, key=lambda e: -e.self_device_time_total)[: args.top]:
                print(f"   gpu {e.self_device_time_total / 1e3:9.1f} ms x {e.count:5d} {e.key[:90]}")
        del backend
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
