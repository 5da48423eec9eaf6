#!/usr/bin/env bash
# POPE (adversarial / popular / random): answer LLaVA's question file, then accuracy, precision, recall,
# F1 and yes-ratio per split.
#   bash scripts/eval/pope.sh                                   # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/pope.sh --no_pdrop
#   bash scripts/eval/pope.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/pope.sh                         # print the commands
# Data under $DATA_ROOT/pope/: llava_pope_test.jsonl, val2014/ (COCO images),
# coco/coco_pope_{adversarial,popular,random}.json.
# Writes answers/$RUN_NAME.jsonl and answers/$RUN_NAME.score.json there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/pope
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava_pope_test.jsonl is in LLaVA's eval.zip; val2014/ is COCO's \
(http://images.cocodataset.org/zips/val2014.zip); coco/ is POPE's output/coco (https://github.com/AoiDragon/POPE)" \
    "$dir/llava_pope_test.jsonl" "$dir/val2014" "$dir/coco"
bench_generate --question_file "$dir/llava_pope_test.jsonl" --image_folder "$dir/val2014" \
    --answers_file "$answers" --max_new_tokens 16 "$@"
bench_score --task pope --answers "$answers" --annotations "$dir/coco" --questions "$dir/llava_pope_test.jsonl"
