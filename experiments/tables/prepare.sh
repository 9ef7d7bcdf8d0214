#!/usr/bin/env bash
# The data of the THUMOS14-shaped benchmarks the CPU tables run on: the real THUMOS14
# annotation file's timing, synthetic 64-d features, seed 0 (salad_lightning.data.thumos_like).
#   EXPERIMENT=thumos_shaped_converged (default) and thumos_shaped_regime: a quarter of each
#     subset, action patterns of amplitude 4, in data_cache/thumos_like_f0.25_a4_d64
#   EXPERIMENT=thumos_shaped_cpu: a quarter of each subset, the default feature model,
#     in data_cache/thumos_like_f0.25_d64
#   any other experiment: nothing to prepare (its data is dataset.root)
#   bash experiments/tables/prepare.sh [ANNOTATIONS]
# ANNOTATIONS: the argument, else $THUMOS14_ANNOTATIONS, else the repository's copy,
# data/thumos14/thumos14.json.gz. Does nothing when the folder is already there with
# the same parameters. The folder names are the experiment configs' dataset.root.
ANNOTATIONS=${1:-${THUMOS14_ANNOTATIONS:-}}
ANNOTATIONS=${ANNOTATIONS:+$(realpath "$ANNOTATIONS")}
source "$(dirname "$0")/_common.sh"
ANNOTATIONS=${ANNOTATIONS:-data/thumos14/thumos14.json.gz}
thumos_like() { "$PYTHON" -m salad_lightning.data.thumos_like --annotations "$ANNOTATIONS" \
  --feature-dim 64 --seed 0 "$@"; }
case $EXPERIMENT in
  thumos_shaped_regime | thumos_shaped_converged)
    thumos_like --out data_cache/thumos_like_f0.25_a4_d64 --fraction 0.25 --amplitude 4 --noise 0.5 ;;
  thumos_shaped_cpu)
    thumos_like --out data_cache/thumos_like_f0.25_d64 --fraction 0.25 ;;
  *)
    echo "prepare.sh: nothing to prepare for experiment=$EXPERIMENT (its data: dataset.root)" ;;
esac
