"""Training arguments: the flags LLaVA users know, plus PyramidDrop's schedule, every field documented.

Three dataclasses parsed by ``transformers.HfArgumentParser``; a ``--config configs/train/NAME.json``
file gives defaults that command-line flags override (see :func:`llava.train.train.parse_args`).
The PyramidDrop schedule flags are :class:`llava.pdrop.args.ScheduleArguments`, shared with eval and bench.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import transformers

from ..pdrop.args import ScheduleArguments
from .settings import accumulation_steps


@dataclass
class ModelArguments(ScheduleArguments):
    """The model to train; the schedule flags (``layer_list``, ``pdrop_schedule``, ...) come from
    :class:`llava.pdrop.args.ScheduleArguments`, the same dialect as every other command."""

    model_name_or_path: str = field(metadata={"help": (
        "A language model (Hub id or local folder: the model is assembled from it, --vision_tower and a new "
        "projector) or a full LLaVA / LLaVA-NeXT checkpoint in transformers format (loaded as is).")})
    vision_tower: str | None = field(default=None, metadata={"help": (
        "CLIP vision tower (Hub id or local folder) when assembling, e.g. openai/clip-vit-large-patch14-336.")})
    mm_projector_type: str = field(default="mlp2x_gelu", metadata={"help": (
        "Projector from vision features to the LLM: only mlp2x_gelu (transformers' LLaVA projector) exists.")})
    mm_vision_select_layer: int = field(default=-2, metadata={"help": "Vision tower layer whose features are used."})
    mm_vision_select_feature: str = field(default="patch", metadata={"help": (
        "patch (drop CLS, LLaVA's default) or cls_patch (keep it).")})
    mm_patch_merge_type: str = field(default="flat", metadata={"help": (
        "flat (LLaVA-1.5) or spatial_unpad (LLaVA-NeXT: any-resolution crops + newline tokens).")})
    image_grid_pinpoints: str | None = field(default=None, metadata={"help": (
        "LLaVA-NeXT crop grid as JSON, e.g. '[[336,672],[672,336],[672,672],[1008,336],[336,1008]]'; "
        "default: the vision size times 1x2, 2x1, 2x2, 3x1, 1x3.")})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": (
        "mm_projector.bin / .safetensors written by the pretraining stage, loaded into the projector.")})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager, sdpa or flash_attention_2."})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA-format JSON or JSONL file(s), comma-separated."})
    image_folder: str | None = field(default=None, metadata={"help": "Folder the records' image paths are relative to."})
    version: str = field(default="vicuna_v1", metadata={"help": (
        "Conversation template: plain (pretraining captions), vicuna_v1 (LLaVA-1.5), llama_3, chatml (Qwen), "
        "or chat_template (the tokenizer's own); LLaVA's names (v1, llava_v1, llava_llama_3, qwen_1_5, ...) are mapped "
        "to these (llava/train/llava_compat.py).")})
    image_aspect_ratio: str = field(default="pad", metadata={"help": (
        "pad (square with the processor's mean colour, LLaVA-1.5), square (resize + crop) or anyres (LLaVA-NeXT).")})
    skip_bad_images: bool = field(default=False, metadata={"help": (
        "Skip samples whose image is missing or corrupt (counted in the log) instead of stopping with an error.")})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for the one-time index of the data file."})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": (
        "Pretraining stage: train the projector only (LLM and vision tower frozen); mm_projector.bin is saved.")})
    freeze_backbone: bool = field(default=False, metadata={"help": "Freeze the language model."})
    unfreeze_mm_vision_tower: bool = field(default=False, metadata={"help": "Train the vision tower too."})
    mm_projector_lr: float | None = field(default=None, metadata={"help": "Learning rate of the projector (default: --learning_rate)."})
    mm_vision_tower_lr: float | None = field(default=None, metadata={"help": "Learning rate of the vision tower (default: --learning_rate)."})
    group_by_modality_length: bool = field(default=False, metadata={"help": (
        "Batches of image samples and batches of text-only samples, each grouped by length (LLaVA's sampler).")})
    model_max_length: int = field(default=2048, metadata={"help": (
        "Longest sample in tokens, image tokens included. Longer samples are cut in their final text only, "
        "never inside an image span; a sample whose images do not fit is refused with its id.")})
    global_batch_size: int | None = field(default=None, metadata={"help": (
        "Samples per optimizer step over all processes; sets gradient_accumulation_steps to "
        "global_batch_size / (world size x per_device_train_batch_size), which must divide exactly.")})
    lora_enable: bool = field(default=False, metadata={"help": "Train LoRA adapters on the language model (PEFT)."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={
        "help": "Comma-separated module names of the language model that get adapters."})
    lora_merge: bool = field(default=True, metadata={"help": (
        "At the end, also save the adapters merged into a standard checkpoint (the adapters stay in adapter/).")})
    bits: int = field(default=16, metadata={"help": "4 or 8: QLoRA with bitsandbytes (CUDA only); 16: no quantisation."})
    wandb_project: str | None = field(default=None, metadata={"help": (
        "wandb project (sets WANDB_PROJECT); runs offline when no WANDB_API_KEY is set.")})
    auto_resume: bool = field(default=True, metadata={"help": (
        "Resume from the newest complete checkpoint-* in output_dir when --resume_from_checkpoint is not given.")})
    # --- the coarse-to-fine focus module (LRS-VQA's RFM; llava/pyramid/distill.py) ---
    train_focus_module: bool = field(default=False, metadata={"help": (
        "Train only a focus module for --coarse_to_fine --focus trained: copies of the LLM's first layers, "
        "distilled from the full LLM's text-to-image attention; the LLaVA-NeXT checkpoint stays frozen. "
        "Saved as focus_module.safetensors next to the model.")})
    focus_module_layers: int = field(default=2, metadata={"help": (
        "Layers the focus module runs before scoring with the next one (the focus_layer it is used with); "
        "initialised from the LLM's layers 0 .. N.")})
    focus_distill_layers: str | None = field(default=None, metadata={"help": (
        "JSON list of the LLM's layers (0-based) whose attention the module learns, averaged, e.g. '[8,12,16]'; "
        "default: the module's scoring layer (focus_module_layers) and every deeper one.")})

    def __post_init__(self):
        if self.global_batch_size is not None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            self.gradient_accumulation_steps = accumulation_steps(self.global_batch_size, world,
                                                                  self.per_device_train_batch_size)
        if self.bits not in (4, 8, 16):
            raise ValueError(f"bits must be 4, 8 or 16, got {self.bits}")
        with warnings.catch_warnings():
            # transformers 5.23 renamed gradient_checkpointing to activation_checkpointing, which 5.17-5.22 (in the
            # pinned range) do not know: the configs keep the old name and only this rename's warning is silenced
            warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
            super().__post_init__()
