#!/usr/bin/env bash
# SEED-Bench: answer LLaVA's question file (images, and one frame per video question), then accuracy per
# data type (image: SEED-I) and per question type.
#   bash scripts/eval/seed.sh                                   # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/seed.sh --no_pdrop
#   bash scripts/eval/seed.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/seed.sh                         # print the commands
# Data under $DATA_ROOT/seed_bench/: llava-seed-bench.jsonl (its questions already ask for the letter),
# SEED-Bench-image/ and SEED-Bench-video-image/ (frames), SEED-Bench.json.
# Writes answers/$RUN_NAME.jsonl and answers/$RUN_NAME.score.json there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/seed_bench
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava-seed-bench.jsonl is in LLaVA's eval.zip; SEED-Bench.json and SEED-Bench-image/ come from \
SEED-Bench (https://github.com/AILab-CVC/SEED-Bench/blob/main/DATASET.md), SEED-Bench-video-image/ holds the middle \
frame of each of its videos" "$dir/llava-seed-bench.jsonl" "$dir/SEED-Bench-image" "$dir/SEED-Bench.json"
bench_generate --question_file "$dir/llava-seed-bench.jsonl" --image_folder "$dir" \
    --answers_file "$answers" --max_new_tokens 16 "$@"
bench_score --task seed --answers "$answers" --annotations "$dir/SEED-Bench.json"
