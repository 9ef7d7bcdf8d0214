#!/usr/bin/env bash
# SALAD itself (ablation=salad) with each seed: the reference row of every table,
# trained once. Table 5's SALAD row, Table 6's, Table 7's "regression score only"
# (these runs' own test) and the sensitivity's centre (1, 0.1, 0.5) all read these runs;
# the frozen-alpha row and the fusion re-tests start from their checkpoints.
#   bash experiments/tables/salad.sh [OVERRIDES...]
# One multirun under logs/tables/$EXPERIMENT/salad (resumed when begun with the same
# settings and code, else emptied first: _common.sh's begin_runs); leaves
# checkpoints/salad_seed<s>.ckpt (links to each seed's last.ckpt) and, last, args.txt
# (seeds, overrides, code), by which the table scripts check that they pair with
# runs made the same way (REUSE_SALAD=1).
source "$(dirname "$0")/_common.sh"
OUT=$SALAD_RUNS
begin_runs "$OUT" "$@"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" ablation=salad hydra.sweep.dir="$OUT" "$@"
mkdir -p "$OUT/checkpoints"
aggregate "$OUT" --rows model.loss.pruning --list |
  while IFS=$'\t' read -r _ seed folder _; do
    ln -sfn "$(realpath "$folder/checkpoints/last.ckpt")" "$OUT/checkpoints/salad_seed$seed.ckpt"
  done
for s in ${SEEDS//,/ }; do
  [ -e "$OUT/checkpoints/salad_seed$s.ckpt" ] || { echo "no SALAD run for seed $s" >&2; exit 1; }
done
run_args "$@" >"$OUT/args.txt"
