#!/usr/bin/env bash
# The GPU figures of experiments/benchmarks/README.md in one command (178 s on one H100 in
# run 5, the machine's start not counted). Runs from the repository root on a machine with
# torch, Lightning, torchmetrics and pytest; hydra-core/omegaconf wheels in .whl/ are
# installed for the app check. Writes every output to ${OUT:-/tmp/salad_gpu_out}.
#   MODES="eager graph compile" bash experiments/benchmarks/gpu_check.sh   # + compilation (run 4: ~2 min in the first compiled epoch alone)
set -u
OUT=${OUT:-/tmp/salad_gpu_out}
MODES=${MODES:-eager graph}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg WANDB_MODE=offline
{
  nvidia-smi -L
  python3 -c "import torch, pytorch_lightning as pl, torchmetrics as tm, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '| lightning', pl.__version__, '| torchmetrics', tm.__version__, '| triton', triton.__version__)"
  nproc
} 2>&1 | tee "$OUT/versions.txt"
keep() { grep -E "^(device|step|epoch|validation|profile)|Error|error" | tee -a "$OUT/train_bench.txt"; }

# model.cuda_graph on the device: replayed graphs train like the same steps run eagerly,
# also under DDP (two gloo processes on the one device: test_graphs_under_ddp_...)
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_step_graph.py 2>&1 | tail -25 | tee "$OUT/test_step_graph.txt"

# training steps (ActivityNet- then THUMOS14-shaped) against the bare BiGRU
# shellcheck disable=SC2086
timeout 200 python3 experiments/benchmarks/train.py --parts step --modes $MODES --workers 6 --repeats 15 \
  --workdir /tmp/salad_bench 2>&1 | tee "$OUT/train_step.log" | keep
# the THUMOS14-shaped epoch and validation over THUMOS14-test scale
# shellcheck disable=SC2086
timeout 200 python3 experiments/benchmarks/train.py --parts epoch validation --modes $MODES --workers 6 \
  --workdir /tmp/salad_bench 2>&1 | tee "$OUT/train_epoch.log" | keep

# matching on the device vs the literal loop; soft-NMS batched over videos on the device
timeout 30 python3 experiments/benchmarks/matching.py --device cuda 2>&1 | tail -6 | tee "$OUT/matching.txt"
timeout 60 python3 experiments/benchmarks/postprocess.py --device cuda --no-peer 2>&1 | tail -12 | tee "$OUT/postprocess.txt"

# feature extraction (decoding, TV-L1, I3D RGB and flow forwards); needs PyAV and OpenCV's
# contrib build (wheels in .whl/, installed below with the others)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
timeout 120 python3 experiments/benchmarks/extract.py --device cuda --batch 16 2>&1 | tail -12 | tee "$OUT/extract.txt"

# the Hydra app on the GPU: synthetic default, 3 epochs, CUDA graphs on
if ls .whl/*.whl >/dev/null 2>&1; then
  timeout 60 python3 -m salad_lightning.run trainer=gpu trainer.max_epochs=3 trainer.enable_progress_bar=false \
    model.cuda_graph=true paths.root_dir=/tmp/salad_app logger=csv 2>&1 | tail -8 | tee "$OUT/app_gpu.txt"
  # a whole run (issue goal: <= 1.15 x N graphed bare-GRU epochs + the validation floor):
  # experiment=thumos_paper on THUMOS14-shaped 2048-d features, RUN_EPOCHS epochs, validation
  # every epoch; the wall time of fit from the run's log, against train.py's figures above
  RUN_EPOCHS=${RUN_EPOCHS:-3}
  python3 -m salad_lightning.data.thumos_like --out /tmp/salad_thumos2048 --feature-dim 2048 \
    >"$OUT/run_data.txt" 2>&1
  /usr/bin/time -f "run wall %e s" timeout 400 python3 -m salad_lightning.run experiment=thumos_paper \
    dataset.root=/tmp/salad_thumos2048 trainer=gpu trainer.max_epochs="$RUN_EPOCHS" \
    trainer.enable_progress_bar=false test_after_training=false dataset.datamodule.num_workers=6 \
    paths.root_dir=/tmp/salad_run logger=csv 2>&1 | tail -5 | tee "$OUT/run_thumos_paper.txt"
fi
