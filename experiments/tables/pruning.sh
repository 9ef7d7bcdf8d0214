#!/usr/bin/env bash
# Table 5 (who regresses): SALAD's greedy pruning against none / top-1 tIoU / random,
# and alpha frozen from each seed's SALAD run then re-learned from scratch.
#   bash experiments/tables/pruning.sh [OVERRIDES...]
# Runs under logs/tables/$EXPERIMENT/pruning (removed first), prints the table and
# writes experiments/results/$EXPERIMENT/pruning.md. fusion.sh re-tests the SALAD
# checkpoints this leaves in logs/tables/$EXPERIMENT/pruning/checkpoints.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/pruning
rm -rf "$OUT"

# 1. the four learned rows x seeds: one multirun
salad -m experiment="$EXPERIMENT" seed="$SEEDS" \
  ablation=salad,pruning_none,pruning_top1_iou,pruning_random \
  hydra.sweep.dir="$OUT/main" "$@"

# 2. each seed's SALAD checkpoint under a name a multirun can interpolate
mkdir -p "$OUT/checkpoints" "$OUT/alpha"
"$PYTHON" experiments/aggregate.py "$OUT/main" --rows model.loss.pruning --list |
  while IFS=$'\t' read -r row seed folder _; do
    if [ "$row" = salad ]; then
      ln -sfn "$(realpath "$folder/checkpoints/last.ckpt")" "$OUT/checkpoints/salad_seed$seed.ckpt"
    fi
  done

# 3. the frozen row: export alpha from seed s's SALAD run, re-learn seed s with it
salad -m experiment="$EXPERIMENT" seed="$SEEDS" mode=export_alpha \
  "ckpt_path=$OUT/checkpoints/salad_seed\${seed}.ckpt" \
  "alpha_output=$OUT/alpha/seed\${seed}.npz" \
  hydra.sweep.dir="$OUT/alpha_export" "$@"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" ablation=pruning_frozen \
  "model.frozen_alpha_path=$OUT/alpha/seed\${seed}.npz" \
  hydra.sweep.dir="$OUT/frozen" "$@"

"$PYTHON" experiments/aggregate.py "$OUT/main" "$OUT/frozen" --rows model.loss.pruning \
  --paper pruning --markdown "$RESULTS/pruning.md" \
  --title "Table 5: pruning (who regresses), $EXPERIMENT" \
  --note "$(command_line pruning "$@")" --note "$(machine)" --note "$(code_line)"
