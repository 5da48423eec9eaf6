#!/usr/bin/env bash
# The one launcher: torchrun over llava.train.train with a train config and environment overrides.
# Sourced by the stage scripts (scripts/*_pdrop*.sh), which only choose the default CONFIG:
#
#   CONFIG=configs/train/tiny-finetune.json bash scripts/finetune_pdrop.sh    # CPU / CI: tiny default
#   GPUS=4 GLOBAL_BATCH_SIZE=64 bash scripts/finetune_pdrop.sh                # one node, 4 GPUs
#   bash scripts/finetune_pdrop.sh --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash scripts/finetune_pdrop.sh    # second of two nodes
#   DRY_RUN=1 bash scripts/pretrain_pdrop.sh                                  # print the command only
#   CONFIG=configs/train/llava-1.5-finetune.json bash scripts/lib/launch.sh   # without a stage script
#
# Environment (every variable is optional except CONFIG, which the stage scripts set):
#   CONFIG                   train config JSON (configs/train/*.json): all hyperparameters live there
#   GPUS                     processes per node (default: the GPUs `nvidia-smi -L` lists, narrowed
#                            by CUDA_VISIBLE_DEVICES; 2 on a machine without GPUs)
#   NNODES                   number of nodes (default 1)
#   NODE_RANK                rank of this node, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR, MASTER_PORT rendezvous of node 0 (default 127.0.0.1, 29500)
#   OUTPUT_DIR               -> --output_dir
#   MODEL_NAME_OR_PATH       -> --model_name_or_path
#   VISION_TOWER             -> --vision_tower
#   DATA_PATH                -> --data_path
#   IMAGE_FOLDER             -> --image_folder
#   PRETRAIN_MM_MLP_ADAPTER  -> --pretrain_mm_mlp_adapter
#   GLOBAL_BATCH_SIZE        -> --global_batch_size (gradient accumulation is derived from it, the
#                               world size and the per-device batch)
#   PER_DEVICE_BATCH_SIZE    -> --per_device_train_batch_size
#   DEEPSPEED                -> --deepspeed (a configs/deepspeed/*.json file)
#   WANDB_PROJECT            -> --wandb_project
#   RUN_NAME                 -> --run_name
#   PYTHON                   interpreter that runs torch.distributed.run (torchrun) (default python)
#   DRY_RUN=1                print the effective settings (as '# ' comment lines) and the command(s),
#                            shell-quoted on one line each, instead of running
#   OMP_NUM_THREADS          without GPUs: 1 unless set (each rank is one CPU process)
#   TORCH_EXTENSIONS_DIR     without GPUs: .cache/torch_extensions in the repository unless set
#                            (DeepSpeed compiles its CPU ops there)
#   TINY_ASSETS              where a tiny-*.json config's assets are written (default playground/tiny;
#                            point MODEL_NAME_OR_PATH, VISION_TOWER, DATA_PATH, IMAGE_FOLDER there too)
# Arguments after the script name are passed to llava.train.train last, so they override everything;
# LLaVA's own training flags work too (--version v1, --mm_use_im_start_end False, ...: llava/train/llava_compat.py).
# Before torchrun starts, `python -m llava.train.settings` prints the effective settings (world size,
# per-device batch, gradient accumulation, DeepSpeed config and ZeRO stage, the schedule; on stderr, and
# on stdout with DRY_RUN=1) and stops with one error line when they cannot work (a global batch that
# does not divide, a missing config file, a LLaVA flag with no equivalent). Without GPUs it says that the
# processes are CPU processes.
# Relative paths (CONFIG, DEEPSPEED, OUTPUT_DIR, ...) are relative to the repository root: the
# launcher runs there whatever the current directory. A config named tiny-*.json first writes the
# tiny assets (python -m llava.data.synthetic --out playground/tiny; skipped when present).
set -euo pipefail

