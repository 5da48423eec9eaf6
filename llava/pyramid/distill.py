"""Training the focus module: distil the full LLM's text-to-image attention into it (``--train_focus_module``).

For every training sample and every query ``q`` (the token before each answer, PyramidDrop's training
queries), over the sample's image tokens ``K`` (LLaVA-NeXT's base image and crops; the newline tokens,
which are never scored, left out)::

    A_l(q)   = softmax over K of layer l's q/k scores, mean over heads  (llava.pdrop.ranking.query_attention)
    target   = mean over the distillation layers l of A_l(q)           (the frozen LLM, no gradient)
    loss     = mean over (sample, q) of KL(target || A_rfm(q))         (A_rfm: the module's scoring layer)

The KL is zero exactly when the module's attention equals the target, and its gradient equals that of
the mean over layers of ``KL(A_l || A_rfm)`` (they differ by a constant). Only the module trains: the
LLM, vision tower and projector are frozen, the teacher runs under ``no_grad``.

Why every image token, base image included, although the walk scores local tokens only: a training
image shows the object in the base image *and* in its crops, and deep layers may look at the base
image's copy; restricted to the crops, their attention renormalises what is left, which need not point
at the object. On the huge-image demo (32 walks), a module distilled from layers 2-3 over the crop
tokens alone kept the object at the coarsest level in 4 walks (the LLM's own layer 1: 28); over every
image token, in 28 (layers 2-3) and 30 (layers 1-3). Over every image token the target keeps its mass where the
LLM puts it, and the walk only uses the module's ranking of the local tokens.

Launch (a LLaVA-NeXT checkpoint in, the same checkpoint plus ``focus_module.safetensors`` out)::

    python -m llava.train.train --config configs/train/llava-next-finetune.json --model_name_or_path CKPT \\
        --train_focus_module --focus_module_layers 2 --focus_distill_layers '[8,12,16]' --output_dir CKPT-rfm
"""

from __future__ import annotations

import json
import os

import torch

from ..pdrop.ranking import query_attention, query_slots, training_query_mask
from .focus import focus_attention, layers_inputs
from .focus_module import ATTRIBUTE, RegionFocusModule, attach_focus_module

TINY = 1e-20  # probabilities are clamped here before the log: a key masked to exactly 0 stays finite


