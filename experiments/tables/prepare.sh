#!/usr/bin/env bash
# The THUMOS14-shaped benchmark the CPU tables run on: the real THUMOS14 annotation
# file's timing (a quarter of each subset's videos), synthetic 64-d features, seed 0.
#   bash experiments/tables/prepare.sh [ANNOTATIONS]
# ANNOTATIONS: the argument, else $THUMOS14_ANNOTATIONS, else the repository's copy,
# data/thumos14/thumos14.json.gz
# Writes data_cache/thumos_like_f0.25_d64 (experiment=thumos_shaped_cpu reads it);
# does nothing when it is already there with the same parameters.
ANNOTATIONS=${1:-${THUMOS14_ANNOTATIONS:-}}
ANNOTATIONS=${ANNOTATIONS:+$(realpath "$ANNOTATIONS")}
source "$(dirname "$0")/_common.sh"
ANNOTATIONS=${ANNOTATIONS:-data/thumos14/thumos14.json.gz}
"$PYTHON" -m salad_lightning.data.thumos_like --annotations "$ANNOTATIONS" \
  --out data_cache/thumos_like_f0.25_d64 --fraction 0.25 --feature-dim 64 --seed 0
