#!/usr/bin/env bash
# Every table, two trainings at a time (one per CPU core on a 2-core machine):
#   (pruning.sh, then fusion.sh on its checkpoints) || (target.sh, then sensitivity.sh)
#   bash experiments/tables/all.sh [OVERRIDES...]
# Sensitivity runs seeds $SENS_SEEDS (default 0,1); the others $SEEDS (default 0,1,2).
# Each script's output goes to logs/tables/$EXPERIMENT/<table>.log; the tables are
# printed at the end and written under experiments/results/$EXPERIMENT/.
source "$(dirname "$0")/_common.sh"
mkdir -p "$TABLES"
bash experiments/tables/prepare.sh
here=experiments/tables
(bash $here/pruning.sh "$@" >"$TABLES/pruning.log" 2>&1 &&
  bash $here/fusion.sh "$@" >"$TABLES/fusion.log" 2>&1) &
a=$!
(bash $here/target.sh "$@" >"$TABLES/target.log" 2>&1 &&
  SEEDS=${SENS_SEEDS:-0,1} bash $here/sensitivity.sh "$@" >"$TABLES/sensitivity.log" 2>&1) &
b=$!
status=0
wait $a || status=$?
wait $b || status=$?
for t in pruning target fusion sensitivity; do
  [ -f "$RESULTS/$t.md" ] && { cat "$RESULTS/$t.md"; echo; }
done
exit $status
