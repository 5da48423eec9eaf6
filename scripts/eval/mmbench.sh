#!/usr/bin/env bash
# MMBench: answer the benchmark's TSV asking for the option's letter, then single-pass and CircularEval
# accuracy (dev splits) and the submission TSV for the MMBench server.
#   bash scripts/eval/mmbench.sh                                # SPLIT=mmbench_dev_20230712
#   SPLIT=mmbench_dev_cn_20231003 bash scripts/eval/mmbench.sh  # MMBench-CN
#   SPLIT=mmbench_test_20230712 bash scripts/eval/mmbench.sh    # test: no answers, submission only
#   bash scripts/eval/mmbench.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   DRY_RUN=1 bash scripts/eval/mmbench.sh                      # print the commands
# Data under $DATA_ROOT/mmbench/: $SPLIT.tsv (questions, options, base64 images; answers on dev).
# Writes answers/$SPLIT/$RUN_NAME.jsonl (and .score.json) and answers_upload/$SPLIT/$RUN_NAME.tsv there.
# Missing files stop the script before the model loads, saying where they come from.
# Environment: SPLIT, and CKPT, RUN_NAME, DATA_ROOT, PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

SPLIT=${SPLIT:-mmbench_dev_20230712}
dir=$DATA_ROOT/mmbench
questions=$dir/$SPLIT.tsv
answers=$dir/answers/$SPLIT/$RUN_NAME.jsonl
task=mmbench lang=()
if [[ $SPLIT == *_cn_* ]]; then task=mmbench_cn lang=(--lang cn); fi  # LLaVA asks MMBench-CN in Chinese
score=(--task "$task" --answers "$answers" --questions "$questions"
       --submission "$dir/answers_upload/$SPLIT/$RUN_NAME.tsv")
if [[ $SPLIT != *test* ]]; then score+=(--annotations "$questions"); fi

bench_require "$SPLIT.tsv comes from MMBench \
(https://download.openmmlab.com/mmclassification/datasets/mmbench/$SPLIT.tsv)" "$questions"
bench_generate --question_file "$questions" --answers_file "$answers" --single_pred_prompt ${lang[@]+"${lang[@]}"} \
    --max_new_tokens 16 "$@"
bench_score "${score[@]}"
