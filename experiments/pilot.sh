#!/usr/bin/env bash
# The benchmark pilot: SALAD runs only (ablation=salad), two at a time as all.sh runs
# them, to choose the benchmark of experiment=thumos_shaped_regime (experiments/README.md).
#   SEEDS="0 1 2" bash experiments/pilot.sh CANDIDATES_FILE
# CANDIDATES_FILE: one candidate a line, "NAME OVERRIDES..." (Hydra overrides of
# experiment=thumos_shaped_cpu, e.g. "a2 dataset.root=data_cache/pilot_a2"); lines
# starting with # are skipped. Every (candidate, seed) is one job; the jobs run two
# at a time, in file order, seed-major. Each run goes to logs/pilot/NAME/seed<s>;
# logs/pilot/times.tsv gets one line per run: name, seed, wall seconds, the 1-minute
# load average at its start and at its end, start time, CPU seconds (user + system:
# what the run costs whatever else the machine runs).
#   salad-aggregate logs/pilot/NAME --rows model.loss.pruning --list
# then prints each seed's average mAP.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
SEEDS=${SEEDS:-0 1 2}
CANDIDATES=$1
export PYTHON WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=${MPLBACKEND:-Agg}
mkdir -p logs/pilot

one() { # NAME SEED OVERRIDES...
  local name=$1 seed=$2 out=logs/pilot/$1/seed$2 t0 t1 l0 l1 cpu
  shift 2
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  l0=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$out.cpu" \
    "$PYTHON" -m salad_lightning.run experiment=thumos_shaped_cpu ablation=salad seed="$seed" \
    hydra.run.dir="$out" "$@" >"$out.log" 2>&1 || echo "FAILED $out" >&2
  t1=$(date +%s.%N)
  l1=$(cut -d' ' -f1 /proc/loadavg)
  cpu=$(tail -n 1 "$out.cpu" | awk '{print $1 + $2}')
  printf '%s\t%s\t%.1f\t%s\t%s\t%s\t%s\n' "$name" "$seed" "$(echo "$t1 - $t0" | bc)" "$l0" "$l1" \
    "$(date -d @"${t0%.*}" +%H:%M:%S)" "$cpu" >>logs/pilot/times.tsv
}
export -f one

for seed in $SEEDS; do
  grep -v '^\s*\(#\|$\)' "$CANDIDATES" | while read -r line; do echo "$seed $line"; done
done | while read -r seed name rest; do printf '%s\0' "one $name $seed $rest"; done |
  xargs -0 -P 2 -I{} bash -c '{}'
