#!/usr/bin/env bash
# Table 2's peer row: ActionFormer (its PyPI release, trained and run by its own code on
# the benchmark's videos, scored by salad_lightning.evaluate). Never a dependency of the
# package: fetched from PyPI and built here, outside the project's environment.
#   bash experiments/peer/actionformer.sh
#   SEEDS=0,1,2 AF_WIDTH=256 AF_EPOCHS=45 bash experiments/peer/actionformer.sh
# Steps:
#  1. build: `pip download --no-deps --no-binary :all: actionformer==$AF_VERSION` into
#     $AF_BUILD/src, its C++ soft-NMS compiled there (`setup.py build_ext --inplace`), the
#     modules it imports that the project's environment lacks (pandas, joblib, h5py)
#     installed into $AF_BUILD/site with `pip install --target`; its code then runs with
#     the project's python (and torch) and PYTHONPATH=src:site. Done once, reused.
#  2. split: SALAD's own training videos of $EXPERIMENT (its data module, with the holdout
#     VAL_HOLDOUT left out) and its test videos, written as an annotation file holding only
#     them (ActionFormer's THUMOS14 reader takes `subset` Validation for training, Test for
#     testing); per seed, ActionFormer's THUMOS14 I3D config on this data.
#  3. per seed: its own train.py, then its own inference (valid_one_epoch, as its eval.py)
#     with the last epoch's raw weights (AF_WEIGHTS=ema: its EMA), as an ActivityNet
#     results JSON;
#  4. scored by `python -m salad_lightning.evaluate --subset Test --tiou 0.1 ... 0.5`
#     against the experiment's own annotation file: $PEER_OUT/seed<s>/ gets results.json,
#     metrics.json (the project's keys), args.txt (what made it; its first line names the
#     peer in the tables) and time.json (wall and CPU time of the training, the machine).
#  5. a seed whose metrics.json is there is skipped (one made with other settings is an
#     error: remove it); an interrupted training resumes from its last checkpoint
#     (every AF_CKPT_FREQ epochs).
# Environment (defaults): EXPERIMENT (thumos_shaped_regime), DATA_ROOT (the experiment's
# dataset.root), VAL_HOLDOUT (0.2: SALAD's 42 training videos), SEEDS (0), AF_VERSION
# (1.5.0), AF_WIDTH (256: embedding, FPN and head width), AF_EPOCHS (45) + AF_WARMUP_EPOCHS
# (5), AF_BATCH (2), AF_LR (1e-4), AF_WEIGHT_DECAY (0.05), AF_MAX_SEQ_LEN (2304: the
# training crops), AF_WEIGHTS (raw), AF_THREADS (1: torch's threads), AF_WORKERS (1: its
# data loader's), AF_CKPT_FREQ (5), AF_BUILD (logs/peer/actionformer/build), AF_WORK
# (logs/peer/actionformer/$EXPERIMENT: split, configs, checkpoints, logs), PEER_OUT
# (logs/tables/$EXPERIMENT/peer/actionformer), PYTHON.
SEEDS=${SEEDS:-0}
source "$(dirname "$0")/../tables/_common.sh"
AF_VERSION=${AF_VERSION:-1.5.0}
AF_WIDTH=${AF_WIDTH:-256}
AF_EPOCHS=${AF_EPOCHS:-45}
AF_WARMUP_EPOCHS=${AF_WARMUP_EPOCHS:-5}
AF_BATCH=${AF_BATCH:-2}
AF_LR=${AF_LR:-1e-4}
AF_WEIGHT_DECAY=${AF_WEIGHT_DECAY:-0.05}
AF_MAX_SEQ_LEN=${AF_MAX_SEQ_LEN:-2304}
AF_WEIGHTS=${AF_WEIGHTS:-raw}
AF_THREADS=${AF_THREADS:-1}
AF_WORKERS=${AF_WORKERS:-1}
AF_CKPT_FREQ=${AF_CKPT_FREQ:-5}
VAL_HOLDOUT=${VAL_HOLDOUT:-0.2}
AF_BUILD=$(realpath -m "${AF_BUILD:-logs/peer/actionformer/build}")
AF_WORK=$(realpath -m "${AF_WORK:-logs/peer/actionformer/$EXPERIMENT}")
PEER_OUT=${PEER_OUT:-$TABLES/peer/actionformer}
PEER=experiments/peer/actionformer_peer.py
PYTHON=$(realpath -s "$(command -v "$PYTHON")")  # absolute: step 1 runs it elsewhere
case $AF_WEIGHTS in raw | ema) ;; *) echo "AF_WEIGHTS must be raw or ema, found $AF_WEIGHTS" >&2; exit 2 ;; esac
log() { echo "[actionformer.sh $(date +%H:%M:%S)] $*"; }

