#!/usr/bin/env bash
# LLaVA-1.5 stage 2 with PyramidDrop and LoRA adapters on the language model (after pretrain_pdrop.sh).
# Hyperparameters: configs/train/llava-1.5-lora.json; flags given to this script override it.
# Environment (see scripts/lib/launch.sh):
#   CONFIG GPUS NNODES NODE_RANK MASTER_ADDR MASTER_PORT OUTPUT_DIR MODEL_NAME_OR_PATH VISION_TOWER DATA_PATH
#   IMAGE_FOLDER PRETRAIN_MM_MLP_ADAPTER GLOBAL_BATCH_SIZE PER_DEVICE_BATCH_SIZE DEEPSPEED WANDB_PROJECT
#   RUN_NAME PYTHON DRY_RUN (OMP_NUM_THREADS, TORCH_EXTENSIONS_DIR without GPUs)
# Examples:
#   bash scripts/finetune_lora_pdrop.sh
#   CONFIG=configs/train/tiny-lora.json bash scripts/finetune_lora_pdrop.sh   # CPU / CI
#   bash scripts/finetune_lora_pdrop.sh --lora_r 64 --lora_alpha 128
set -euo pipefail
CONFIG=${CONFIG:-configs/train/llava-1.5-lora.json}
source "$(dirname "${BASH_SOURCE[0]}")/lib/launch.sh"
pdrop_launch "$@"
