#!/usr/bin/env bash
# Table 2's SALAD + P-GCN row: P-GCN trained on each seed's SALAD proposals (salad.sh's
# runs), paired with SALAD seed by seed, next to the paper's differences; the peer row
# (ActionFormer, trained and run by its own code on the same videos) when
# experiments/peer/actionformer.sh has made it.
#   bash experiments/tables/pgcn.sh [OVERRIDES...]
# SALAD's runs: salad.sh (trained first, unless REUSE_SALAD=1). Per seed: mode=proposals
# from SALAD's checkpoint (into its run folder's proposals/), then experiment=pgcn on that
# run (its data), under logs/tables/$EXPERIMENT/pgcn/seed<s> (kept when finished: the
# script resumes). Prints the table and writes experiments/results/$EXPERIMENT/pgcn.md.
# PGCN_OVERRIDES: more overrides of the P-GCN runs only (e.g. trainer.max_epochs=...).
source "$(dirname "$0")/_common.sh"
OUT=$TABLES/pgcn
PGCN_OVERRIDES=${PGCN_OVERRIDES:-}
if do_runs; then
  need_salad "$@"
  mkdir -p "$OUT"
  for s in ${SEEDS//,/ }; do
    run=$(dirname "$(dirname "$(realpath "$SALAD_RUNS/checkpoints/salad_seed$s.ckpt")")")
    if [ ! -f "$run/proposals/test.json" ]; then
      salad experiment="$EXPERIMENT" seed="$s" mode=proposals \
        "ckpt_path=$run/checkpoints/last.ckpt" hydra.run.dir="$OUT/proposals_seed$s" "$@"
    fi
    [ -f "$OUT/seed$s/metrics.json" ] && continue
    rm -rf "$OUT/seed$s"
    # shellcheck disable=SC2086
    salad experiment=pgcn proposals="$run" seed="$s" hydra.run.dir="$OUT/seed$s" $PGCN_OVERRIDES
  done
  run_args "$@" "PGCN_OVERRIDES=$PGCN_OVERRIDES" >"$OUT/args.txt"
fi
if do_table; then
  need_salad "$@"
  check_args "$OUT" "$@" "PGCN_OVERRIDES=$PGCN_OVERRIDES"
  notes=(--note "The paper's differences, SALAD + P-GCN minus SALAD: +1.9 / +2.7 / +3.7 / +4.6 / +5.2 at tIoU 0.1-0.5.")
  peer=$TABLES/peer/actionformer
  if compgen -G "$peer/seed*/metrics.json" >/dev/null; then
    notes+=(--note "$(peer_line "$peer")")
  fi
  aggregate "$SALAD_RUNS" "$OUT" --rows model._target_ --paper pgcn \
    --markdown "$RESULTS/pgcn.md" --title "Table 2: SALAD + P-GCN, $EXPERIMENT" \
    "${notes[@]}" --note "$(command_line pgcn "$@")" --note "$(machine)" --note "$(code_line)"
fi
