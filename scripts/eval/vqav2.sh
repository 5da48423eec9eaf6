#!/usr/bin/env bash
# VQAv2 test-dev: answer LLaVA's question file, then write the submission for the EvalAI server
# (test-dev has no public answers; score a val answers file with `python -m llava.eval.score --task vqav2`).
#   bash scripts/eval/vqav2.sh                                  # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1,2,3 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/vqav2.sh --no_pdrop
#   bash scripts/eval/vqav2.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/vqav2.sh                        # print the commands
# Data under $DATA_ROOT/vqav2/: llava_vqav2_mscoco_test-dev2015.jsonl, llava_vqav2_mscoco_test2015.jsonl
# (every test question, which the server wants listed), test2015/ (images).
# Writes answers/$RUN_NAME.jsonl and answers_upload/$RUN_NAME.json there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/vqav2
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "the question files are in LLaVA's eval.zip; test2015/ is COCO's \
(http://images.cocodataset.org/zips/test2015.zip)" \
    "$dir/llava_vqav2_mscoco_test-dev2015.jsonl" "$dir/llava_vqav2_mscoco_test2015.jsonl" "$dir/test2015"
bench_generate --question_file "$dir/llava_vqav2_mscoco_test-dev2015.jsonl" --image_folder "$dir/test2015" \
    --answers_file "$answers" --max_new_tokens 128 "$@"
bench_score --task vqav2 --answers "$answers" --questions "$dir/llava_vqav2_mscoco_test2015.jsonl" \
    --submission "$dir/answers_upload/$RUN_NAME.json"