PDROP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Number of GPUs this node may use: `nvidia-smi -L`, narrowed by CUDA_VISIBLE_DEVICES when that is
# set; 0 without nvidia-smi or when it finds none.
pdrop_count_gpus() {
    local count=0
    if command -v nvidia-smi > /dev/null 2>&1; then
        count="$({ nvidia-smi -L 2> /dev/null || true; } | grep -c '^GPU' || true)"
    fi
    if (( count > 0 )) && [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        local -a ids=()
        IFS=',' read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
        count=${#ids[@]}
        if [[ "${ids[0]:-}" == -1 || "${ids[0]:-}" == NoDevFiles ]]; then count=0; fi
    fi
    echo "$count"
}

pdrop_require_int() {  # NAME VALUE MIN
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (( 10#$2 < $3 )); then
        echo "launch.sh: $1 must be an integer >= $3, got '$2'" >&2
        exit 2
    fi
}

# One command on one line, shell-quoted (what DRY_RUN=1 prints).
pdrop_print() {
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
}

pdrop_launch() {
    cd "$PDROP_ROOT"
    : "${CONFIG:?set CONFIG to a train config, e.g. CONFIG=configs/train/tiny-finetune.json}"
    if [[ ! -f "$CONFIG" ]]; then
        echo "launch.sh: train config '$CONFIG' not found (relative paths start at $PDROP_ROOT)" >&2
        exit 2
    fi
    local python="${PYTHON:-python}"
    local found_gpus
    found_gpus="$(pdrop_count_gpus)"
    local default_gpus=$found_gpus
    if (( found_gpus == 0 )); then
        default_gpus=2
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
        export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PDROP_ROOT/.cache/torch_extensions}"
    fi
    local gpus="${GPUS:-$default_gpus}" nnodes="${NNODES:-1}" node_rank="${NODE_RANK:-0}"
    local master_addr="${MASTER_ADDR:-127.0.0.1}" master_port="${MASTER_PORT:-29500}"
    pdrop_require_int GPUS "$gpus" 1
    pdrop_require_int NNODES "$nnodes" 1
    pdrop_require_int NODE_RANK "$node_rank" 0
    pdrop_require_int MASTER_PORT "$master_port" 1
    if (( node_rank >= nnodes )); then
        echo "launch.sh: NODE_RANK=$node_rank must be below NNODES=$nnodes" >&2
        exit 2
    fi

    local -a train_args=()
    local var flag
    for var in OUTPUT_DIR:output_dir MODEL_NAME_OR_PATH:model_name_or_path VISION_TOWER:vision_tower \
               DATA_PATH:data_path IMAGE_FOLDER:image_folder PRETRAIN_MM_MLP_ADAPTER:pretrain_mm_mlp_adapter \
               GLOBAL_BATCH_SIZE:global_batch_size PER_DEVICE_BATCH_SIZE:per_device_train_batch_size \
               DEEPSPEED:deepspeed WANDB_PROJECT:wandb_project RUN_NAME:run_name; do
        flag="${var#*:}"
        var="${var%%:*}"
        if [[ -n "${!var:-}" ]]; then
            train_args+=("--$flag" "${!var}")
        fi
    done
    train_args+=("$@")
    local -a cmd=("$python" -m torch.distributed.run --nnodes "$nnodes" --node_rank "$node_rank"
                  --nproc_per_node "$gpus" --master_addr "$master_addr" --master_port "$master_port"
                  -m llava.train.train --config "$CONFIG" ${train_args[@]+"${train_args[@]}"})
    local -a settings=("$python" -m llava.train.settings --world_size "$((gpus * nnodes))" --nodes "$nnodes"
                       --gpus_found "$found_gpus" --config "$CONFIG" -- ${train_args[@]+"${train_args[@]}"})

    local -a prepare=()
    if [[ "$(basename "$CONFIG")" == tiny-* ]]; then
        prepare=("$python" -m llava.data.synthetic --out "${TINY_ASSETS:-playground/tiny}")
    fi
    if [[ "${DRY_RUN:-0}" != 0 ]]; then
        "${settings[@]}"
        if (( ${#prepare[@]} )); then pdrop_print "${prepare[@]}"; fi
        pdrop_print "${cmd[@]}"
        return 0
    fi
    "${settings[@]}" >&2
    if (( ${#prepare[@]} )); then "${prepare[@]}"; fi
    exec "${cmd[@]}"
}

# Run directly (bash scripts/lib/launch.sh ...) rather than sourced by a stage script.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    pdrop_launch "$@"
fi
