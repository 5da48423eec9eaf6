#!/usr/bin/env bash
# Shared by the benchmark scripts (scripts/eval/<bench>.sh), which source it and then call
# bench_require (the benchmark's files must exist before any model loads), bench_generate (answer the
# questions: scripts/eval/lib/generate.sh, one process per GPU) and bench_score (python -m
# llava.eval.score). Not meant to be run on its own.
#
# The data layout is LLaVA's (its docs/Evaluation.md): first LLaVA's eval.zip
# (https://drive.google.com/file/d/1atZSBBrAX54yYpxtVVW33zFvcnaHeFPy) extracted into $DATA_ROOT gives
# the question files (llava_*.jsonl) and the folder structure; each benchmark's images and ground truth
# come from its own site, named in the script's bench_require line and in its error when missing.
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

# bench_require 'WHERE THEY COME FROM' PATH...: stop with exit status 2 and one line naming the missing
# paths and where to get them, before anything runs. Under DRY_RUN=1 the line is a warning on stderr.
bench_require() {
    local where=$1 path
    shift
    local -a missing=()
    for path in "$@"; do
        [[ -e $path ]] || missing+=("$path")
    done
    (( ${#missing[@]} )) || return 0
    local script
    script=$(basename "$0")
    if [[ $DRY_RUN == 1 ]]; then
        echo "$script: warning: missing ${missing[*]} ($where)" >&2
        return 0
    fi
    echo "$script: error: missing ${missing[*]}: $where; LLaVA's eval.zip" \
         "(https://drive.google.com/file/d/1atZSBBrAX54yYpxtVVW33zFvcnaHeFPy) extracted into $DATA_ROOT" \
         "gives the question files and the layout (DATA_ROOT=... to look elsewhere)" >&2
    exit 2
}

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