# 1. ActionFormer from its sdist, its NMS compiled, its missing imports in a target dir
SRC=$AF_BUILD/src/actionformer-$AF_VERSION SITE=$AF_BUILD/site
PEER_PATH=$SRC:$SITE
if [ ! -f "$AF_BUILD/ready-$AF_VERSION" ]; then
  mkdir -p "$AF_BUILD/src"
  if [ ! -d "$SRC" ]; then
    log "1/4 fetching actionformer==$AF_VERSION's sdist from PyPI into $AF_BUILD/src"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
      "actionformer==$AF_VERSION" -d "$AF_BUILD/src"
    tar -xzf "$AF_BUILD/src/actionformer-$AF_VERSION.tar.gz" -C "$AF_BUILD/src"
  fi
  if ! compgen -G "$SRC/nms_1d_cpu*.so" >/dev/null; then
    log "1/4 compiling its soft-NMS (nms_1d_cpu) in $SRC"
    (cd "$SRC" && "$PYTHON" setup.py build_ext --inplace >"$AF_BUILD/build_ext.log" 2>&1) ||
      { tail -n 30 "$AF_BUILD/build_ext.log" >&2; exit 1; }
  fi
  # what it imports that the project's environment lacks, nothing else (numpy, torch,
  # pyyaml, tensorboard, python-dateutil and tzdata are the project's)
  missing=$(PYTHONPATH=$PEER_PATH "$PYTHON" - <<'PY'
import importlib.util
print(" ".join(m for m in ("pandas", "joblib", "h5py") if importlib.util.find_spec(m) is None))
PY
)
  if [ -n "$missing" ]; then
    log "1/4 installing $missing into $SITE (pip install --target, without dependencies)"
    "$PYTHON" -m pip install --quiet --no-deps --target "$SITE" $missing
  fi
  PYTHONPATH=$PEER_PATH "$PYTHON" -c "
import actionformer.train, actionformer.eval, nms_1d_cpu
from actionformer.utils import HAS_CPP_NMS
assert HAS_CPP_NMS, 'nms_1d_cpu does not import'" || { echo "ActionFormer does not import from $PEER_PATH" >&2; exit 1; }
  touch "$AF_BUILD/ready-$AF_VERSION"
fi
log "1/4 ActionFormer $AF_VERSION from $SRC (compiled soft-NMS), extra modules in $SITE"

# 2. the videos: SALAD's training videos of $EXPERIMENT (holdout left out), its test videos
mkdir -p "$AF_WORK" "$PEER_OUT"
"$PYTHON" "$PEER" split --experiment "$EXPERIMENT" --holdout "$VAL_HOLDOUT" \
  ${DATA_ROOT:+--data-root "$DATA_ROOT"} --out "$AF_WORK" >"$AF_WORK/split.log"
