#!/usr/bin/env bash
# One device call of issue 30's training bands (run from the checkout's root on the GPU machine).
# CELLS holds the real cells tokenized here (harness/diagnostics/expression_clusters.py labels the
# celltypist cells; gfqual tokenize --obs-columns expression_cluster): tok-celltypist-<variant> and
# tok-chr21-<variant>. The bands are accuracy runs, not timings, so they share the GPU: all run at
# once, each its own process (a launch-bound 10M model leaves the GPU mostly idle).
#   MLM:       celltypist + chr21 cells, fresh cells every step, 64 held out
#   classify:  celltypist cells, labels = expression clusters, 64 held out
#   fp8-block: the same classifier band at a lower and a higher learning rate (instability or defect?)
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
CELLS=${CELLS:-.wt-carry/band}
OUT=${OUT:-/tmp/out}
DEADLINE=${DEADLINE:-480}  # seconds every band may take, all together
RECIPES=${RECIPES:-bf16 fp8-delayed fp8-current fp8-block}
mkdir -p "$OUT/band"
band() {  # NAME VARIANT OBJECTIVE [more train-band arguments]
  local name=$1 v=$2 objective=$3
  shift 3
  local cells="$CELLS/tok-celltypist-$v" label=()
  [ "$objective" = mlm ] && cells="$cells $CELLS/tok-chr21-$v"
  [ "$objective" = classify ] && label=(--label-column expression_cluster)
  # shellcheck disable=SC2086
  timeout "$DEADLINE" python3 -m harness train-band --cells $cells --variant "$v" --objective "$objective" \
    "${label[@]}" --seeds 3 --steps 200 --out "$OUT/band/band-$name.json" "$@" >"$OUT/band/band-$name.log" 2>&1
  echo "band $name: exit $?"
}
# shellcheck disable=SC2086
{
  band V2-104M-classify V2-104M classify --precisions $RECIPES &
  band V2-104M-mlm V2-104M mlm --precisions $RECIPES &
  band V1-10M-classify V1-10M classify --precisions $RECIPES &
  band V1-10M-mlm V1-10M mlm --precisions $RECIPES &
  band V2-104M-classify-lr1e-4 V2-104M classify --precisions bf16 fp8-block --lr 1e-4 &
  band V2-104M-classify-lr2.5e-5 V2-104M classify --precisions bf16 fp8-block --lr 2.5e-5 &
  wait
}
