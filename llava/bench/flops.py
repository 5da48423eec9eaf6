"""FLOPs of the language model with and without PyramidDrop, counted as the paper does.

Per decoder layer with ``n`` tokens, hidden size ``d`` and MLP size ``m``::

    flops(n) = 4 n d^2 + 2 n^2 d + 3 n d m

summed over the layers with each stage's ``n``. The paper counts image tokens only (LLaVA-1.5-7B,
576 image tokens: 3.82 -> 1.78 TFLOPs; LLaVA-NeXT-7B, 2880: 20.8 -> 9.46); we print that count and
the count with the prompt's text tokens included, side by side. The ranking at each boundary (one
k projection over the sequence, q at the query tokens) is not in the paper's count and not here.

Launch::

    python -m llava.bench.flops --preset llava-1.5-7b
    python -m llava.bench.flops --preset llava-next-7b --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
    python -m llava.bench.flops --preset llava-1.5-7b --pdrop_lambda 0.5 --pdrop_stages 4 --json flops.json
    python -m llava.bench.flops --preset llava-1.5-7b --json -                       # JSON on stdout, no table
    python -m llava.bench.flops --preset llava-1.5-7b --pdrop_budget tokens=192      # solve lambda for a budget
    python -m llava.bench.flops --preset llava-next-7b --coarse_to_fine --image_size 20000x20000   # huge images

The arithmetic lives in :mod:`llava.pdrop.flops` (the schedule's budgets use it too).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from ..cli import ArgumentParser, add_json_arg, check_json_path, cli_main, emit
from ..paths import CONFIGS_DIR, load_model_preset
from ..pdrop.args import add_schedule_args, schedule_from_args
from ..pdrop.flops import ModelShape, budget_figures, layer_flops, llm_flops, tokens_per_layer
from ..pdrop.schedule import PDropConfig
from .coarse_to_fine import add_flops_args, flops_main

__all__ = ["FlopsReport", "flops_report", "layer_flops", "llm_flops", "main", "tokens_per_layer"]


@dataclass
class FlopsReport:
    preset: str
    schedule: dict
    image_tokens: int
    text_tokens: int
    paper_tflops_no_drop: float
    paper_tflops_pdrop: float
    full_tflops_no_drop: float
    full_tflops_pdrop: float

    @property
    def paper_ratio(self) -> float:
        return self.paper_tflops_pdrop / self.paper_tflops_no_drop

    @property
    def full_ratio(self) -> float:
        return self.full_tflops_pdrop / self.full_tflops_no_drop

    def table(self) -> str:
        rows = [
            f"preset {self.preset}: {self.image_tokens} image tokens, {self.text_tokens} text tokens",
            f"schedule layer_list={self.schedule['layer_list']} image_token_ratio_list={self.schedule['image_token_ratio_list']}",
            f"{'count':<22}{'no drop':>10}{'PyramidDrop':>13}{'ratio':>8}",
            f"{'paper (image only)':<22}{self.paper_tflops_no_drop:>10.2f}{self.paper_tflops_pdrop:>13.2f}{self.paper_ratio:>8.3f}",
            f"{'full (image + text)':<22}{self.full_tflops_no_drop:>10.2f}{self.full_tflops_pdrop:>13.2f}{self.full_ratio:>8.3f}",
            "(TFLOPs of the language model's decoder layers, one sample)",
        ]
        return "\n".join(rows)


def flops_report(preset: str, schedule: PDropConfig, image_tokens: int | None = None,
                 text_tokens: int | None = None) -> FlopsReport:
    spec = load_model_preset(preset)
    text_config = spec["text_config"]
    shape = (text_config["num_hidden_layers"], text_config["hidden_size"], text_config["intermediate_size"])
    images = spec["image_tokens"] if image_tokens is None else image_tokens
    texts = spec["text_tokens"] if text_tokens is None else text_tokens

    def tera(text: int, sched: PDropConfig | None) -> float:
        return llm_flops(*shape, image_tokens=images, text_tokens=text, schedule=sched) / 1e12

    return FlopsReport(preset, schedule.to_dict(), images, texts,
                       tera(0, None), tera(0, schedule), tera(texts, None), tera(texts, schedule))


def default_schedule(num_layers: int) -> PDropConfig:
    """The paper's shorthand (lambda 0.5, 4 stages) on ``num_layers`` layers."""
    return PDropConfig.from_lambda(0.5, 4, num_layers)


def main(argv: list[str] | None = None) -> FlopsReport:
    parser = ArgumentParser("llava.bench.flops", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = sorted(p.stem for p in (CONFIGS_DIR / "models").glob("*.json"))
    parser.add_argument("--preset", default="llava-1.5-7b", help=(
        f"a configs/models/ preset ({', '.join(presets)}) or a JSON path (default: %(default)s)"))
    parser.add_argument("--image_tokens", type=int, help="override the preset's image tokens per sample")
    parser.add_argument("--text_tokens", type=int, help="override the preset's text tokens per sample")
    add_json_arg(parser)
    add_schedule_args(parser, no_pdrop=False)
    add_flops_args(parser)
    args = parser.parse_args(argv)
    try:
        check_json_path(args.json)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.coarse_to_fine or args.image_size:  # huge images: llava/bench/coarse_to_fine.py
        return flops_main(args, parser, default_schedule)
    try:
        spec = load_model_preset(args.preset)
        shape = ModelShape.from_preset(spec)
        if args.image_tokens is not None:
            shape = ModelShape(shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, args.image_tokens)
        schedule = schedule_from_args(args, shape, default_schedule(shape.num_hidden_layers))
        report = flops_report(args.preset, schedule, args.image_tokens, args.text_tokens)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    figures = budget_figures(schedule, shape)
    average = f"average image tokens per layer: {figures['avg_image_tokens']:.1f} of {shape.image_tokens}"
    table = f"{report.table()}\n{average}"
    data = {**asdict(report), "paper_ratio": report.paper_ratio, "full_ratio": report.full_ratio,
            "avg_image_tokens": figures["avg_image_tokens"]}
    emit(table, data, args.json)
    return report


if __name__ == "__main__":
    cli_main(main, prog="llava.bench.flops")
