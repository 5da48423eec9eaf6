"""LLaVA's (and the official PyramidDrop code's) training flags, rewritten into ours before parsing.

``llava.train.train`` (and ``llava/train/train_mem.py``, LLaVA's entry point name) apply :data:`RULES`
to the command line first (:func:`to_train_argv`), so the flag list of LLaVA's
``scripts/v1_5/finetune.sh`` runs as it is: ``--version v1`` is our ``vicuna_v1`` template,
``--mm_use_im_start_end False`` and ``--lazy_preprocess True`` are what we do anyway and are dropped,
``--warmup_ratio`` and ``--evaluation_strategy`` get transformers 5's names, ``--deepspeed
./scripts/zero3.json`` finds ``configs/deepspeed/zero3.json``. A flag or value with no equivalent is
refused with one line saying what to use instead. The flags LLaVA and we share (:data:`SHARED`) pass
through unchanged, the schedule flags included (``--layer_list``, ``--image_token_ratio_list``:
llava/pdrop/args.py). The table is printed by ``--help`` and in the README.

Light on purpose (no torch or transformers at import): the launcher's settings check uses it.
"""

from __future__ import annotations

import ast
import json
import logging
import textwrap
from pathlib import Path

from ..compat import Rule, conv_mode, describe, dropped, is_true, only, only_false, translate
from ..paths import CONFIGS_DIR

LOG = logging.getLogger(__name__)
ASPECT_RATIOS = ("pad", "square", "anyres")  # llava/data/images.py's (kept here to stay light)
LLAVA_DEEPSPEED = ("zero2.json", "zero3.json", "zero3_offload.json")  # LLaVA's scripts/*.json, ours by name

# flags LLaVA's scripts pass that mean the same here: accepted as they are
SHARED = ("--model_name_or_path", "--data_path", "--image_folder", "--vision_tower", "--mm_vision_select_layer",
          "--mm_vision_select_feature", "--mm_patch_merge_type", "--pretrain_mm_mlp_adapter", "--tune_mm_mlp_adapter",
          "--freeze_backbone", "--unfreeze_mm_vision_tower", "--mm_vision_tower_lr", "--mm_projector_lr",
          "--group_by_modality_length", "--model_max_length", "--lora_enable", "--lora_r", "--lora_alpha",
          "--lora_dropout", "--bits", "--layer_list", "--image_token_ratio_list", "--bf16", "--fp16",
          "--gradient_checkpointing", "--dataloader_num_workers", "--report_to", "--run_name", "--output_dir",
          "--num_train_epochs", "--per_device_train_batch_size", "--per_device_eval_batch_size",
          "--gradient_accumulation_steps", "--save_strategy", "--save_steps", "--save_total_limit",
          "--learning_rate", "--weight_decay", "--lr_scheduler_type", "--logging_steps", "--attn_implementation")


def warmup_ratio(value: str) -> str:
    """``--warmup_ratio R`` -> ``--warmup_steps R``: transformers 5 reads a value below 1 as a fraction of the steps."""
    if not 0 <= float(value) < 1:
        raise ValueError("a warmup ratio is in [0, 1); for a number of steps use --warmup_steps N")
    return value


def tf32(value: str) -> str | None:
    """Kept where TF32 exists (NVIDIA Ampere or newer); dropped elsewhere, with a warning (transformers refuses it)."""
    if not is_true(value):
        return value
    from transformers.utils import is_torch_tf32_available  # only when the flag is given

    if is_torch_tf32_available():
        return value
    LOG.warning("--tf32 True ignored: TF32 needs an NVIDIA Ampere or newer GPU, and there is none here")
    return None


def deepspeed_config(value: str) -> str:
    """LLaVA's ``./scripts/zero3.json`` (not present here) -> ``configs/deepspeed/zero3.json``; other paths as given."""
    path = Path(value)
    if path.is_file() or path.name not in LLAVA_DEEPSPEED:
        return value
    return str(CONFIGS_DIR / "deepspeed" / path.name)


def aspect_ratio(value: str) -> str:
    if value not in ASPECT_RATIOS:
        raise ValueError(f"ours are {', '.join(ASPECT_RATIOS)} (anyres: LLaVA-NeXT's crop grid, "
                         "--image_grid_pinpoints)")
    return value


