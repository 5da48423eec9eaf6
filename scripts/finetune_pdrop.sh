#!/usr/bin/env bash
# LLaVA-1.5 stage 2 with PyramidDrop: full finetune on the instruction mix (after pretrain_pdrop.sh).
# Hyperparameters: configs/train/llava-1.5-finetune.json; flags given to this script override it.
# Environment (see scripts/lib/launch.sh):
#   CONFIG GPUS NNODES NODE_RANK MASTER_ADDR MASTER_PORT OUTPUT_DIR MODEL_NAME_OR_PATH VISION_TOWER DATA_PATH
#   IMAGE_FOLDER PRETRAIN_MM_MLP_ADAPTER GLOBAL_BATCH_SIZE PER_DEVICE_BATCH_SIZE DEEPSPEED WANDB_PROJECT
#   RUN_NAME PYTHON DRY_RUN (OMP_NUM_THREADS, TORCH_EXTENSIONS_DIR without GPUs)
# Examples:
#   bash scripts/finetune_pdrop.sh
#   CONFIG=configs/train/tiny-finetune.json bash scripts/finetune_pdrop.sh   # CPU / CI (run tiny-pretrain first)
#   bash scripts/finetune_pdrop.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   OUTPUT_DIR=checkpoints/my-run GLOBAL_BATCH_SIZE=64 bash scripts/finetune_pdrop.sh
#   sbatch scripts/slurm/pdrop.sbatch                                  # 2 nodes x 8 GPUs
set -euo pipefail
CONFIG=${CONFIG:-configs/train/llava-1.5-finetune.json}
source "$(dirname "${BASH_SOURCE[0]}")/lib/launch.sh"
pdrop_launch "$@"
