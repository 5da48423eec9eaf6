#!/usr/bin/env bash
# MME: answer LLaVA's question file, then per-subtask acc / acc+ and the perception and cognition scores;
# also writes the result files the official MME tool (eval_tool/calculation.py) reads.
#   bash scripts/eval/mme.sh                                    # CKPT=checkpoints/llava-v1.5-7b-pdrop
#   GPUS=0,1 CKPT=liuhaotian/llava-v1.5-7b RUN_NAME=llava-1.5-7b bash scripts/eval/mme.sh --no_pdrop
#   bash scripts/eval/mme.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/mme.sh                          # print the commands
# Data under $DATA_ROOT/MME/: llava_mme.jsonl, MME_Benchmark_release_version/ (images and answers).
# Writes answers/$RUN_NAME.jsonl (and .score.json) and eval_tool/answers/$RUN_NAME/<subtask>.txt there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/MME
answers=$dir/answers/$RUN_NAME.jsonl
bench_require "llava_mme.jsonl is in LLaVA's eval.zip; MME_Benchmark_release_version/ comes from MME's \
authors (https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation)" \
    "$dir/llava_mme.jsonl" "$dir/MME_Benchmark_release_version"
bench_generate --question_file "$dir/llava_mme.jsonl" --image_folder "$dir/MME_Benchmark_release_version" \
    --answers_file "$answers" --max_new_tokens 16 "$@"
bench_score --task mme --answers "$answers" --annotations "$dir/MME_Benchmark_release_version" \
    --submission "$dir/eval_tool/answers/$RUN_NAME"
