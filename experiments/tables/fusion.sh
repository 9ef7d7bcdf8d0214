#!/usr/bin/env bash
# Table 7 (score fusion, post-processing only): each seed's SALAD checkpoint
# (salad.sh) re-tested with the three fusions; the "regression score only" row is
# the SALAD runs' own test.
#   bash experiments/tables/salad.sh [OVERRIDES...] && bash experiments/tables/fusion.sh [OVERRIDES...]
# Never trains: the SALAD runs must be there, made with the same SEEDS and overrides.
# One multirun (mode=test) under logs/tables/$EXPERIMENT/fusion (resumed or emptied:
# begin_runs); prints
# the table and writes experiments/results/$EXPERIMENT/fusion.md.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/fusion
REUSE_SALAD=1
if do_runs; then
  need_salad "$@"
  begin_runs "$OUT" "$@"
  salad -m experiment="$EXPERIMENT" seed="$SEEDS" mode=test \
    ablation=fusion_arithmetic,fusion_geometric,fusion_normalized_product \
    "ckpt_path=$SALAD_RUNS/checkpoints/salad_seed\${seed}.ckpt" \
    hydra.sweep.dir="$OUT" "$@"
  run_args "$@" >"$OUT/args.txt"
fi
if do_table; then
  need_salad "$@"
  check_args "$OUT" "$@"
  table fusion model.postprocess.fusion "Table 7: score fusion" "$OUT" -- "$@"
fi
