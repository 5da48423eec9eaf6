"""Train LLaVA / LLaVA-NeXT with PyramidDrop: pretraining (projector), finetuning, LoRA, QLoRA.

Launch (what ``scripts/*_pdrop.sh`` run; any flag overrides the ``--config`` file)::

    torchrun --nproc_per_node 8 -m llava.train.train --config configs/train/llava-1.5-finetune.json \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
    torchrun --nproc_per_node 2 -m llava.train.train --config configs/train/tiny-finetune.json  # CPU, gloo

Steps: parse the arguments (config file + flags), set up logging and the CPU process group,
build the model (assemble LLM + vision tower + projector, or load a LLaVA checkpoint), choose what
trains, build the dataset, train (resuming from the newest complete checkpoint), save.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import logging
import os
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import torch
import transformers

from ..cli import OneLineErrors, check_model_source, cli_main, unknown_flags_message
from ..data import DataCollatorForSupervisedDataset, ImagePreprocessor, LazySupervisedDataset
from ..model.assemble import VisionSpec, assemble_llava, for_generation, is_llava_checkpoint, load_projector
from ..model.builder import llava_class
from ..paths import TRAINER_STATE_FILE, TRAINING_ARGS_FILE
from ..pdrop.args import add_deprecated_aliases, file_defaults_under_flags
from ..pdrop.flops import ModelShape
from ..pyramid.distill import setup_focus_training
from .arguments import DataArguments, ModelArguments, TrainingArguments
from .checkpoints import find_resume_checkpoint, refuse_finished_run
from .llava_compat import help_epilog, to_train_argv
from .preflight import check_answer_coverage, check_free_space, check_output_dir, remove_bad_images
from .trainer import STAGING, LLaVATrainer, training_args_json

LOG = transformers.utils.logging.get_logger(__name__)
DATACLASSES = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """``--config FILE`` (JSON of any fields below) gives defaults; command-line flags override them.

    LLaVA's flags are rewritten into ours first (llava/train/llava_compat.py). Unknown keys in the file
    and unknown flags are errors naming them. On a machine without CUDA, a process group on gloo is
    created first so DeepSpeed and accelerate agree on the world size.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _pop_flag(argv, "--config")
    defaults = load_train_config(config_path) if config_path else {}
    argv = to_train_argv(argv)
    defaults = file_defaults_under_flags(defaults, argv)  # e.g. --no_pdrop beats the file's pdrop_schedule
    if not {"-h", "--help"} & set(argv):
        _prepare_cpu_processes(defaults, argv)
    parser = build_parser(defaults)
    model_args, data_args, training_args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True)
    if unknown:
        raise ValueError(unknown_flags_message(unknown, [o for a in parser._actions for o in a.option_strings]))
    return model_args, data_args, training_args


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the epilog's table kept as written."""


class _Parser(OneLineErrors, transformers.HfArgumentParser):
    """HF's dataclass parser with one-line errors."""


def build_parser(defaults: dict | None = None) -> transformers.HfArgumentParser:
    """Training's flags (the three dataclasses), ``--config`` and the file's ``defaults``; LLaVA's table in the help."""
    parser = _Parser(
        DATACLASSES, prog="python -m llava.train.train", formatter_class=_HelpFormatter, epilog=help_epilog(),
        usage="python -m llava.train.train [--config FILE] [--FLAG VALUE ...]   (--help lists every flag)")
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=(
        "a train config JSON (configs/train/*.json) whose fields are the defaults; flags given after it override"))
    add_deprecated_aliases(parser)  # --lambda, --stages, --position_mode, --schedule (until 0.3)
    parser.set_defaults(**(defaults or {}))
    for action in parser._actions:  # a field given by the file is no longer required on the command line
        if action.dest in (defaults or {}):
            action.required = False
    return parser


