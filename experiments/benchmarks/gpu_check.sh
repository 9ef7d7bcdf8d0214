#!/usr/bin/env bash
# The GPU figures of experiments/benchmarks/README.md in one command (about 4 minutes on
# one H100). Runs from the repository root on a machine with torch, Lightning and
# torchmetrics; hydra-core/omegaconf wheels in .whl/ are installed for the app check.
# Writes every output to ${OUT:-/tmp/salad_gpu_out}.
set -u
OUT=${OUT:-/tmp/salad_gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg WANDB_MODE=offline
{
  nvidia-smi -L
  python3 -c "import torch, pytorch_lightning as pl, torchmetrics as tm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '| lightning', pl.__version__, '| torchmetrics', tm.__version__)"
} 2>&1 | tee "$OUT/versions.txt"

# training (device|step|epoch|validation|profile), training epoch and validation against the bare BiGRU (issue 7)
timeout 330 python3 experiments/benchmarks/train.py --workers 6 --repeats 15 --workdir /tmp/salad_bench --profile "$OUT/profile.txt" 2>&1 \
  | grep -E "^(device|step|epoch|validation|profile)|Error|error" | tee "$OUT/train_bench.txt"

# matching on the device vs the literal loop
timeout 60 python3 experiments/benchmarks/matching.py --device cuda 2>&1 | tail -6 | tee "$OUT/matching.txt"

# the Hydra app on the GPU: synthetic default, 3 (device|step|epoch|validation|profile)s
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  timeout 120 python3 -m salad_lightning.run trainer=gpu trainer.max_epochs=3 trainer.enable_progress_bar=false \
    paths.root_dir=/tmp/salad_app logger=csv 2>&1 | tail -8 | tee "$OUT/app_gpu.txt"
fi