head -n 1 "$AF_WORK/split.log"
GT=$(tail -n 1 "$AF_WORK/split.log")
DEVICE=$("$PYTHON" -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')")

settings() { # SEED: what makes a seed's run (args.txt)
  echo "ActionFormer $AF_VERSION (PyPI actionformer==$AF_VERSION): its THUMOS14 I3D config, input_dim $(
    "$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['feature_dim'])" "$AF_WORK/split.json"
  ), width $AF_WIDTH, AdamW $AF_LR, weight decay $AF_WEIGHT_DECAY, $AF_EPOCHS + $AF_WARMUP_EPOCHS warm-up epochs, batch $AF_BATCH, crops of $AF_MAX_SEQ_LEN steps, $AF_WEIGHTS weights of the last epoch"
  printf '%s\n' "EXPERIMENT=$EXPERIMENT" "DATA_ROOT=${DATA_ROOT:-}" "VAL_HOLDOUT=$VAL_HOLDOUT" \
    "seed=$1" "AF_VERSION=$AF_VERSION" "AF_WIDTH=$AF_WIDTH" "AF_EPOCHS=$AF_EPOCHS" \
    "AF_WARMUP_EPOCHS=$AF_WARMUP_EPOCHS" "AF_BATCH=$AF_BATCH" "AF_LR=$AF_LR" \
    "AF_WEIGHT_DECAY=$AF_WEIGHT_DECAY" "AF_MAX_SEQ_LEN=$AF_MAX_SEQ_LEN" "AF_WEIGHTS=$AF_WEIGHTS" \
    "split: $AF_WORK/split.json (train $(
      "$PYTHON" -c "import json,sys; s=json.load(open(sys.argv[1])); print(len(s['train']), 'videos, holdout', len(s['holdout']), 'left out, test', len(s['test']))" "$AF_WORK/split.json"
    ))" \
    "ground truth: $GT" \
    "train: PYTHONPATH=$PEER_PATH $PYTHON $PEER train --config <seed dir>/actionformer.yaml --name seed$1 (actionformer.train.main)" \
    "infer: PYTHONPATH=$PEER_PATH $PYTHON $PEER infer --config <seed dir>/actionformer.yaml --ckpt <last epoch> --weights $AF_WEIGHTS (actionformer.utils.valid_one_epoch)" \
    "score: $PYTHON -m salad_lightning.evaluate --ground-truth $GT --predictions results.json --subset Test --tiou 0.1 0.2 0.3 0.4 0.5 --json"
}

