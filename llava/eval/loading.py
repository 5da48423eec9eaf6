"""What every evaluation command shares: the model flags and loading a checkpoint with the schedule they ask for.

Used by ``llava.eval.run``, ``llava.eval.infer``, ``llava.eval.pictures`` and the lmms-eval adapter.
Without schedule flags the checkpoint's saved schedule applies (the rules: ``llava.pdrop.args``).
"""

from __future__ import annotations

import argparse

import torch

from ..data.images import ASPECT_RATIOS
from ..model.builder import load_llava
from ..pdrop.args import add_schedule_args, schedule_arguments
from ..pdrop.flops import ModelShape


def add_model_args(parser: argparse.ArgumentParser, no_pdrop: bool = True) -> None:
    """``--model_path``, template, image preprocessing, dtype/device/kernel and the schedule flags."""
    parser.add_argument("--model_path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--conv_mode", default="vicuna_v1", help="conversation template (as in training)")
    parser.add_argument("--image_aspect_ratio", choices=list(ASPECT_RATIOS),
                        help="image preprocessing (default: pad, anyres for LLaVA-NeXT)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--attn_implementation", default="sdpa")
    parser.add_argument("--pdrop_compile_ranking", action="store_true",
                        help="score image tokens with a torch.compile'd ranking (GPU; the first prompts compile)")
    add_schedule_args(parser, no_pdrop=no_pdrop)


def load_for_eval(args: argparse.Namespace):
    """The model (eval mode, on ``args.device``) with the schedule the flags resolve to, and its processor."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    flags = schedule_arguments(args)
    saved = {} if flags.uses_fallback() else {"pdrop_config": None}  # a saved schedule the flags replace is not read
    model, processor = load_llava(args.model_path, dtype=getattr(torch, args.dtype), device=device,
                                  attn_implementation=args.attn_implementation, **saved)
    model.set_pdrop_config(flags.resolve(ModelShape.from_config(model.config), model.pdrop_config))
    model.pdrop_compile_ranking = getattr(args, "pdrop_compile_ranking", False)
    return model, processor


def default_aspect_ratio(config) -> str:
    """``anyres`` for LLaVA-NeXT, LLaVA-1.5's ``pad`` otherwise."""
    return "anyres" if config.model_type == "llava_next" else "pad"
