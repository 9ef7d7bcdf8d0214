# Sourced by the table scripts: where runs and tables go, the machine line, helpers.
#   EXPERIMENT   the experiment config (default thumos_shaped_converged: the benchmark the
#                tables run on, trained to convergence; thumos_shaped_regime, 20 epochs, is
#                the earlier one; thumos_shaped_cpu the fast one)
#   SEEDS        comma-separated seeds (default 0,1,2,3,4)
#   STEP         runs | table | all (default): train the table's runs, make its table
#                from runs already there, or both
#   REUSE_SALAD  1: pair the table with the SALAD runs already in logs/tables/$EXPERIMENT/salad
#                (salad.sh, made with the same SEEDS, overrides and code), never train
#                them; unset: a table that needs SALAD trains it first (salad.sh)
#   PYTHON       the interpreter (default .venv/bin/python, else python)
#   MACHINE_NOTE words appended to the machine line of the tables (e.g. "shared")
#   CODE_COMMIT  the commit to name in the tables when running outside a git checkout
# Extra arguments of a table script are passed to every run (e.g. dataset.root=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
EXPERIMENT=${EXPERIMENT:-thumos_shaped_converged}
SEEDS=${SEEDS:-0,1,2,3,4}
STEP=${STEP:-all}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
TABLES=logs/tables/$EXPERIMENT
RESULTS=experiments/results/$EXPERIMENT
# SALAD with each seed, trained once: the reference row of every table
SALAD_RUNS=$TABLES/salad
export WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=${MPLBACKEND:-Agg}
case $STEP in runs | table | all) ;; *) echo "STEP must be runs, table or all, found $STEP" >&2; exit 2 ;; esac

salad() { "$PYTHON" -m salad_lightning.run "$@" skip_finished=true; }  # after -m: Hydra takes its flags first
do_runs() { [ "$STEP" != table ]; }
do_table() { [ "$STEP" != runs ]; }

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
  [ "$EXPERIMENT" != thumos_shaped_converged ] && env+="EXPERIMENT=$EXPERIMENT "
  [ "$SEEDS" != 0,1,2,3,4 ] && env+="SEEDS=$SEEDS "
  if [ -n "${MADE_BY:-}" ]; then
    echo "command: \`${env}$MADE_BY${*:+ $*}\` (this table: \`experiments/tables/$table.sh\`)"
  else
    echo "command: \`${env}bash experiments/tables/$table.sh${*:+ $*}\`"
  fi
}

# what a set of runs was made with: experiment, seeds, overrides and the code
# (HEAD and a digest of uncommitted changes under src/ and conf/)
run_args() {
  local rev digest
  rev=${CODE_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
  # untracked files count too (a new config), each by name and content
  digest=$({
    git diff HEAD -- src conf
    git ls-files -o --exclude-standard -- src conf | while read -r f; do echo "$f" && cat "$f"; done
  } 2>/dev/null | sha1sum | cut -c1-12)
  printf '%s\n' "EXPERIMENT=$EXPERIMENT" "SEEDS=$SEEDS" "code=$rev $digest" "$@"
}

# begin_runs DIR ARGS...: DIR ready for a script's runs. When it holds runs begun with
# these seeds, overrides and code (DIR/started.txt), it is kept and the runs resume: every
# job passes skip_finished=true, so the finished ones are not run again (an interrupted
# all.sh goes on where it stopped). Otherwise (or with FRESH=1) it is emptied first.
begin_runs() {
  local dir=$1
  shift
  if [ "${FRESH:-0}" != 1 ] && [ "$(cat "$dir/started.txt" 2>/dev/null)" = "$(run_args "$@")" ]; then
    echo "resuming the runs in $dir (finished jobs are kept)" >&2
  else
    rm -rf "$dir"
    mkdir -p "$dir"
    run_args "$@" >"$dir/started.txt"
  fi
}

# check_args DIR ARGS...: DIR/args.txt says DIR was made with these seeds, overrides, code
check_args() {
  local dir=$1
  shift
  if [ "$(cat "$dir/args.txt" 2>/dev/null)" != "$(run_args "$@")" ]; then
    echo "$dir was not made with SEEDS=$SEEDS, overrides '$*' and this code" \
      "(its args.txt: $(tr '\n' ' ' 2>/dev/null <"$dir/args.txt" || echo none));" \
      "rerun it" >&2
    return 1
  fi
}

# need_salad ARGS...: the SALAD runs of this table, trained with salad.sh unless
# REUSE_SALAD=1 or STEP=table, in which case they must already be there. Once trained,
# a script's later calls reuse them (pruning.sh needs them before its runs and its table).
need_salad() {
  if [ "${REUSE_SALAD:-0}" = 1 ] || [ "$STEP" = table ]; then
    check_args "$SALAD_RUNS" "$@" || { echo "run experiments/tables/salad.sh first" >&2; exit 1; }
  else
    bash experiments/tables/salad.sh "$@"
    REUSE_SALAD=1
  fi
}

# aggregate ARGS...: salad-aggregate (the package's salad_lightning.aggregate)
aggregate() { "$PYTHON" -m salad_lightning.aggregate "$@"; }

# table NAME ROWS TITLE DIR... -- ARGS...: the table of the runs in DIR... paired with
# SALAD's, printed and written to $RESULTS/NAME.md with the command (NAME.sh ARGS...),
# the machine and the code
table() {
  local name=$1 rows=$2 title=$3 dirs=()
  shift 3
  while [ "$1" != -- ]; do dirs+=("$1") && shift; done
  shift
  aggregate "$SALAD_RUNS" "${dirs[@]}" --rows "$rows" --paper "$name" \
    --markdown "$RESULTS/$name.md" --title "$title, $EXPERIMENT" \
    --note "$(command_line "$name" "$@")" --note "$(machine)" --note "$(code_line)"
}

# peer_line DIR: one line on a peer's runs under DIR/seed*/metrics.json (not paired with
# SALAD: another detector, its own training), mean ± std over its seeds per tIoU, in %
peer_line() {
  "$PYTHON" - "$1" <<'PY'
import json, sys
from pathlib import Path
from statistics import mean, stdev
runs = sorted(Path(sys.argv[1]).glob("seed*/metrics.json"))
ms = [json.loads(p.read_text()) for p in runs]
thr = ms[0]["tiou_thresholds"]
def cell(vals):
    return f"{mean(vals):.2f}" + (f" ± {stdev(vals):.2f}" if len(vals) > 1 else "")
cols = [cell([100 * m[f"test/mAP@{t:g}"] for m in ms]) for t in thr]
avg = cell([100 * m["test/mAP"] for m in ms])
made = (Path(sys.argv[1]) / runs[0].parent.name / "args.txt")
what = made.read_text().splitlines()[0] if made.is_file() else "ActionFormer"
seeds = ", ".join(p.parent.name[4:] for p in runs)
print(f"Peer (not paired; its own training and inference, scored by salad-evaluate): "
      f"{what}, seeds {seeds}: " + " / ".join(cols) + f" at tIoU {', '.join(f'{t:g}' for t in thr)}; average {avg}.")
PY
}
