"""Ask one question about one image, and see what PyramidDrop kept.

Launch::

    python -m llava.eval.infer --model_path llava-hf/llava-1.5-7b-hf --image photo.jpg --question "What is shown?" \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
    python -m llava.eval.infer --model_path checkpoints/llava-v1.5-7b-pdrop --image photo.jpg --question "..." --no_pdrop

Prints the answer and, with PyramidDrop on, the image tokens each stage processed.
"""

from __future__ import annotations

import argparse

from .run import Answerer, _load


def main(argv: list[str] | None = None) -> str:
    from ..bench.flops import add_schedule_args

    parser = argparse.ArgumentParser(description="One question about one image with a LLaVA model.")
    parser.add_argument("--model_path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--conv_mode", default="vicuna_v1")
    parser.add_argument("--image_aspect_ratio", choices=["pad", "square", "anyres"])
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--attn_implementation", default="sdpa")
    parser.add_argument("--no_pdrop", action="store_true", help="turn off the checkpoint's saved schedule")
    add_schedule_args(parser)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = _load(args)
    aspect = args.image_aspect_ratio or ("anyres" if model.config.model_type == "llava_next" else "pad")
    answerer = Answerer(model, processor, args.conv_mode, None, aspect)
    prompt = answerer.prompt({"question_id": "cli", "image": args.image, "text": args.question})
    answer = answerer.answer([prompt], max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)[0]
    print(answer)
    if model.pdrop_config is not None and model.pdrop_trace is not None:
        counts = model.pdrop_trace.image_tokens_per_stage()[0].tolist()
        print(f"image tokens per stage ({model.pdrop_config.method}): {counts}")
    return answer


if __name__ == "__main__":
    main()
