#!/usr/bin/env bash
# Shared by the benchmark scripts (scripts/eval/<bench>.sh), which source it and then call
# bench_generate (answer the questions: scripts/eval/lib/generate.sh, one process per GPU) and
# bench_score (python -m llava.eval.score). Not meant to be run on its own.
#
# Environment (all optional):
#   CKPT       model folder or Hub id (default checkpoints/llava-v1.5-7b-pdrop)
#   RUN_NAME   name of the answers / results files (default: the last path component of CKPT)
#   DATA_ROOT  LLaVA's evaluation data folder, playground/data/eval layout (default playground/data/eval)
#   PYTHON     interpreter (default python), also used by generate.sh
#   GENERATE   the generation script (default scripts/eval/lib/generate.sh)
#   DRY_RUN=1  print the commands instead of running them (generate.sh prints its own)
#   CONV_MODE, GPUS  read by generate.sh
# Relative paths are relative to the repository root: the scripts run there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

export CKPT=${CKPT:-checkpoints/llava-v1.5-7b-pdrop}
RUN_NAME=${RUN_NAME:-$(basename "$CKPT")}
DATA_ROOT=${DATA_ROOT:-playground/data/eval}
export PYTHON=${PYTHON:-python}
GENERATE=${GENERATE:-scripts/eval/lib/generate.sh}
export DRY_RUN=${DRY_RUN:-0}

# bench_generate FLAG...: every flag goes to llava.eval.run through generate.sh.
bench_generate() {
    bash "$GENERATE" "$@"
}

# bench_score FLAG...: python -m llava.eval.score FLAG... (printed, shell-quoted, under DRY_RUN=1).
bench_score() {
    local -a cmd=("$PYTHON" -m llava.eval.score "$@")
    if [[ $DRY_RUN == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        echo
    else
        "${cmd[@]}"
    fi
}
