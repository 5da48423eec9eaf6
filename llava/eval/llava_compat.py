"""LLaVA's evaluation commands, as its scripts call them, answered by ``llava.eval.run``.

``python -m llava.eval.model_vqa_loader`` (and ``model_vqa``, ``model_vqa_science``,
``model_vqa_mmbench``) are thin modules over :func:`compat_main`: their flags go through
:data:`RULES` (llava/compat.py's :func:`~llava.compat.translate`) and the result is parsed and run by
``llava.eval.run``, so answers, chunks, resume and PyramidDrop behave exactly as there. Launch::

    python -m llava.eval.model_vqa_loader --model-path CKPT \\
        --question-file ./playground/data/eval/textvqa/llava_textvqa_val_v051_ocr.jsonl \\
        --image-folder ./playground/data/eval/textvqa/train_images \\
        --answers-file ./playground/data/eval/textvqa/answers/CKPT.jsonl --temperature 0 --conv-mode vicuna_v1
    python -m llava.eval.model_vqa_mmbench --model-path CKPT --question-file mmbench_dev_cn_20231003.tsv \\
        --answers-file answers.jsonl --lang cn --single-pred-prompt --temperature 0 --conv-mode vicuna_v1 \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[1.0,0.5,0.25,0.125]' --pdrop_infer

The modules differ only in LLaVA's default ``--max_new_tokens`` (128 for ``model_vqa_loader``, 1024
for the others): the question file's format (.jsonl, ScienceQA .json, MMBench .tsv) is read from its
suffix whichever module is called. Differences from LLaVA: answers are appended and a rerun resumes
(LLaVA overwrites); questions are batched (``--batch_size``, default 8); ``--temperature`` defaults
to 0 (greedy; LLaVA's modules default to 0.2, its scripts pass 0).
"""

from __future__ import annotations

import ast
import sys

from ..cli import cli_main
from ..compat import Rule, conv_mode, describe, translate

MAX_NEW_TOKENS = {"model_vqa_loader": 128, "model_vqa": 1024, "model_vqa_science": 1024, "model_vqa_mmbench": 1024}
MODEL_BASE = ("LoRA runs save the adapters merged into a full checkpoint (--lora_merge, the default): give that "
              "folder as --model-path; an original-format LLaVA checkpoint converts with python -m llava.model.convert")

RULES = [
    Rule("--model-path", "--model_path", "--model_path (a transformers-format checkpoint or Hub id)"),
    Rule("--model-base", None, "refused: " + MODEL_BASE, refused=MODEL_BASE),
    Rule("--question-file", "--question_file", "--question_file (.jsonl, ScienceQA .json, MMBench .tsv)"),
    Rule("--image-folder", "--image_folder", "--image_folder"),
    Rule("--answers-file", "--answers_file", "--answers_file (appended to; a rerun resumes)"),
    Rule("--conv-mode", "--conv_mode", "--conv_mode; v1, llava_v1 -> vicuna_v1, llava_llama_3 -> llama_3, "
         "qwen_1_5, qwen_2, chatml_direct -> chatml, plain; others refused", value=conv_mode),
    Rule("--num-chunks", "--num_chunks", "--num_chunks"),
    Rule("--chunk-idx", "--chunk_idx", "--chunk_idx"),
    Rule("--temperature", "--temperature", "--temperature (default 0 here, 0.2 in LLaVA's modules)"),
    Rule("--top_p", "--top_p", "--top_p"),
    Rule("--num_beams", "--num_beams", "--num_beams"),
    Rule("--max_new_tokens", "--max_new_tokens", "--max_new_tokens (default 128 for model_vqa_loader, else 1024)"),
    Rule("--single-pred-prompt", "--single_pred_prompt", "--single_pred_prompt", kind="switch"),
    Rule("--lang", "--lang", "--lang en|cn (the --single_pred_prompt instruction's language)"),
    Rule("--all-rounds", None, "refused: MMBench's circular variants are rows of the .tsv, all asked; "
         "llava.eval.score --task mmbench reports CircularEval", kind="switch",
         refused="MMBench's circular variants are rows of the .tsv and are all asked already; "
                 "python -m llava.eval.score --task mmbench reports CircularEval"),
    Rule("--answer-prompter", None, "refused: no equivalent", kind="switch",
         refused="no equivalent here; --single-pred-prompt asks for the option's letter"),
    Rule("--layer_list", "--layer_list", "--layer_list (the official PyramidDrop flag)"),
    Rule("--image_token_ratio_list", "--image_token_ratio_list", "--image_token_ratio_list; the official eval "
         "scripts' form with a leading 1.0 for stage 0 ('[1.0,0.5,0.25,0.125]') is taken without it"),
    Rule("--pdrop_infer", None, "dropped: the schedule flags turn PyramidDrop on", kind="switch"),
]


def to_run_argv(argv: list[str]) -> list[str]:
    """LLaVA's evaluation flags -> ``llava.eval.run``'s (ValueError for a refused flag or value)."""
    return drop_stage0_ratio(translate(argv, RULES))


def drop_stage0_ratio(argv: list[str]) -> list[str]:
    """The official eval form ``--image_token_ratio_list '[1.0, r1, ..., rS]'`` (one more ratio than boundaries,
    the first 1.0 for the stage before the first drop) -> ``'[r1, ..., rS]'``; other lists unchanged."""
    layers, ratios = _last_value(argv, "--layer_list"), _last_value(argv, "--image_token_ratio_list")
    if layers is None or ratios is None:
        return argv
    try:
        layer_list, ratio_list = ast.literal_eval(argv[layers]), ast.literal_eval(argv[ratios])
    except (ValueError, SyntaxError):
        return argv  # the schedule's own parser names the problem
    if isinstance(layer_list, (list, tuple)) and isinstance(ratio_list, (list, tuple)) \
            and len(ratio_list) == len(layer_list) + 1 and ratio_list[0] == 1:
        argv = list(argv)
        argv[ratios] = str(list(ratio_list[1:]))
    return argv


def _last_value(argv: list[str], flag: str) -> int | None:
    """Index of the value of the last ``flag value`` pair in ``argv`` (``flag=value`` is split first)."""
    found = None
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            found = i + 1
    return found


def run_module(module: str, argv: list[str] | None = None):
    """``llava.eval.run`` with LLaVA's ``module``'s flags and defaults; returns the answers file."""
    from .run import build_parser, run  # torch and transformers load here, after the flags are translated

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])]
    parser = build_parser(module=f"llava.eval.{module}", epilog=help_epilog(module))
    parser.set_defaults(max_new_tokens=MAX_NEW_TOKENS[module])
    return run(parser.parse_args(to_run_argv(argv)))


def help_epilog(module: str) -> str:
    """What ``--help`` adds under llava.eval.run's flags: LLaVA's flags and what they become."""
    return (f"LLaVA's llava.eval.{module}, answered by llava.eval.run (the flags above, ours, work too).\n"
            f"LLaVA's flags:\n{describe(RULES)}")


def compat_main(module: str, argv: list[str] | None = None):
    """Entry point of the thin ``llava.eval.<module>`` modules: one-line errors, exit status 1."""
    return cli_main(lambda args: run_module(module, args), argv, prog=f"llava.eval.{module}")
