#!/usr/bin/env bash
# Every table, two trainings at a time (one per CPU core on a 2-core machine):
#   stream A: salad.sh (SALAD x seeds), pruning.sh's runs, fusion.sh's re-tests,
#             sensitivity.sh's lambda1 runs
#   stream B: target.sh's runs, sensitivity.sh's lambda2 and mu runs
# then the four tables, every one paired with the same SALAD runs.
#   bash experiments/tables/all.sh [OVERRIDES...]
# With 5 seeds: 70 trainings (SALAD 5; Table 5 20; Table 6 15; sensitivity 30), 35 a
# stream, plus 5 alpha exports and 15 fusion re-tests (mode=test). Each script's output
# goes to logs/tables/$EXPERIMENT/<script>.log; the tables are printed at the end and
# written under experiments/results/$EXPERIMENT/, with all.md: when, how long, the load.
source "$(dirname "$0")/_common.sh"
export MADE_BY="bash experiments/tables/all.sh" EXPERIMENT SEEDS PYTHON
mkdir -p "$TABLES" "$RESULTS"
here=experiments/tables
t0=$(date +%s)
started=$(date '+%Y-%m-%d %H:%M:%S %Z')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
bash $here/prepare.sh
(
  export STEP=runs REUSE_SALAD=1
  bash $here/salad.sh "$@" >"$TABLES/salad.log" 2>&1
  bash $here/pruning.sh "$@" >"$TABLES/pruning.log" 2>&1
  bash $here/fusion.sh "$@" >"$TABLES/fusion.log" 2>&1
  SENS_PARTS=lambda1 bash $here/sensitivity.sh "$@" >"$TABLES/sensitivity_lambda1.log" 2>&1
) &
a=$!
(
  export STEP=runs REUSE_SALAD=1
  bash $here/target.sh "$@" >"$TABLES/target.log" 2>&1
  SENS_PARTS="lambda2 mu" bash $here/sensitivity.sh "$@" >"$TABLES/sensitivity_lambda2_mu.log" 2>&1
) &
b=$!
status=0
wait $a || { status=$?; echo "stream A (salad, pruning, fusion, lambda1) failed: see $TABLES/*.log" >&2; }
wait $b || { status=$?; echo "stream B (target, lambda2, mu) failed: see $TABLES/*.log" >&2; }
t1=$(date +%s)
for t in pruning target fusion sensitivity; do
  STEP=table bash $here/$t.sh "$@" >"$TABLES/$t.table.log" 2>&1 || {
    status=1
    echo "no $t table: see $TABLES/$t.table.log" >&2
  }
done
minutes=$(echo "scale=1; ($t1 - $t0) / 60" | bc)
{
  echo "# all.sh, $EXPERIMENT"
  echo
  echo "- $(command_line all "$@" | sed 's/ (this table.*//')"
  echo "- $(machine)"
  echo "- $(code_line)"
  echo "- started $started; the runs took $minutes minutes (prepare.sh included, the tables after them not)"
  echo "- load average (1, 5, 15 min) at the start: $load0; at the end of the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- seeds $SEEDS; exit status $status"
} >"$RESULTS/all.md"
for t in pruning target fusion sensitivity; do
  [ -f "$RESULTS/$t.md" ] && { cat "$RESULTS/$t.md"; echo; }
done
cat "$RESULTS/all.md"
exit $status