def attention_kl(target: torch.Tensor, student: torch.Tensor, key_mask: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(target || student)`` over the valid query slots that have at least one key.

    Args:
        target / student: ``(B, Q, n)`` attention rows (distributions over the keys of ``key_mask``);
            ``target`` is detached.
        key_mask: ``(B, n)`` bool, the keys the rows are over (0 elsewhere).
        valid: ``(B, Q)`` bool, the real query slots.
    Returns:
        A scalar >= 0 (0 exactly when the rows agree on the keys); ``0 * student.sum()`` when no slot
        counts, so a batch without local image tokens still backpropagates (zeros) through the module.
    """
    target, log_student = target.detach().float(), student.float().clamp_min(TINY).log()
    keys = key_mask[:, None, :].expand_as(target)
    log_target = target.clamp_min(TINY).log()
    terms = torch.where(keys & (target > 0), target * (log_target - log_student), torch.zeros_like(target))
    counted = valid & key_mask.any(dim=-1, keepdim=True)
    if not bool(counted.any()):
        return student.sum() * 0.0
    return terms.sum(dim=-1)[counted].mean()


def image_key_mask(model, features: list[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` bool: the image slots that are not LLaVA-NeXT newline tokens.

    ``features``: per image its ``(m_i, d)`` packed features, in the order they fill the slots of
    ``image_mask`` ``(B, n)``; newline rows are exact copies of ``model.model.image_newline``.
    """
    newline = model.model.image_newline
    kinds = [~(feature == newline.to(feature)).all(dim=-1) for feature in features]
    out = torch.zeros_like(image_mask)
    if kinds:
        out[image_mask] = torch.cat(kinds).to(out.device)
    return out


@torch.no_grad()
def teacher_attention(decoder, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, key_mask: torch.Tensor,
                      query_mask: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """``(B, Q, n)``: the LLM's attention of each query over the keys of ``key_mask``, averaged over ``layers``."""
    hidden, position_embeddings = layers_inputs(decoder, inputs_embeds, attention_mask, layers)
    query_index, _ = query_slots(query_mask)
    keys = attention_mask.bool() & key_mask
    return torch.stack([query_attention(decoder.layers[layer], hidden[layer], position_embeddings, keys, query_index)
                        for layer in layers]).mean(dim=0)


def distillation_loss(llava, inputs: dict) -> torch.Tensor:
    """The loss of a training batch (module docstring) for ``llava.focus_module``.

    ``inputs``: the collator's ``input_ids``, ``attention_mask``, ``labels``, and the images already
    encoded by the trainer (``mm_encoder_outputs``, :func:`llava.train.trainer.encode_images`).
    """
    module = getattr(llava, ATTRIBUTE)
    encoded = (inputs.get("mm_encoder_outputs") or {}).get("image")
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        embeds, image_mask, _ = llava.merge_inputs(inputs["input_ids"], None, None, None, None, None,
                                                   inputs.get("mm_encoder_outputs"))
        keys = image_key_mask(llava, list(encoded.pooler_output) if encoded is not None else [], image_mask)
        queries = training_query_mask(inputs["labels"]) & mask
        target = teacher_attention(llava.model.language_model, embeds, mask, keys, queries, module.distill_layers)
    student, valid = focus_attention(module, embeds.detach(), mask, keys, module.focus_layer, queries)
    return attention_kl(target, student, mask & keys, valid)


# --------------------------------------------------------------------------------------------- training setup
def default_distill_layers(num_layers: int, focus_layer: int) -> list[int]:
    """The module's scoring layer ``focus_layer`` and every deeper layer of the LLM."""
    return list(range(focus_layer, num_layers))


def parse_distill_layers(text: str | None, num_layers: int, focus_layer: int) -> list[int]:
    """``--focus_distill_layers`` (a JSON list of 0-based LLM layers, or None: :func:`default_distill_layers`)."""
    if text is None or str(text).strip().lower() in ("", "none", "null"):
        return default_distill_layers(num_layers, focus_layer)
    try:
        layers = json.loads(text) if isinstance(text, str) else list(text)
    except ValueError:
        raise ValueError(f"--focus_distill_layers {text!r} is not a JSON list of layers, e.g. '[8,12,16]'") from None
    if not isinstance(layers, list) or not layers or not all(isinstance(x, int) and not isinstance(x, bool)
                                                             for x in layers):
        raise ValueError(f"--focus_distill_layers {text!r} must be a non-empty JSON list of integers")
    bad = [x for x in layers if not 0 <= x < num_layers]
    if bad or len(set(layers)) != len(layers):
        raise ValueError(f"--focus_distill_layers {layers}: layers are 0 .. {num_layers - 1} of the language model, "
                         "each once")
    return sorted(layers)


def setup_focus_training(model, training_args):
    """Freeze ``model`` (a LLaVA-NeXT checkpoint) and attach a new focus module, the only part that trains."""
    _refuse_conflicts(model, training_args)
    decoder = model.model.language_model
    num_layers = decoder.config.num_hidden_layers
    layers = parse_distill_layers(training_args.focus_distill_layers, num_layers, training_args.focus_module_layers)
    model.requires_grad_(False)
    module = RegionFocusModule.from_decoder(decoder, training_args.focus_module_layers, layers)
    attach_focus_module(model, module).requires_grad_(True)
    return model


def _refuse_conflicts(model, args) -> None:
    if model.config.model_type != "llava_next":
        raise ValueError("--train_focus_module trains the coarse-to-fine focus of a LLaVA-NeXT checkpoint, not of "
                         f"a {model.config.model_type!r} model")
    for flag in ("lora_enable", "tune_mm_mlp_adapter", "unfreeze_mm_vision_tower"):
        if getattr(args, flag, False):
            raise ValueError(f"--train_focus_module trains the focus module alone: drop --{flag}")
    deepspeed = getattr(args, "hf_deepspeed_config", None)
    if deepspeed is not None and deepspeed.config.get("zero_optimization", {}).get("stage") == 3:
        raise ValueError("--train_focus_module copies the LLM's layers when it starts, which ZeRO-3 has partitioned: "
                         "use configs/deepspeed/zero2.json (the module is small and the LLM frozen)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and deepspeed is None:
        raise ValueError("--train_focus_module with several processes needs DeepSpeed (the loss is computed outside "
                         "the DDP forward): add --deepspeed configs/deepspeed/zero2.json")


__all__ = ["attention_kl", "default_distill_layers", "distillation_loss", "image_key_mask", "parse_distill_layers",
           "setup_focus_training", "teacher_attention"]
