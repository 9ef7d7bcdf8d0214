#!/usr/bin/env bash
# Table 6 (the self-assessment target y): SALAD's against max_score / p > 0.5 / tIoU > mu.
#   bash experiments/tables/target.sh [OVERRIDES...]
# One multirun under logs/tables/$EXPERIMENT/target (removed first); prints the table
# and writes experiments/results/$EXPERIMENT/target.md.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/target
rm -rf "$OUT"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" \
  ablation=salad,target_max_score,target_score_gt_half,target_iou_gt_mu \
  hydra.sweep.dir="$OUT" "$@"
"$PYTHON" experiments/aggregate.py "$OUT" --rows model.loss.target \
  --paper target --markdown "$RESULTS/target.md" \
  --title "Table 6: self-assessment target, $EXPERIMENT" \
  --note "$(command_line target "$@")" --note "$(machine)" --note "$(code_line)"
