#!/usr/bin/env bash
# LLaVA-1.5 stage 1 with PyramidDrop: train the projector (writes mm_projector.bin).
# Hyperparameters: configs/train/llava-1.5-pretrain.json; flags given to this script override it.
# Environment (see scripts/lib/launch.sh):
#   CONFIG GPUS NNODES NODE_RANK MASTER_ADDR MASTER_PORT OUTPUT_DIR MODEL_NAME_OR_PATH VISION_TOWER DATA_PATH
#   IMAGE_FOLDER PRETRAIN_MM_MLP_ADAPTER GLOBAL_BATCH_SIZE PER_DEVICE_BATCH_SIZE DEEPSPEED WANDB_PROJECT
#   RUN_NAME PYTHON DRY_RUN (OMP_NUM_THREADS, TORCH_EXTENSIONS_DIR without GPUs)
# Examples:
#   bash scripts/pretrain_pdrop.sh                                      # every GPU of this node
#   CONFIG=configs/train/tiny-pretrain.json bash scripts/pretrain_pdrop.sh   # CPU / CI
#   GPUS=4 DATA_PATH=my_captions.json IMAGE_FOLDER=my_images bash scripts/pretrain_pdrop.sh
set -euo pipefail
CONFIG=${CONFIG:-configs/train/llava-1.5-pretrain.json}
source "$(dirname "${BASH_SOURCE[0]}")/lib/launch.sh"
pdrop_launch "$@"
