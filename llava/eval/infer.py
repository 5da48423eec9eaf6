"""Ask one question about one image, and see what PyramidDrop kept.

Launch::

    python -m llava.eval.infer --model_path llava-hf/llava-1.5-7b-hf --image photo.jpg --question "What is shown?" \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
    python -m llava.eval.infer --model_path checkpoints/llava-v1.5-7b-pdrop --image photo.jpg --question "..." --no_pdrop
    python -m llava.eval.infer --model_path CKPT --image big.tif --question "How many ships?" --coarse_to_fine

Prints the answer and, with PyramidDrop on, the image tokens each stage processed (with ``--coarse_to_fine``,
also the levels and tiles the walk took).
"""

from __future__ import annotations

from pathlib import Path

from ..cli import ArgumentParser, check_model_source, cli_main
from ..compat import template_name
from ..pyramid.args import CoarseToFineRequest, add_coarse_to_fine_args
from .coarse_to_fine import describe, with_coarse_to_fine
from .loading import add_model_args, default_aspect_ratio, load_for_eval
from .run import Answerer


def main(argv: list[str] | None = None) -> str:
    parser = ArgumentParser("llava.eval.infer", description="One question about one image with a LLaVA model.")
    add_model_args(parser)
    add_coarse_to_fine_args(parser)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args(argv)
    coarse_to_fine = CoarseToFineRequest.from_args(args)  # None without --coarse_to_fine
    args.conv_mode = template_name(args.conv_mode)  # checked, like the image, before the model loads
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"question cli: {args.image}: image file does not exist")  # as the answerers word it
    check_model_source(args.model_path, "--model_path")
    model, processor = load_for_eval(args)
    aspect = args.image_aspect_ratio or default_aspect_ratio(model.config)
    answerer = with_coarse_to_fine(Answerer(model, processor, args.conv_mode, None, aspect), coarse_to_fine)
    prompt = answerer.prompt({"question_id": "cli", "image": args.image, "text": args.question})
    answer = answerer.answer([prompt], max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)[0]
    print(answer)
    if coarse_to_fine is not None:
        print(describe(answerer.last_results[0]))
    if model.pdrop_config is not None and model.pdrop_trace is not None:
        counts = model.pdrop_trace.image_tokens_per_stage()[0].tolist()
        print(f"image tokens per stage ({model.pdrop_config.method}): {counts}")
    return answer


if __name__ == "__main__":
    cli_main(main, prog="llava.eval.infer")
