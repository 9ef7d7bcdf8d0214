#!/usr/bin/env bash
# Sensitivity to lambda1, lambda2 and mu, one at a time around the paper's
# (1, 0.1, 0.5): lambda1 in {0.5, 1, 2}, lambda2 in {0.05, 0.1, 0.5}, mu in {0.3, 0.5, 0.7}.
#   bash experiments/tables/sensitivity.sh [OVERRIDES...]
#   SENS_PARTS="lambda1 lambda2 mu" (default): the sweeps to run, one multirun each
#   (Hydra's basic sweeper takes products), under logs/tables/$EXPERIMENT/sensitivity/<part>
#   (each resumed or emptied: begin_runs; the others are kept). The centre (1, 0.1, 0.5) is SALAD's
#   runs (salad.sh, trained first unless REUSE_SALAD=1).
# The table reads every part there (each checked to be made with the same seeds,
# overrides and code); prints it and writes experiments/results/$EXPERIMENT/sensitivity.md.
# The paper reports no such sweep.
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/sensitivity
SENS_PARTS=${SENS_PARTS-lambda1 lambda2 mu}
declare -A VALUES=([lambda1]=0.5,2.0 [lambda2]=0.05,0.5 [mu]=0.3,0.7)
if do_runs; then
  for part in $SENS_PARTS; do
    [ -n "${VALUES[$part]:-}" ] || { echo "unknown part $part (lambda1, lambda2, mu)" >&2; exit 2; }
    begin_runs "$OUT/$part" "$@"
    salad -m experiment="$EXPERIMENT" seed="$SEEDS" "model.loss.$part=${VALUES[$part]}" \
      hydra.sweep.dir="$OUT/$part" "$@"
    run_args "$@" >"$OUT/$part/args.txt"
  done
fi
if do_table; then
  need_salad "$@"
  parts=()
  for part in lambda1 lambda2 mu; do
    if [ -d "$OUT/$part" ]; then
      check_args "$OUT/$part" "$@"
      parts+=("$OUT/$part")
    fi
  done
  table sensitivity model.loss.lambda1,model.loss.lambda2,model.loss.mu \
    "Sensitivity to λ1, λ2, µ" "${parts[@]}" -- "$@"
fi
