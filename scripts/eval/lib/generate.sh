#!/usr/bin/env bash
# Answer a question file with one process per GPU (a contiguous shard each), then merge the answers.
# Every flag goes to `python -m llava.eval.run` (see its --help); --answers_file is the merged output.
# Each shard resumes from its own chunk file, so a killed evaluation continues where it stopped; a failed
# shard is reported with its exit status, and a rerun is suggested only when answers were kept.
# Environment:
#   CKPT       model folder or Hub id (passed as --model_path unless the flags give one)
#   CONV_MODE  conversation template (default vicuna_v1)
#   GPUS       comma-separated GPU ids (default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists;
#              without GPUs: one process on the CPU)
#   PYTHON     interpreter (default python)        DRY_RUN=1  print the commands instead of running them
# Examples:
#   CKPT=checkpoints/llava-v1.5-7b-pdrop bash scripts/eval/lib/generate.sh \
#       --question_file q.jsonl --image_folder images --answers_file answers/run.jsonl --batch_size 8
#   GPUS=0,1 CKPT=... bash scripts/eval/lib/generate.sh ... --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python}
CONV_MODE=${CONV_MODE:-vicuna_v1}

answers="" model_given=0 flags=()
while (($#)); do
    case $1 in
        --answers_file) answers=$2; shift 2 ;;
        --answers_file=*) answers=${1#*=}; shift ;;
        --model_path|--model_path=*) model_given=1; flags+=("$1"); shift ;;
        *) flags+=("$1"); shift ;;
    esac
done
[[ -n $answers ]] || { echo "generate.sh: --answers_file is required" >&2; exit 2; }
if ((model_given == 0)); then
    [[ -n ${CKPT:-} ]] || { echo "generate.sh: set CKPT (model folder or Hub id) or pass --model_path" >&2; exit 2; }
    flags=(--model_path "$CKPT" "${flags[@]}")
fi
flags=(--conv_mode "$CONV_MODE" "${flags[@]}")

if [[ -z ${GPUS:-} ]]; then
    GPUS=${CUDA_VISIBLE_DEVICES:-}
    if [[ -z $GPUS ]] && command -v nvidia-smi >/dev/null 2>&1; then
        GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, - || true)
    fi
fi
IFS=, read -r -a gpu_list <<< "${GPUS:-}"
chunks=${#gpu_list[@]}
((chunks > 0)) || { chunks=1; gpu_list=(""); }

run() {
    if [[ ${DRY_RUN:-0} == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

pids=() parts=()
for ((idx = 0; idx < chunks; idx++)); do
    part="${answers%.jsonl}.chunk${idx}-of-${chunks}.jsonl"
    parts+=("$part")
    cmd=("$PYTHON" -m llava.eval.run "${flags[@]}" --num_chunks "$chunks" --chunk_idx "$idx" --answers_file "$part")
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        printf 'CUDA_VISIBLE_DEVICES=%s ' "${gpu_list[idx]}"; run "${cmd[@]}"
    elif [[ -n ${gpu_list[idx]} ]]; then
        CUDA_VISIBLE_DEVICES=${gpu_list[idx]} "${cmd[@]}" & pids+=($!)
    else
        "${cmd[@]}" & pids+=($!)
    fi
done
# A failed shard: say why, and offer a resume only when there is something to resume (answers kept).
report_failure() {  # SHARD STATUS
    local kept=0 part why
    for part in "${parts[@]}"; do
        if [[ -s $part ]]; then kept=$((kept + $(wc -l < "$part"))); fi
    done
    if (($2 > 128)); then why="was killed (signal $(($2 - 128)))"; else why="failed (exit $2): see its error above"; fi
    if ((kept > 0)); then
        why+="; $kept answers are kept: rerun the same command to resume"
        if (($2 <= 128)); then why+=" once the problem is fixed"; fi
    fi
    echo "generate.sh: shard $1 of $chunks $why" >&2
}

status=0
for idx in "${!pids[@]}"; do
    code=0
    wait "${pids[idx]}" || code=$?
    if ((code != 0)); then report_failure "$idx" "$code"; status=$code; fi
done
((status == 0)) || exit "$status"
run "$PYTHON" -m llava.eval.chunks --out "$answers" "${parts[@]}"
