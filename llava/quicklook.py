"""A quick look without training: a tiny random LLaVA on CPU, generating with PyramidDrop.

Shows what the method does without downloading anything: the tokens each stage of the language
model processes, the image tokens kept for one sample, the generated tokens (with and without the
drop), and the FLOPs the schedule saves on the tiny model and on the paper's model shapes.

Launch::

    python -m llava.quicklook
    python -m llava.quicklook --pdrop_schedule tiny --batch_size 3 --max_new_tokens 8
    python -m llava.quicklook --layer_list '[2]' --image_token_ratio_list '[0.25]'
"""

from __future__ import annotations

import torch

from .bench.flops import flops_report
from .cli import ArgumentParser, cli_main
from .model import enable_pdrop
from .model.builder import build_random_llava
from .paths import load_model_preset, load_schedule
from .pdrop.args import add_schedule_args, schedule_from_args
from .pdrop.flops import ModelShape

PRESET = "tiny-llava"


def synthetic_prompts(preset: dict, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts ``<text> <image x N0> <text>`` of different lengths, plus random pixels."""
    gen = torch.Generator().manual_seed(seed)
    text, vision = preset["text_config"], preset["vision_config"]
    image = [preset["image_token_id"]] * preset["image_tokens"]
    rows = []
    for b in range(batch_size):
        words = torch.randint(3, preset["image_token_id"], (preset["text_tokens"] + 2 * b,), generator=gen).tolist()
        rows.append(words[:2] + image + words[2:])
    width = max(map(len, rows))
    input_ids = torch.full((batch_size, width), text["pad_token_id"])
    attention_mask = torch.zeros(batch_size, width, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, width - len(row):] = torch.tensor(row)
        attention_mask[b, width - len(row):] = 1
    size = vision["image_size"]
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "pixel_values": torch.randn(batch_size, 3, size, size, generator=gen)}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser("llava.quicklook", description="Tiny PyramidDrop demo on CPU (random weights).")
    parser.add_argument("--batch_size", type=int, default=2, help="prompts (default: %(default)s)")
    parser.add_argument("--max_new_tokens", type=int, default=6, help="tokens generated (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and prompts (default: %(default)s)")
    add_schedule_args(parser, no_pdrop=False)
    args = parser.parse_args(argv)
    preset = load_model_preset(PRESET)
    num_layers = preset["text_config"]["num_hidden_layers"]
    try:
        schedule = schedule_from_args(args, ModelShape.from_preset(preset), fallback=load_schedule("tiny"))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))

    model = build_random_llava(PRESET, schedule, seed=args.seed)
    batch = synthetic_prompts(preset, args.batch_size, args.seed)
    generate = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=preset["text_config"]["pad_token_id"])
    with torch.no_grad():
        with_drop = model.generate(**batch, **generate)[:, batch["input_ids"].shape[1]:]
        trace = model.pdrop_trace
        without = enable_pdrop(model, None).generate(**batch, **generate)[:, batch["input_ids"].shape[1]:]

    print(f"model: {PRESET} (random weights), {num_layers} layers; schedule {schedule.to_dict()}")
    stage_names = [f"layers {r.start}-{r.stop - 1}" for r in schedule.stage_layers(num_layers)]
    print(f"{'sample':<8}" + "".join(f"{name:>16}" for name in stage_names) + "   (tokens: total / image)")
    for b, (totals, images) in enumerate(zip(trace.tokens_per_stage(), trace.image_tokens_per_stage())):
        print(f"{b:<8}" + "".join(f"{f'{t} / {i}':>16}" for t, i in zip(totals.tolist(), images.tolist())))
    for s in range(1, trace.num_stages):
        print(f"sample 0, stage {s}: kept image positions {trace.kept_image_positions(s)[0].tolist()}")
    print(f"generated with PyramidDrop: {with_drop.tolist()}")
    print(f"generated without drop:     {without.tolist()}")
    tiny = flops_report(PRESET, schedule)
    print(f"FLOPs, {PRESET}: {tiny.full_ratio:.3f} of no-drop (text included), {tiny.paper_ratio:.3f} image only")
    paper = load_schedule("pdrop-default")
    for name in ("llava-1.5-7b", "llava-next-7b"):
        report = flops_report(name, paper)
        print(f"FLOPs, {name} with the paper's schedule: {report.paper_tflops_no_drop:.2f} -> "
              f"{report.paper_tflops_pdrop:.2f} TFLOPs (image tokens only), {report.full_ratio:.3f} with text")
    return {"tokens_per_stage": trace.tokens_per_stage().tolist(), "with_drop": with_drop.tolist(),
            "without_drop": without.tolist()}


if __name__ == "__main__":
    cli_main(main, prog="llava.quicklook")
