#!/usr/bin/env bash
# Table 5 (who regresses): SALAD's greedy pruning against none / top-1 tIoU / random,
# and alpha frozen from each seed's SALAD run then re-learned from scratch.
#   bash experiments/tables/pruning.sh [OVERRIDES...]
# SALAD's runs: salad.sh (trained first, unless REUSE_SALAD=1). Runs go under
# logs/tables/$EXPERIMENT/pruning (resumed or emptied: begin_runs); prints the table and writes
# experiments/results/$EXPERIMENT/pruning.md.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/pruning
if do_runs; then
  need_salad "$@"
  begin_runs "$OUT" "$@"
  mkdir -p "$OUT/alpha"
  # 1. the three learned rows x seeds: one multirun
  salad -m experiment="$EXPERIMENT" seed="$SEEDS" \
    ablation=pruning_none,pruning_top1_iou,pruning_random \
    hydra.sweep.dir="$OUT/main" "$@"
  # 2. the frozen row: export alpha from seed s's SALAD run, re-learn seed s with it
  salad -m experiment="$EXPERIMENT" seed="$SEEDS" mode=export_alpha \
    "ckpt_path=$SALAD_RUNS/checkpoints/salad_seed\${seed}.ckpt" \
    "alpha_output=$OUT/alpha/seed\${seed}.npz" \
    hydra.sweep.dir="$OUT/alpha_export" "$@"
  salad -m experiment="$EXPERIMENT" seed="$SEEDS" ablation=pruning_frozen \
    "model.frozen_alpha_path=$OUT/alpha/seed\${seed}.npz" \
    hydra.sweep.dir="$OUT/frozen" "$@"
  run_args "$@" >"$OUT/args.txt"
fi
if do_table; then
  need_salad "$@"
  check_args "$OUT" "$@"
  table pruning model.loss.pruning "Table 5: pruning (who regresses)" \
    "$OUT/main" "$OUT/frozen" -- "$@"
fi
