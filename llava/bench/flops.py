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
    python -m llava.bench.flops --preset llava-1.5-7b --lambda 0.5 --stages 4 --json
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace

from ..paths import load_model_preset
from ..pdrop.schedule import METHODS, PDropConfig


def layer_flops(n: int, hidden_size: int, intermediate_size: int) -> int:
    """FLOPs of one decoder layer over ``n`` tokens (attention projections, attention, gated MLP)."""
    d, m = hidden_size, intermediate_size
    return 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def tokens_per_layer(num_layers: int, image_tokens: int, text_tokens: int, schedule: PDropConfig | None) -> list[int]:
    """Tokens each layer processes: text always, image ``floor(N0 * ratio)`` after each boundary."""
    if schedule is None:
        return [image_tokens + text_tokens] * num_layers
    counts = []
    for s, layers in enumerate(schedule.stage_layers(num_layers)):
        images = image_tokens if s == 0 else math.floor(image_tokens * schedule.image_token_ratio_list[s - 1])
        counts += [images + text_tokens] * len(layers)
    return counts


def llm_flops(num_layers: int, hidden_size: int, intermediate_size: int, image_tokens: int,
              text_tokens: int = 0, schedule: PDropConfig | None = None) -> int:
    """Total FLOPs of the language model's layers for one sample."""
    return sum(layer_flops(n, hidden_size, intermediate_size)
               for n in tokens_per_layer(num_layers, image_tokens, text_tokens, schedule))


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


def add_schedule_args(parser: argparse.ArgumentParser) -> None:
    """The PyramidDrop flags shared by every command line: explicit lists or the lambda shorthand."""
    parser.add_argument("--layer_list", help="stage boundaries as a JSON list, e.g. '[8,16,24]'")
    parser.add_argument("--image_token_ratio_list", help="kept image-token ratios, e.g. '[0.5,0.25,0.125]'")
    parser.add_argument("--lambda", dest="lambda_", type=float, help="shorthand: ratio lambda**s after boundary s")
    parser.add_argument("--stages", type=int, help="shorthand: number of equal stages (with --lambda)")
    parser.add_argument("--position_mode", default="compact", choices=["compact", "original"])
    parser.add_argument("--drop_method", default="pdrop", choices=list(METHODS),
                        help="how image tokens are ranked: pdrop (next layer), fastv (last layer run), random")
    parser.add_argument("--drop_seed", type=int, default=0, help="seed of --drop_method random")


def schedule_from_args(args: argparse.Namespace, num_hidden_layers: int) -> PDropConfig:
    """Build the schedule from :func:`add_schedule_args` flags; the paper's default when none are given."""
    explicit = args.layer_list is not None or args.image_token_ratio_list is not None
    shorthand = args.lambda_ is not None or args.stages is not None
    if explicit and shorthand:
        raise ValueError("give either --layer_list/--image_token_ratio_list or --lambda/--stages, not both")
    if explicit:
        if args.layer_list is None or args.image_token_ratio_list is None:
            raise ValueError("--layer_list and --image_token_ratio_list must be given together")
        schedule = PDropConfig.from_strings(args.layer_list, args.image_token_ratio_list, args.position_mode)
    else:
        lambda_ = 0.5 if args.lambda_ is None else args.lambda_
        schedule = PDropConfig.from_lambda(lambda_, 4 if args.stages is None else args.stages, num_hidden_layers,
                                           args.position_mode)
    return replace(schedule, method=getattr(args, "drop_method", "pdrop"), seed=getattr(args, "drop_seed", 0))


def resolve_schedule(args: argparse.Namespace, saved: PDropConfig | None, num_hidden_layers: int) -> PDropConfig | None:
    """What a command that loads a checkpoint runs: the flags' schedule if they give one, else the saved one.

    ``--drop_method``/``--drop_seed`` alone switch the ranking of the saved schedule (an error without one).
    """
    if any(getattr(args, name) is not None for name in ("layer_list", "image_token_ratio_list", "lambda_", "stages")):
        return schedule_from_args(args, num_hidden_layers)
    changes = {key: value for key, value, default in (
        ("method", getattr(args, "drop_method", "pdrop"), "pdrop"), ("seed", getattr(args, "drop_seed", 0), 0),
        ("position_mode", args.position_mode, "compact")) if value != default}
    if changes and saved is None:
        raise ValueError(f"{sorted(changes)} change a schedule, but the checkpoint has none: pass --layer_list and "
                         "--image_token_ratio_list (or --lambda)")
    return replace(saved, **changes) if changes else saved


def main(argv: list[str] | None = None) -> FlopsReport:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="llava-1.5-7b", help="a configs/models/ preset name or JSON path")
    parser.add_argument("--image_tokens", type=int, help="override the preset's image tokens per sample")
    parser.add_argument("--text_tokens", type=int, help="override the preset's text tokens per sample")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_schedule_args(parser)
    args = parser.parse_args(argv)
    try:
        num_layers = load_model_preset(args.preset)["text_config"]["num_hidden_layers"]
        report = flops_report(args.preset, schedule_from_args(args, num_layers), args.image_tokens, args.text_tokens)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps({**asdict(report), "paper_ratio": report.paper_ratio, "full_ratio": report.full_ratio}, indent=2))
    else:
        print(report.table())
    return report


if __name__ == "__main__":
    main()