def grid_pinpoints(value: str) -> str:
    """LLaVA-NeXT's Python form ``[(336, 672), (672, 336)]`` -> JSON ``[[336, 672], [672, 336]]``."""
    try:
        points = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError("write the crop sizes as a list of (width, height) pairs, e.g. '[(336, 672), (672, 336)]' "
                         "(the '(1x1),...,(6x6)' range form is not supported)") from None
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise ValueError("expected a list of (width, height) pairs")
    return json.dumps([list(p) for p in points])


def projector(value: str) -> str:
    if value != "mlp2x_gelu":
        raise ValueError("only mlp2x_gelu exists here (transformers' LLaVA projector: two linear layers with GELU)")
    return value


RULES = [
    Rule("--version", "--version", "template: v1, llava_v1 -> vicuna_v1; plain; llava_llama_3 -> llama_3; "
         "qwen_1_5, qwen_2, chatml_direct -> chatml; others refused naming ours", value=conv_mode),
    Rule("--mm_use_im_start_end", None, "False: dropped (no image start/end tokens here); True: refused",
         value=only_false("image start/end tokens are not supported (transformers' LLaVA has none)"), kind="bool"),
    Rule("--mm_use_im_patch_token", None, "False: dropped (no patch tokens here); True: refused",
         value=only_false("image patch tokens are not supported (transformers' LLaVA has none)"), kind="bool"),
    Rule("--lazy_preprocess", None, "dropped: the data file is indexed once and read lazily anyway", value=dropped,
         kind="bool"),
    Rule("--warmup_ratio", "--warmup_steps", "--warmup_steps R (transformers 5: below 1 is a fraction of the steps)",
         value=warmup_ratio),
    Rule("--evaluation_strategy", "--eval_strategy", "--eval_strategy (transformers' current name)"),
    Rule("--tf32", "--tf32", "kept on NVIDIA Ampere or newer; dropped with a warning elsewhere (CPU)", value=tf32,
         kind="bool"),
    Rule("--deepspeed", "--deepspeed", "LLaVA's ./scripts/zero2.json, zero3.json, zero3_offload.json -> "
         "configs/deepspeed/ (when the path given does not exist)", value=deepspeed_config),
    Rule("--image_aspect_ratio", "--image_aspect_ratio", "pad, square, anyres as they are; others (anyres_max_9, ...) "
         "refused", value=aspect_ratio),
    Rule("--image_grid_pinpoints", "--image_grid_pinpoints", "LLaVA-NeXT's '[(336, 672), ...]' -> JSON",
         value=grid_pinpoints),
    Rule("--mm_projector_type", "--mm_projector_type", "mlp2x_gelu; others refused", value=projector),
    Rule("--freeze_mm_mlp_adapter", None, "False: dropped; True: refused (finetune the projector, or pretrain with "
         "--tune_mm_mlp_adapter)", value=only_false("freezing the projector while finetuning is not supported"),
         kind="bool"),
    Rule("--double_quant", None, "True: dropped (--bits 4 always double-quantises); False: refused",
         value=lambda v: None if is_true(v) else _refuse("--bits 4 always uses double quantisation"), kind="bool"),
    Rule("--quant_type", None, "nf4: dropped (--bits 4 is NF4); others refused",
         value=only("nf4", why="--bits 4 quantises to nf4 only")),
    Rule("--lora_bias", None, "none: dropped (ours); others refused", value=only("none", why="LoRA biases are not "
         "trained here")),
    Rule("--lora_weight_path", None, "empty: dropped; a path: refused", value=only("", why="LoRA training starts "
         "from new adapters; resume a run with --resume_from_checkpoint")),
    Rule("--mpt_attn_impl", None, "dropped (MPT models only)", value=dropped),
    Rule("--cache_dir", None, "refused: set HF_HOME (the Hub cache) instead", refused="set HF_HOME (where "
         "transformers caches downloads) instead"),
]


def _refuse(why: str):
    raise ValueError(why)


def to_train_argv(argv: list[str]) -> list[str]:
    """LLaVA's training flags -> ours (ValueError naming the flag and what to use instead)."""
    return translate(argv, RULES)


def help_epilog() -> str:
    """The mapping, for ``python -m llava.train.train --help``."""
    shared = textwrap.fill(" ".join(SHARED), width=110, initial_indent="    ", subsequent_indent="    ")
    return ("LLaVA's training flags (its scripts/v1_5/*.sh, the official PyramidDrop scripts) are accepted:\n"
            f"{describe(RULES)}\n  and, as they are:\n{shared}")
