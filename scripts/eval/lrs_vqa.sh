#!/usr/bin/env bash
# LRS-VQA (large remote-sensing images, up to 27,328 px a side): answer coarse to fine (llava.eval.run
# --coarse_to_fine), then accuracy per category and OA / AA per source (FAIR, GLH-Bridge, STAR).
#   bash scripts/eval/lrs_vqa.sh                                # CKPT=llava-hf/llava-v1.6-vicuna-7b-hf (a LLaVA-NeXT)
#   bash scripts/eval/lrs_vqa.sh --pyramid_config lrs-default --max_tiles_per_level 9
#   bash scripts/eval/lrs_vqa.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'   # + PyramidDrop
#   COARSE_TO_FINE=0 bash scripts/eval/lrs_vqa.sh               # the plain any-resolution path, for comparison
#   DRY_RUN=1 bash scripts/eval/lrs_vqa.sh                      # print the commands
# Data under $DATA_ROOT/LRS_VQA/: LRS_VQA_merged.jsonl (question_id, image, text, category, ground_truth) and
# image/ (the FAIR1M, GLH-Bridge and STAR scenes): the Hugging Face dataset ll-13/LRS-VQA, its LRS_VQA.7z.0*
# parts extracted into $DATA_ROOT (github.com/VisionXLab/LRS-VQA). Both are checked before the model loads.
# Writes answers/$RUN_NAME.jsonl and answers/$RUN_NAME.score.json there. One question at a time by default
# (each batch holds one decoded pyramid level per image); pass --batch_size to change it.
# Environment: COARSE_TO_FINE (1), IMAGE_FOLDER ($DATA_ROOT/LRS_VQA/image), and CKPT, RUN_NAME, DATA_ROOT,
# PYTHON, GENERATE, DRY_RUN (scripts/eval/lib/bench.sh).
# Arguments go to llava.eval.run (through generate.sh), after this script's flags.
set -euo pipefail
CKPT=${CKPT:-llava-hf/llava-v1.6-vicuna-7b-hf}
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

dir=$DATA_ROOT/LRS_VQA
questions=$dir/LRS_VQA_merged.jsonl
images=${IMAGE_FOLDER:-$dir/image}
answers=$dir/answers/$RUN_NAME.jsonl
if [[ $DRY_RUN != 1 ]]; then
    for needed in "$questions" "$images"; do
        if [[ ! -e $needed ]]; then
            echo "lrs_vqa.sh: $needed is missing: download the Hugging Face dataset ll-13/LRS-VQA and extract" \
                 "its LRS_VQA.7z.0* parts into $DATA_ROOT (LRS_VQA/LRS_VQA_merged.jsonl, LRS_VQA/image/)" >&2
            exit 2
        fi
    done
fi
mode=(--coarse_to_fine)
if [[ ${COARSE_TO_FINE:-1} != 1 ]]; then mode=(); fi

bench_generate --question_file "$questions" --image_folder "$images" --answers_file "$answers" \
    ${mode[@]+"${mode[@]}"} --batch_size 1 --max_new_tokens 128 "$@"
bench_score --task lrs_vqa --answers "$answers" --annotations "$questions"