for s in ${SEEDS//,/ }; do
  out=$PEER_OUT/seed$s work=$AF_WORK/seed$s
  if [ -f "$out/metrics.json" ]; then
    if [ "$(cat "$out/args.txt" 2>/dev/null)" != "$(settings "$s")" ]; then
      echo "$out was made with other settings (its args.txt); remove it to rerun" >&2
      exit 1
    fi
    log "seed $s: done ($out/metrics.json), skipped"
    continue
  fi
  mkdir -p "$work"
  "$PYTHON" "$PEER" config --split "$AF_WORK/split.json" --out "$work/actionformer.yaml.new" \
    --output-folder "$work/ckpt" --seed "$s" --device "$DEVICE" --width "$AF_WIDTH" \
    --epochs "$AF_EPOCHS" --warmup-epochs "$AF_WARMUP_EPOCHS" --batch-size "$AF_BATCH" \
    --lr "$AF_LR" --weight-decay "$AF_WEIGHT_DECAY" --max-seq-len "$AF_MAX_SEQ_LEN" \
    --workers "$AF_WORKERS"
  # what the training depends on: its config, the videos (split.json), the peer's version
  stamp=$(cat "$work/actionformer.yaml.new" "$AF_WORK/split.json" <(echo "$AF_VERSION") | sha1sum | cut -c1-16)
  mv "$work/actionformer.yaml.new" "$work/actionformer.yaml"
  if [ "$(cat "$work/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$work/ckpt" "$work/train.log" "$work/train.time"  # made otherwise: start over
    echo "$stamp" >"$work/stamp"
  fi
  total=$((AF_EPOCHS + AF_WARMUP_EPOCHS))
  ckdir=$work/ckpt/actionformer_seed$s
  last=$ckdir/$(printf 'epoch_%03d.pth.tar' "$total")

  # 3. its own training (resumed from its last checkpoint if one is there), timed
  if [ ! -f "$last" ]; then
    resume=$(ls "$ckdir"/epoch_*.pth.tar 2>/dev/null | sort | tail -n 1 || true)
    [ -n "$resume" ] || rm -f "$work/train.log" "$work/train.time"  # a training from scratch
    log "seed $s: 2/4 training, $total epochs${resume:+, resumed from $(basename "$resume")} on $DEVICE, $AF_THREADS thread(s) (log: $work/train.log)"
    mkdir -p "$work/ckpt"
    OMP_NUM_THREADS=$AF_THREADS MKL_NUM_THREADS=$AF_THREADS PYTHONPATH=$PEER_PATH \
      /usr/bin/time -f '%e %U %S' -a -o "$work/train.time" \
      "$PYTHON" "$PEER" train --config "$work/actionformer.yaml" --name "seed$s" \
      --ckpt-freq "$AF_CKPT_FREQ" ${resume:+--resume "$resume"} >>"$work/train.log" 2>&1 ||
      { tail -n 30 "$work/train.log" >&2; echo "seed $s: training failed (log: $work/train.log)" >&2; exit 1; }
    grep '^\[peer\] epoch' "$work/train.log" | tail -n 1 || true
  fi
  [ -f "$last" ] || { echo "seed $s: no $last after training" >&2; exit 1; }
  find "$ckdir" -name 'epoch_*.pth.tar' ! -name "$(basename "$last")" -delete
  log "seed $s: 3/4 inference on the test videos with the $AF_WEIGHTS weights of epoch $total"
  OMP_NUM_THREADS=$AF_THREADS MKL_NUM_THREADS=$AF_THREADS PYTHONPATH=$PEER_PATH \
    "$PYTHON" "$PEER" infer --config "$work/actionformer.yaml" --ckpt "$last" \
    --weights "$AF_WEIGHTS" --out "$work/results.json" >"$work/infer.log" 2>&1 ||
    { tail -n 30 "$work/infer.log" >&2; exit 1; }
  tail -n 1 "$work/infer.log"

  # 4. the project's evaluator
  log "seed $s: 4/4 scoring with salad_lightning.evaluate"
  "$PYTHON" -m salad_lightning.evaluate --ground-truth "$GT" --predictions "$work/results.json" \
    --subset Test --tiou 0.1 0.2 0.3 0.4 0.5 --json >"$work/eval.json"
  rm -rf "$out" && mkdir -p "$out"
  cp "$work/results.json" "$out/results.json"
  settings "$s" >"$out/args.txt"
  "$PYTHON" - "$work/train.time" "$work/train.log" "$out/time.json" "$(machine | sed 's/^machine: //')" \
    "$AF_THREADS" "$total" <<'PY'
import json, re, sys
time_file, log, out, machine, threads, epochs = sys.argv[1:]
# /usr/bin/time: one line per training session that ran to its end (wall, user, sys in s)
rows = [list(map(float, l.split()[-3:])) for l in open(time_file)
        if l.strip() and not l.startswith("Command")]
text = open(log).read()
# each finished epoch's own time (the last one of an epoch trained twice after a resume)
per = {int(e): (float(w), float(c)) for e, w, c in
       re.findall(r"^\[peer\] epoch (\d+): ([\d.]+) s wall, ([\d.]+) s CPU", text, re.M)}
t = {"train_wall_s": round(sum(r[0] for r in rows), 2),
     "train_cpu_s": round(sum(r[1] + r[2] for r in rows), 2),
     "timed_sessions": len(rows),
     # sessions stopped before their end: their time is not in train_*_s
     "untimed_sessions": text.count("Start training model") - len(rows),
     "epochs_wall_s": round(sum(w for w, _ in per.values()), 2),
     "epochs_cpu_s": round(sum(c for _, c in per.values()), 2),
     "epochs": int(epochs), "threads": int(threads), "machine": machine}
json.dump(t, open(out, "w"), indent=1)
print(f"training: {t['train_wall_s']:.0f} s wall, {t['train_cpu_s']:.0f} s CPU "
      f"({t['timed_sessions']} session(s)); its {len(per)} epochs: "
      f"{t['epochs_wall_s']:.0f} s wall, {t['epochs_cpu_s']:.0f} s CPU")
PY
  "$PYTHON" "$PEER" metrics "$work/eval.json" --out "$out/metrics.json.tmp"
  mv "$out/metrics.json.tmp" "$out/metrics.json"  # last: the seed is done
  log "seed $s: done -> $out"
done
