#!/usr/bin/env bash
# Table 6 (the self-assessment target y): SALAD's against max_score / p > 0.5 / tIoU > mu.
#   bash experiments/tables/target.sh [OVERRIDES...]
# SALAD's runs: salad.sh (trained first, unless REUSE_SALAD=1). The other rows: one
# multirun under logs/tables/$EXPERIMENT/target (resumed or emptied: begin_runs); prints the table and
# writes experiments/results/$EXPERIMENT/target.md.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/target
if do_runs; then
  begin_runs "$OUT" "$@"
  salad -m experiment="$EXPERIMENT" seed="$SEEDS" \
    ablation=target_max_score,target_score_gt_half,target_iou_gt_mu \
    hydra.sweep.dir="$OUT" "$@"
  run_args "$@" >"$OUT/args.txt"
fi
if do_table; then
  need_salad "$@"
  check_args "$OUT" "$@"
  table target model.loss.target "Table 6: self-assessment target" "$OUT" -- "$@"
fi
