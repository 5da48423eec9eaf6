"""LLaVA's own command lines, as its scripts write them (flag names and values, written from its docs and scripts).

``scripts/v1_5/pretrain.sh`` and ``finetune.sh`` (``deepspeed llava/train/train_mem.py ...``), the official
PyramidDrop ``pdrop_train/finetune.sh`` (the same plus ``--layer_list`` / ``--image_token_ratio_list``),
and the evaluation scripts ``eval/textvqa.sh``, ``gqa.sh`` (one chunk per GPU), ``sqa.sh``,
``mmbench.sh``, ``mmbench_cn.sh`` and ``mmvet.sh``, with the official PyramidDrop additions. Paths are
placeholders in braces, filled by :func:`fill`.
"""

from __future__ import annotations

import shlex

PRETRAIN = """
    --deepspeed ./scripts/zero2.json
    --model_name_or_path {llm}
    --version plain
    --data_path {data}/pretrain.json
    --image_folder {data}/images
    --vision_tower {vision}
    --mm_projector_type mlp2x_gelu
    --tune_mm_mlp_adapter True
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --bf16 True
    --output_dir {out}
    --num_train_epochs 1
    --per_device_train_batch_size 32
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 24000
    --save_total_limit 1
    --learning_rate 1e-3
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to wandb
"""

FINETUNE = """
    --deepspeed ./scripts/zero3.json
    --model_name_or_path {llm}
    --version v1
    --data_path {data}/finetune.json
    --image_folder {data}/images
    --vision_tower {vision}
    --pretrain_mm_mlp_adapter {adapter}
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 True
    --output_dir {out}
    --num_train_epochs 1
    --per_device_train_batch_size 16
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 50000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to wandb
"""

PDROP_TRAIN = "--layer_list {layer_list} --image_token_ratio_list {ratio_list}"  # official pdrop_train/finetune.sh

TEXTVQA = """
    --model-path {ckpt}
    --question-file {questions}
    --image-folder {images}
    --answers-file {answers}
    --temperature 0
    --conv-mode vicuna_v1
"""
GQA_CHUNK = TEXTVQA + " --num-chunks {chunks} --chunk-idx {idx}"
# the official eval scripts' form: the ratio list starts with stage 0's 1.0
PDROP_EVAL = "--layer_list '{layer_list}' --image_token_ratio_list \"{ratio_list}\" --pdrop_infer"
SQA = TEXTVQA + " --single-pred-prompt"
MMBENCH = """
    --model-path {ckpt}
    --question-file {questions}
    --answers-file {answers}
    --single-pred-prompt
    --temperature 0
    --conv-mode vicuna_v1
"""
MMBENCH_CN = MMBENCH + " --lang cn"
MMVET = TEXTVQA  # model_vqa: the same flags


def fill(template: str, **values) -> list[str]:
    """The flags of ``template`` with its ``{placeholders}`` filled, split as the shell would."""
    return shlex.split(" ".join(template.split()).format(**{k: str(v) for k, v in values.items()}))
