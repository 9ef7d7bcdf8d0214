#!/usr/bin/env bash
# The convergence pilot: SALAD alone (ablation=salad) on the tables' data, trained for
# each candidate budget with a cosine schedule over it, to choose the budget the tables
# run on by the rule of experiments/convergence.py (written before these runs).
#   bash experiments/convergence.sh            # then: python experiments/convergence.py
#   BUDGETS="40 80 160 320" SEEDS="0 1 2" (the defaults); two runs at a time
# Each run: experiment=thumos_shaped_regime (its data: experiments/tables/prepare.sh), a
# 10-video holdout (val_holdout 0.2), the train fit on every training video, the train
# fit and the holdout every E/10 epochs; into logs/convergence/E<epochs>/seed<s>. A run
# whose folder holds metrics.json is kept (the pilot resumes); a failed one is named.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
BUDGETS=${BUDGETS:-40 80 160 320}
SEEDS=${SEEDS:-0 1 2}
export PYTHON WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=${MPLBACKEND:-Agg}
bash experiments/tables/prepare.sh >/dev/null
mkdir -p logs/convergence

one() { # EPOCHS SEED
  local e=$1 seed=$2 out=logs/convergence/E$1/seed$2 every=$(($1 / 10))
  [ -f "$out/metrics.json" ] && return 0
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  /usr/bin/time -f '%e %U %S' -o "$out.time" \
    "$PYTHON" -m salad_lightning.run experiment=thumos_shaped_regime ablation=salad seed="$seed" \
    trainer.max_epochs="$e" dataset.datamodule.val_holdout=0.2 \
    trainer.check_val_every_n_epoch="$every" callbacks.train_fit.every_n_epochs="$every" \
    callbacks.train_fit.videos=1000 hydra.run.dir="$out" >"$out.log" 2>&1 || echo "FAILED $out" >&2
}
export -f one

# the longest first, so that the two streams end together
for e in $(printf '%s\n' $BUDGETS | sort -rn); do
  for seed in $SEEDS; do printf '%s\0' "one $e $seed"; done
done | xargs -0 -P 2 -I{} bash -c '{}'
