#!/usr/bin/env bash
# GQA testdev-balanced: answer LLaVA's question file, then exact-match accuracy (per structural and semantic type).
#   bash scripts/eval/gqa.sh                                    # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/gqa.sh --no_pdrop
#   bash scripts/eval/gqa.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/gqa.sh                          # print the commands
# Data under $DATA_ROOT/gqa/: llava_gqa_testdev_balanced.jsonl, data/images/, data/testdev_balanced_questions.json.
# Writes answers/$RUN_NAME.jsonl, .score.json and .predictions.json (for GQA's eval.py --predictions) there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/gqa
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava_gqa_testdev_balanced.jsonl is in LLaVA's eval.zip; the images (data/images/) and \
testdev_balanced_questions.json come from GQA (https://cs.stanford.edu/people/dorarad/gqa/download.html), \
into $dir/data" \
    "$dir/llava_gqa_testdev_balanced.jsonl" "$dir/data/images" "$dir/data/testdev_balanced_questions.json"
bench_generate --question_file "$dir/llava_gqa_testdev_balanced.jsonl" --image_folder "$dir/data/images" \
    --answers_file "$answers" --max_new_tokens 128 "$@"
bench_score --task gqa --answers "$answers" --annotations "$dir/data/testdev_balanced_questions.json" \
    --submission "$dir/answers/$RUN_NAME.predictions.json"