def load_train_config(path: str | Path) -> dict:
    """The fields of a ``configs/train/*.json`` file (its ``description`` dropped), checked against the dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train config {path} does not exist")
    data = json.loads(path.read_text())
    data.pop("description", None)
    known = {f.name for cls in DATACLASSES for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown training arguments {unknown}")
    return data


def _pop_flag(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 == len(argv):
                raise ValueError(f"{flag} needs a value")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def _prepare_cpu_processes(defaults: dict, argv: list[str]) -> None:
    """Several CPU processes: gloo, and make accelerate use that state (see docs/environment-notes)."""
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return
    from accelerate import PartialState

    if defaults.get("deepspeed") or any(a.startswith("--deepspeed") for a in argv):
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    defaults.setdefault("accelerator_config", {"use_configured_state": True})


# --------------------------------------------------------------------------- steps
def setup_logging(training_args) -> None:
    """Log level per rank; wandb offline when it has no API key (and no WANDB_MODE was chosen)."""
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    if training_args.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", training_args.wandb_project)
    if "wandb" in (training_args.report_to or []) and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
        LOG.warning("WANDB_API_KEY is not set: wandb logs offline (sync later with `wandb sync`)")


def setup_model(model_args, data_args, training_args):
    """The model (assembled or loaded), its processor, the schedule set, what trains chosen."""
    model, processor = _load_or_assemble(model_args, training_args)
    if data_args.image_aspect_ratio == "anyres" and model.config.model_type != "llava_next":
        raise ValueError("image_aspect_ratio=anyres needs a LLaVA-NeXT model (--mm_patch_merge_type spatial_unpad)")
    if model.config.model_type == "llava_next" and data_args.image_aspect_ratio != "anyres":
        raise ValueError(f"a LLaVA-NeXT model needs --image_aspect_ratio anyres, not {data_args.image_aspect_ratio!r}")
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    # the flags' schedule, or the loaded checkpoint's own (the rules: llava/pdrop/args.py)
    model.set_pdrop_config(model_args.resolve(ModelShape.from_config(model.config), model.pdrop_config))
    if training_args.should_log:
        LOG.warning("PyramidDrop: %s", model.pdrop_config or "off")
    model.config.get_text_config().use_cache = False
    if training_args.train_focus_module:  # the focus module alone trains (llava/pyramid/distill.py)
        model = setup_focus_training(model, training_args)
    else:
        model = choose_trainable(model, model_args, training_args)
    return model, processor


def _load_or_assemble(model_args, training_args):
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    quantization = _quantization_config(training_args, dtype)
    if is_llava_checkpoint(model_args.model_name_or_path):
        saved = {} if model_args.uses_fallback() else {"pdrop_config": None}  # a replaced schedule is not read
        model = llava_class(model_args.model_name_or_path).from_pretrained(
            model_args.model_name_or_path, dtype=dtype, quantization_config=quantization,
            attn_implementation=model_args.attn_implementation, **saved)
        return model, for_generation(transformers.AutoProcessor.from_pretrained(model_args.model_name_or_path))
    if not model_args.vision_tower:
        raise ValueError(f"{model_args.model_name_or_path} is a language model: pass --vision_tower to assemble a "
                         "LLaVA from it (or give a full LLaVA checkpoint)")
    if quantization is not None:
        raise ValueError("QLoRA (--bits 4/8) starts from a full LLaVA checkpoint: assemble one first with "
                         "python -m llava.model.assemble (or run the pretraining stage)")
    pinpoints = json.loads(model_args.image_grid_pinpoints) if model_args.image_grid_pinpoints else None
    vision = VisionSpec(model_args.vision_tower, model_args.mm_vision_select_layer, model_args.mm_vision_select_feature,
                        model_args.mm_projector_type, model_args.mm_patch_merge_type, pinpoints)
    with _zero3_init_disabled(training_args):  # built whole on each rank; DeepSpeed partitions it at initialize
        return assemble_llava(model_args.model_name_or_path, vision, dtype=dtype,
                              attn_implementation=model_args.attn_implementation, seed=training_args.seed)


def _quantization_config(training_args, dtype):
    if training_args.bits == 16:
        return None
    if not training_args.lora_enable:
        raise ValueError(f"--bits {training_args.bits} quantises the language model for QLoRA: add --lora_enable")
    if not torch.cuda.is_available():
        raise ValueError(f"QLoRA (--bits {training_args.bits}) needs a CUDA GPU and bitsandbytes; none is available")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError("QLoRA needs bitsandbytes: pip install bitsandbytes") from err
    skip = ["vision_tower", "multi_modal_projector", "lm_head"]
    if training_args.bits == 4:
        return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True,
                                               bnb_4bit_quant_type="nf4", llm_int8_skip_modules=skip)
    return transformers.BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


class _zero3_init_disabled:
    """Turn off transformers' ZeRO-3 construction-time partitioning while the model is assembled."""

    def __init__(self, training_args):
        self.config = getattr(training_args, "hf_deepspeed_config", None)

    def __enter__(self):
        if self.config is not None:
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()

    def __exit__(self, *exc):
        if self.config is not None:
            from transformers.integrations.deepspeed import set_hf_deepspeed_config

            set_hf_deepspeed_config(self.config)


