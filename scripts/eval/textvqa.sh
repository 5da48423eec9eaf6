#!/usr/bin/env bash
# TextVQA val: answer LLaVA's question file (with OCR tokens), then VQA soft accuracy.
#   bash scripts/eval/textvqa.sh                                # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/textvqa.sh --no_pdrop
#   bash scripts/eval/textvqa.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/textvqa.sh                      # print the commands
# Data under $DATA_ROOT/textvqa/: llava_textvqa_val_v051_ocr.jsonl, train_images/, TextVQA_0.5.1_val.json.
# Writes answers/$RUN_NAME.jsonl and answers/$RUN_NAME.score.json there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/textvqa
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava_textvqa_val_v051_ocr.jsonl is in LLaVA's eval.zip; TextVQA_0.5.1_val.json \
(https://dl.fbaipublicfiles.com/textvqa/data/TextVQA_0.5.1_val.json) and train_images/ (extracted from \
https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip) come from TextVQA" \
    "$dir/llava_textvqa_val_v051_ocr.jsonl" "$dir/train_images" "$dir/TextVQA_0.5.1_val.json"
bench_generate --question_file "$dir/llava_textvqa_val_v051_ocr.jsonl" --image_folder "$dir/train_images" \
    --answers_file "$answers" --max_new_tokens 128 "$@"
bench_score --task textvqa --answers "$answers" --annotations "$dir/TextVQA_0.5.1_val.json"
