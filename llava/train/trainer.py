"""``LLaVATrainer``: the HF Trainer plus what LLaVA training needs, nothing else.

- per-module learning rates (projector, vision tower) next to weight-decay groups;
- LLaVA's modality-grouped sampler (``--group_by_modality_length``);
- a zero-weight dummy image for batches without images, so every rank calls the vision tower and
  projector in every step (ZeRO-3 gathers parameters per module call; DDP wants gradients);
- atomic checkpoints: a checkpoint is written into ``output_dir/.staging/`` and renamed to
  ``checkpoint-N`` once every rank has finished, so a crash never leaves a checkpoint that loads half;
- safe resume: a checkpoint carries a manifest of its files' hashes (written just before the
  rename) and is resumed only when it matches; its files load with ``weights_only=True``
  (:mod:`llava.train.checkpoints`);
- the projector alone (``mm_projector.bin``, LLaVA's key names) in pretraining checkpoints;
- ``--train_focus_module``: the distillation loss of the coarse-to-fine focus module, which every save
  writes as ``focus_module.safetensors`` (:mod:`llava.pyramid.distill`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from ..data.sampler import ModalityLengthGroupedSampler
from ..model.assemble import gathered_parameters, projector_state_dict
from ..model.pdrop_llava import PDropMixin
from ..pyramid.distill import distillation_loss
from ..pyramid.focus_module import load_focus_weights, save_focus_module
from .checkpoints import UntrustedCheckpointError, safe_checkpoint_loads, verify_manifest, write_manifest
from .ranks import gather_from_ranks, rank_and_world

STAGING = ".staging"
PROJECTOR_FILE = "mm_projector.bin"


def parameter_groups(model, args, decay_names: list[str]) -> list[dict]:
    """Trainable parameters grouped by (learning rate, weight decay).

    Projector parameters (and NeXT's ``image_newline``) use ``mm_projector_lr``, vision tower
    parameters ``mm_vision_tower_lr`` (each defaults to ``learning_rate``).
    """
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = args.learning_rate
        if ("multi_modal_projector" in name or "image_newline" in name) and args.mm_projector_lr is not None:
            lr = args.mm_projector_lr
        elif "vision_tower" in name and args.mm_vision_tower_lr is not None:
            lr = args.mm_vision_tower_lr
        decay = args.weight_decay if name in decay_names else 0.0
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


class LLaVATrainer(Trainer):
    """HF ``Trainer`` for LLaVA; ``dummy_image`` is a processed blank image, ``extra_files`` go into every save."""

    def __init__(self, *args, dummy_image: dict | None = None, extra_files: dict[str, str] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.dummy_image = dummy_image
        if isinstance(self._llava(self.model), PDropMixin):
            self._llava(self.model).pdrop_record_trace = False  # the trace is for inspection, not training
        self.extra_files = extra_files or {}

    # ----------------------------------------------------------------- data
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.args.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthGroupedSampler(
            batch_size=self.args.train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            modality_lengths=dataset.modality_lengths,
            seed=self.args.seed,
        )

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs.pop("ids", None)
        inputs = encode_images(self._llava(model), inputs, self.dummy_image)
        if self.args.train_focus_module:  # the focus module learns the LLM's attention (llava/pyramid/distill.py)
            self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it over accumulation steps
            loss = distillation_loss(self._llava(model), inputs)
            return (loss, {"loss": loss}) if kwargs.get("return_outputs", args[0] if args else False) else loss
        return super().compute_loss(model, inputs, *args, **kwargs)

    def _llava(self, model):
        """The LLaVA model under the DeepSpeed / DDP / PEFT wrappers."""
        base = self.accelerator.unwrap_model(model)
        return base.get_base_model() if hasattr(base, "get_base_model") else base

    # ------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = parameter_groups(opt_model, self.args, self.get_decay_parameter_names(opt_model))
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ---------------------------------------------------------- checkpoints
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """Train; a checkpoint to resume must match its manifest and loads with ``weights_only=True``."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if not resume_from_checkpoint:
            return super().train(None, *args, **kwargs)
        self._verify_checkpoint(resume_from_checkpoint)
        with safe_checkpoint_loads():
            return super().train(resume_from_checkpoint, *args, **kwargs)

    def _verify_checkpoint(self, folder: str) -> None:
        """The main process checks the manifest (hashing is reading everything once); every rank gets the verdict."""
        verdict = None
        if rank_and_world()[0] == 0:
            try:
                verify_manifest(folder)
            except UntrustedCheckpointError as error:
                verdict = str(error)
        verdict = gather_from_ranks(verdict)[0]
        if verdict is not None:
            raise UntrustedCheckpointError(verdict)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume the weights through ``from_pretrained``, which maps the saved key names back.

        transformers saves LLaVA under its legacy key names (``model.language_model.model.*``), and
        the Trainer's own resume loads the file without that mapping, leaving the language model as
        it was. DeepSpeed (its own checkpoint) and PEFT (adapters) resume the stock way.
        """
        model = model if model is not None else self.model
        if self.args.train_focus_module and not self.is_deepspeed_enabled:  # only the focus module trained
            return load_focus_weights(model, resume_from_checkpoint)
        if self.is_deepspeed_enabled or not isinstance(model, PDropMixin):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype, pdrop_config=model.pdrop_config)
        model.load_state_dict(restored.state_dict(), strict=True)

    def _get_output_dir(self, trial):
        if getattr(self, "_staging", False):
            return os.path.join(self.args.output_dir, STAGING)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Write the checkpoint into the staging folder, then publish it with one rename."""
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = Path(self.args.output_dir) / STAGING / name
        final = Path(self.args.output_dir) / name
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
            self.save_extras(staged)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_manifest(staged, self.state.global_step)
            if final.exists():  # a checkpoint of the same step from an earlier run
                shutil.rmtree(final)
            staged.rename(final)
            if self.state.best_model_checkpoint == str(staged):
                self.state.best_model_checkpoint = str(final)
            rotate_checkpoints(output_dir=self.args.output_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    def save_extras(self, output_dir: str | Path) -> None:
        """The projector alone (pretraining) and the extra files. Every rank must call it (ZeRO-3 gathers)."""
        output_dir = Path(output_dir)
        if self.args.tune_mm_mlp_adapter:
            base = self.accelerator.unwrap_model(self.model)
            params = list(base.model.multi_modal_projector.parameters())
            with gathered_parameters(params):
                state = projector_state_dict(base)
            if self.args.should_save:
                output_dir.mkdir(parents=True, exist_ok=True)
                torch.save(state, output_dir / PROJECTOR_FILE)
        if self.args.train_focus_module and self.args.should_save:
            save_focus_module(self.accelerator.unwrap_model(self.model), output_dir)
        if self.args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            for filename, text in self.extra_files.items():
                (output_dir / filename).write_text(text)

    def clean_staging(self) -> None:
        """Remove what an interrupted save left behind (before training starts)."""
        if self.args.should_save:
            shutil.rmtree(Path(self.args.output_dir) / STAGING, ignore_errors=True)
        self.accelerator.wait_for_everyone()


def encode_images(llava, inputs: dict, dummy_image: dict | None) -> dict:
    """Run the vision tower and projector of a training batch here, the same way for every batch.

    The features reach the model as transformers' ``mm_encoder_outputs``. A batch without images
    encodes ``dummy_image`` (a processed blank image) and passes a zero-length slice of its features
    (LLaVA's own trick): nothing enters the sequence, the gradient through it is zero, but every
    module runs. So every step of every rank calls the same modules in the same order, with
    PyramidDrop on or off (ZeRO-3 gathers parameters per module call and checks that order across
    ranks), and the projector always gets a gradient (DDP).
    """
    pixel_values, image_sizes = inputs.pop("pixel_values", None), inputs.pop("image_sizes", None)
    text_only = pixel_values is None
    if text_only:
        if dummy_image is None:
            return inputs
        device = inputs["input_ids"].device
        pixel_values = dummy_image["pixel_values"].to(device)
        image_sizes = None if dummy_image.get("image_sizes") is None else dummy_image["image_sizes"].to(device)
    encoded = llava.model.get_image_features(pixel_values=pixel_values, image_sizes=image_sizes, return_dict=True)
    if text_only:
        encoded.pooler_output = [torch.cat(list(encoded.pooler_output))[:0]]
    inputs["mm_encoder_outputs"] = {"image": encoded}
    return inputs


def training_args_json(model_args, data_args, training_args) -> str:
    """The three argument sets as JSON (what ``llava.release`` puts on the model card).

    ``local_paths`` names the model arguments that were local folders here (not Hub ids), so a
    release can tell ``org/model`` from a relative path ``checkpoints/model`` and never publish it.
    """
    def plain(obj) -> dict:
        out = {}
        for key, value in vars(obj).items():
            if key.startswith("_") or callable(value):
                continue
            out[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        return out

    models = {"model_name_or_path": model_args.model_name_or_path,
              "vision_tower": getattr(model_args, "vision_tower", None)}
    local = sorted(key for key, value in models.items() if value and os.path.exists(value))
    return json.dumps({"model_args": plain(model_args), "data_args": plain(data_args),
                       "training_args": training_args.to_dict(), "local_paths": local}, indent=1, default=str)
