#!/usr/bin/env bash
# Sensitivity to lambda1, lambda2 and mu, one at a time around the paper's
# (1, 0.1, 0.5): lambda1 in {0.5, 1, 2}, lambda2 in {0.05, 0.1, 0.5}, mu in {0.3, 0.5, 0.7}.
#   SEEDS=0,1 bash experiments/tables/sensitivity.sh [OVERRIDES...]
# Hydra's basic sweeper takes products, so a one-at-a-time sweep is three multiruns
# (the default point runs once, in the first). Runs under
# logs/tables/$EXPERIMENT/sensitivity (removed first); prints the table and writes
# experiments/results/$EXPERIMENT/sensitivity.md. The paper reports no such sweep.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/sensitivity
rm -rf "$OUT"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" model.loss.lambda1=0.5,1.0,2.0 \
  hydra.sweep.dir="$OUT/lambda1" "$@"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" model.loss.lambda2=0.05,0.5 \
  hydra.sweep.dir="$OUT/lambda2" "$@"
salad -m experiment="$EXPERIMENT" seed="$SEEDS" model.loss.mu=0.3,0.7 \
  hydra.sweep.dir="$OUT/mu" "$@"
"$PYTHON" experiments/aggregate.py "$OUT" \
  --rows model.loss.lambda1,model.loss.lambda2,model.loss.mu \
  --paper sensitivity --markdown "$RESULTS/sensitivity.md" \
  --title "Sensitivity to λ1, λ2, µ, $EXPERIMENT" \
  --note "$(command_line sensitivity "$@")" --note "$(machine)" --note "$(code_line)"
