#!/usr/bin/env bash
# Table 7 (score fusion, post-processing only): each seed's SALAD checkpoint from
# pruning.sh re-tested with the regression score alone and the three fusions.
#   bash experiments/tables/pruning.sh && bash experiments/tables/fusion.sh [OVERRIDES...]
# One multirun (mode=test) under logs/tables/$EXPERIMENT/fusion (removed first); prints
# the table and writes experiments/results/$EXPERIMENT/fusion.md.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/fusion
CKPTS=$TABLES/pruning/checkpoints
for s in ${SEEDS//,/ }; do
  [ -e "$CKPTS/salad_seed$s.ckpt" ] || { echo "no $CKPTS/salad_seed$s.ckpt: run pruning.sh first" >&2; exit 1; }
done
rm -rf "$OUT"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" mode=test \
  ablation=salad,fusion_arithmetic,fusion_geometric,fusion_normalized_product \
  "ckpt_path=$CKPTS/salad_seed\${seed}.ckpt" \
  hydra.sweep.dir="$OUT" "$@"
"$PYTHON" experiments/aggregate.py "$OUT" --rows model.postprocess.fusion \
  --paper fusion --markdown "$RESULTS/fusion.md" \
  --title "Table 7: score fusion, $EXPERIMENT" \
  --note "$(command_line fusion "$@")" --note "$(machine)" --note "$(code_line)"
