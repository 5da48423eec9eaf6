#!/usr/bin/env bash
# ScienceQA test: answer LLaVA's question file asking for the option's letter, then accuracy overall and per
# subject, context (IMG is the image subset papers report as SQA-IMG) and grade.
#   bash scripts/eval/sqa.sh                                    # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/sqa.sh --no_pdrop
#   bash scripts/eval/sqa.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/sqa.sh                          # print the commands
# Data under $DATA_ROOT/scienceqa/: llava_test_CQM-A.json, images/test/, problems.json.
# Writes answers/$RUN_NAME.jsonl and answers/$RUN_NAME.score.json there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/scienceqa
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava_test_CQM-A.json is in LLaVA's eval.zip; images/, problems.json and pid_splits.json \
come from data/scienceqa of ScienceQA (https://github.com/lupantech/ScienceQA)" \
    "$dir/llava_test_CQM-A.json" "$dir/images/test" "$dir/problems.json"
bench_generate --question_file "$dir/llava_test_CQM-A.json" --image_folder "$dir/images/test" \
    --answers_file "$answers" --single_pred_prompt --max_new_tokens 16 "$@"
bench_score --task sqa --answers "$answers" --annotations "$dir/problems.json" --split test
