#!/usr/bin/env bash
# One device call of issue 28's measurements (run from the checkout's root on the GPU machine, with
# the tokenized 559 real celltypist cells in tok/real104 and tok/real10): PART selects what runs.
#   profile   torch.profiler of the embedding engine (harness/diagnostics/embed_profile.py)
#   startup   gfqual embed, default flags, V2-104M, 5,031 cells: once timed, once under -X importtime
#   workload  gfqual bench --workload embed (calibration, plain loops, FP8 beside bf16)
set -uo pipefail
# the device copy's .git can be stale (results then name an old commit, dirty): say what ran
: "${GFQUAL_COMMIT:?set GFQUAL_COMMIT (and GFQUAL_GIT_DIRTY=0) to the commit the checkout is at}"
export GFQUAL_COMMIT GFQUAL_GIT_DIRTY
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/logs"
repeat9() {  # the 559 tokenized cells repeated 9x: what tokenizing the 9x-concatenated .h5ad gives
  python3 - "$1" "$2" <<'PY'
import json, shutil, sys
from pathlib import Path
import pandas as pd
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
frame = pd.read_parquet(src).sort_values("cell_index")
big = pd.concat([frame] * 9, ignore_index=True)
big["cell_index"] = range(len(big))
big.to_parquet(dst / "part-000000.parquet", index=False)
summary = json.loads((src / "_summary.json").read_text())
(dst / "_summary.json").write_text(json.dumps({**summary, "cells": len(big), "repeated_from": str(src)}))
PY
}
repeat9 tok/real104 /tmp/real104x9
for part in ${PARTS:-profile startup workload}; do
  case $part in
  profile)
    python3 harness/diagnostics/embed_profile.py --cells tok/real10 --variant V1-10M --repeat-to 5031 \
      --backends te-packed hf-sdpa --max-tokens 1048576 262144 2>&1 | tee "$OUT/logs/profile-V1-10M.log" ;;
  startup)
    for i in ${STARTUP_RUNS:-1 2}; do
      s=$(date +%s.%N)
      python3 -m harness embed --input /tmp/real104x9 --variant V2-104M --out /tmp/e$i.h5ad --quiet \
        --json "$OUT/logs/embed-cli-V2-104M-$i.json" 2>&1 | tee -a "$OUT/logs/startup.log"
      echo "WALL run $i: $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" $s $(date +%s.%N)) s" | tee -a "$OUT/logs/startup.log"
    done
    [ -n "${IMPORTTIME-1}" ] && python3 -X importtime -m harness embed --input /tmp/real104x9 --variant V2-104M \
      --out /tmp/e3.h5ad --quiet 2> "$OUT/logs/importtime-embed-V2-104M.txt" | tee -a "$OUT/logs/startup.log" ;;
  workload)
    for v in ${VARIANTS:-V1-10M V2-104M V2-316M}; do
      cells=tok/real104; [ "$v" = V1-10M ] && cells=tok/real10
      python3 -m harness bench --workload embed --cells $cells --repeat-to 5031 --variants $v --backends hf-sdpa te-packed \
        --out "$OUT/logs/workload-embed-$v.json" 2>&1 | tee "$OUT/logs/workload-$v.log"
    done ;;
  fp8)  # TE's FP8 recipe beside bf16 (no plain loops: they run at bf16)
    for v in ${FP8_VARIANTS:-V2-316M}; do
      cells=tok/real104; [ "$v" = V1-10M ] && cells=tok/real10
      python3 -m harness bench --workload embed --cells $cells --repeat-to 5031 --variants $v --backends te-packed \
        --precisions fp8-delayed --no-plain-loops --out "$OUT/logs/workload-embed-$v-fp8.json" 2>&1 | tee "$OUT/logs/workload-$v-fp8.log"
    done ;;
  esac
done
tar -C "$OUT" -czf "$OUT/logs.tgz" logs && rm -rf "$OUT/logs"
