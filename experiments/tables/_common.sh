# Sourced by the table scripts: where runs and tables go, the machine line, helpers.
#   EXPERIMENT  the experiment config (default thumos_shaped_cpu: the CPU-scale benchmark)
#   SEEDS       comma-separated seeds (default 0,1,2)
#   PYTHON      the interpreter (default .venv/bin/python, else python)
#   MACHINE_NOTE  words appended to the machine line of the tables (e.g. "shared")
#   CODE_COMMIT   the commit to name in the tables when running outside a git checkout
# Extra arguments of a table script are passed to every run (e.g. dataset.root=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
EXPERIMENT=${EXPERIMENT:-thumos_shaped_cpu}
SEEDS=${SEEDS:-0,1,2}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
TABLES=logs/tables/$EXPERIMENT
RESULTS=experiments/results/$EXPERIMENT
export WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=${MPLBACKEND:-Agg}

salad() { "$PYTHON" -m salad_lightning.run "$@"; }

machine() {
  local cpu gpu torch
  cpu="$(nproc) CPU cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1))"
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
  torch=$("$PYTHON" -c 'import torch; print(torch.__version__)')
  echo "machine: $cpu, ${gpu:-no GPU}, torch $torch${MACHINE_NOTE:+, $MACHINE_NOTE}"
}

# the code the runs used: CODE_COMMIT if set (a snapshot without .git), else HEAD
code_line() {
  local rev=${CODE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)} dirty=""
  if [ -z "${CODE_COMMIT:-}" ] && [ -n "$(git status --porcelain -- src conf 2>/dev/null)" ]; then
    dirty=" with uncommitted changes in src/ or conf/"
  fi
  echo "code: commit ${rev:-unknown}$dirty"
}

# command TABLE ARGS...: the line that says how the table was made
command_line() {
  local table=$1
  shift
  local env=""
  [ "$EXPERIMENT" != thumos_shaped_cpu ] && env+="EXPERIMENT=$EXPERIMENT "
  [ "$SEEDS" != 0,1,2 ] && env+="SEEDS=$SEEDS "
  echo "command: \`${env}bash experiments/tables/$table.sh${*:+ $*}\`"
}