def choose_trainable(model, model_args, training_args):
    """Pretraining: projector only. Finetuning: LLM + projector (+ vision tower). LoRA: adapters + projector."""
    model.requires_grad_(False)
    llava = model.model
    if training_args.lora_enable:
        return _wrap_lora(model, training_args)
    if not training_args.tune_mm_mlp_adapter:
        if not training_args.freeze_backbone:
            llava.language_model.requires_grad_(True)
            model.lm_head.requires_grad_(True)
        if training_args.unfreeze_mm_vision_tower:
            llava.vision_tower.requires_grad_(True)
    llava.multi_modal_projector.requires_grad_(True)
    if hasattr(llava, "image_newline"):
        llava.image_newline.requires_grad_(True)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    _log_trainable(model)
    return model


def _wrap_lora(model, training_args):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if training_args.bits < 16:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    names = "|".join(n.strip() for n in training_args.lora_target_modules.split(",") if n.strip())
    config = LoraConfig(r=training_args.lora_r, lora_alpha=training_args.lora_alpha, lora_dropout=training_args.lora_dropout,
                        target_modules=rf".*language_model.*\.({names})", modules_to_save=["multi_modal_projector"],
                        bias="none")
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    model = get_peft_model(model, config)
    newline = getattr(model.get_base_model().model, "image_newline", None)  # LLaVA-NeXT: trains with the projector
    if newline is not None:
        newline.requires_grad_(True)
    _log_trainable(model)
    return model


def _log_trainable(model) -> None:
    def count(p):  # ZeRO-3 partitioned parameters hold their full size in ds_numel
        return getattr(p, "ds_numel", p.numel())

    total = sum(count(p) for p in model.parameters())
    trainable = sum(count(p) for p in model.parameters() if p.requires_grad)
    LOG.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))


def setup_data(processor, data_args, training_args):
    """The lazy dataset, its collator and the blank image used for batches without images."""
    from PIL import Image

    with training_args.main_process_first(desc="index the training data"):
        dataset = LazySupervisedDataset(
            data_args.data_path, processor.tokenizer, processor, template=data_args.version,
            image_folder=data_args.image_folder, image_aspect_ratio=data_args.image_aspect_ratio,
            model_max_length=training_args.model_max_length, num_proc=data_args.dataset_num_proc,
        )
    if data_args.skip_bad_images:  # outside main_process_first: every rank scans its share
        remove_bad_images(dataset, training_args, data_args.dataset_num_proc)
    check_answer_coverage(dataset, training_args.model_max_length, training_args.seed, log=training_args.should_log)
    collator = DataCollatorForSupervisedDataset(pad_token_id=processor.tokenizer.pad_token_id)
    crop = processor.image_processor.crop_size
    blank = ImagePreprocessor(processor, data_args.image_aspect_ratio)([Image.new("RGB", (crop["width"], crop["height"]))])
    dummy = {"pixel_values": blank.pixel_values}
    if blank.image_sizes is not None:
        dummy["image_sizes"] = blank.image_sizes
    return dataset, collator, dummy


def save_final(trainer: LLaVATrainer, processor, training_args) -> None:
    """Save the trained model to output_dir in transformers format, atomically (config.json last).

    ZeRO-3: consolidated 16-bit weights (the DeepSpeed config gathers them on save). LoRA: the
    adapters go to ``adapter/`` and, with ``--lora_merge``, the merged model to output_dir.
    """
    out = Path(training_args.output_dir)
    staged = out / STAGING / "final"
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.config.get_text_config().use_cache = True
    if training_args.lora_enable:
        trainer.save_model(str(staged / "adapter"))
        if training_args.lora_merge and training_args.should_save:
            model.merge_and_unload().save_pretrained(staged)
    else:
        trainer.save_model(str(staged))
    trainer.save_extras(staged)
    if training_args.should_save:
        processor.save_pretrained(staged)
        trainer.state.save_to_json(str(staged / TRAINER_STATE_FILE))  # where the run ended (a rerun sees it)
        publish(staged, out)
    trainer.accelerator.wait_for_everyone()


def publish(staged: Path, out: Path) -> None:
    """Move a finished save from ``staged`` into ``out``: the old config first out, the new config last in.

    A folder with a config.json therefore always holds a complete model.
    """
    (out / "config.json").unlink(missing_ok=True)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    for item in sorted(staged.iterdir(), key=lambda p: p.name == "config.json"):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    shutil.rmtree(staged.parent, ignore_errors=True)


def check_inputs(model_args, data_args) -> None:
    """Before anything loads: the model sources, the data files, the image folder and the adapter exist."""
    check_model_source(model_args.model_name_or_path, "--model_name_or_path")
    if model_args.vision_tower:
        check_model_source(model_args.vision_tower, "--vision_tower")
    files = [("--data_path", p.strip()) for p in data_args.data_path.split(",")]
    if model_args.pretrain_mm_mlp_adapter:
        files.append(("--pretrain_mm_mlp_adapter", model_args.pretrain_mm_mlp_adapter))
    for flag, path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    if data_args.image_folder and not Path(data_args.image_folder).is_dir():
        raise FileNotFoundError(f"--image_folder {data_args.image_folder} does not exist")


def main(argv: list[str] | None = None, callbacks: list | None = None) -> LLaVATrainer:
    """Train as the arguments say; returns the trainer (its ``state.log_history`` holds the losses)."""
    model_args, data_args, training_args = parse_args(argv)
    check_inputs(model_args, data_args)
    setup_logging(training_args)
    if training_args.lora_enable and training_args.lora_merge and _zero_stage(training_args) == 3:
        raise ValueError("merging LoRA adapters after ZeRO-3 training is not supported: use configs/deepspeed/zero2.json "
                         "or --lora_merge false (the adapters are saved either way)")
    resume = find_resume_checkpoint(training_args)
    refuse_finished_run(training_args, resume)
    check_output_dir(training_args.output_dir)
    transformers.set_seed(training_args.seed)
    model, processor = setup_model(model_args, data_args, training_args)
    check_free_space(model, training_args)
    dataset, collator, dummy = setup_data(processor, data_args, training_args)
    args_text = training_args_json(model_args, data_args, training_args)
    trainer = LLaVATrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                           processing_class=processor, callbacks=callbacks, dummy_image=dummy,
                           extra_files={TRAINING_ARGS_FILE: args_text})
    trainer.clean_staging()
    if resume and training_args.should_log:
        LOG.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, processor, training_args)
    for what in ("num_skipped", "num_truncated"):
        if getattr(dataset, what, 0) and training_args.should_log:
            LOG.warning("%s samples: %d (see the warnings above)", what.removeprefix("num_"), getattr(dataset, what))
    return trainer


def _zero_stage(training_args) -> int | None:
    config = getattr(training_args, "hf_deepspeed_config", None)
    return None if config is None else config.config.get("zero_optimization", {}).get("stage")


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main`, then a clean end for every rank.

    Native objects left to the interpreter's exit can abort a rank after a finished run ("terminate called
    without an active exception": once in eight 2-rank ZeRO-3 runs here, and in a CI run after the process
    group was already destroyed at the end of the run). So the trainer (DeepSpeed engine, ZeRO-3 gather
    handles, gloo work) is released while the interpreter is whole, the process group is destroyed, and a
    launched rank (torchrun, DeepSpeed's launcher) then leaves with exit status 0 without the interpreter's
    teardown, once its output, logs and wandb run are flushed. ``faulthandler`` prints where Python was if
    a rank still dies in native code.
    """
    if not faulthandler.is_enabled():
        faulthandler.enable()
    main(argv)  # the trainer it returns is dropped at once; gc.collect frees its reference cycles
    gc.collect()
    end_process_group()
    if launched_rank():
        exit_flushed()


def end_process_group() -> None:
    """All ranks meet, then the default process group is destroyed (nothing when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launched_rank() -> bool:
    """Whether this process is a rank started by a launcher (torchrun and DeepSpeed's set ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def exit_flushed() -> None:
    """Exit status 0 now, without the interpreter's teardown: the wandb run is finished (its exit hook
    would not run), logs and standard streams are flushed first."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    cli_main(run, prog="llava.train.train")
