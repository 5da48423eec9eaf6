"""Coarse-to-fine in the benchmarks: the FLOPs report (``llava.bench.flops --coarse_to_fine``) and a timed run
(:func:`run_coarse_to_fine`, the ``c2f`` method of ``python -m llava.bench``).

FLOPs (arithmetic in :mod:`llava.pyramid.flops`) for one image of ``--image_size`` on a preset's shapes:
thumbnail only, the full grid (every full-resolution tile, no focus) and coarse-to-fine (planned: an
upper bound, every level after the coarsest fetching ``max_tiles_per_level`` tiles), each with the
language model without and with the PyramidDrop schedule.

Launch::

    python -m llava.bench.flops --preset llava-next-7b --coarse_to_fine --image_size 20000x20000
    python -m llava.bench.flops --preset llava-next-7b --coarse_to_fine --image_size 8000x6000 \\
        --max_tiles_per_level 9 \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]' --json c2f-flops.json

Timing::

    images, prefixes, questions = synthetic_inputs(model, 4000, 3000, batch=2, text_tokens=32)
    timings = run_coarse_to_fine(model, images, prefixes, questions, config, max_new_tokens=16)
    timings.total_s, timings.walk_s, timings.vision_s, timings.prefill_s, timings.decode_s
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..cli import emit
from ..paths import load_model_preset
from ..pdrop.args import schedule_from_args
from ..pdrop.flops import ModelShape
from ..pdrop.schedule import PDropConfig
from ..pyramid import CoarseToFineConfig, PixelNorm, coarse_to_fine_batch, pack_input_ids
from ..pyramid.args import DEFAULT_CONFIG, CoarseToFineRequest, add_coarse_to_fine_args, load_named_config
from ..pyramid.flops import (VisionShape, coarse_to_fine_flops, full_grid_walk, model_flops, planned_walk,
                             thumbnail_walk)

UNITS = (("T", 1e12), ("G", 1e9), ("M", 1e6))
COLUMNS = {"vision": ("vision", 9), "focus": ("focus", 8), "llm_no_drop": ("LLM", 9), "llm_pdrop": ("LLM pdrop", 10),
           "total_no_drop": ("total", 9), "total_pdrop": ("tot pdrop", 10)}
MIB = 2**20
ROWS = {"thumbnail_only": "thumbnail only", "full_grid": "full grid (x1)", "coarse_to_fine": "coarse-to-fine (<=)"}


# ---------------------------------------------------------------------------------------------- FLOPs report
def add_flops_args(parser: argparse.ArgumentParser) -> None:
    """The coarse-to-fine flags plus ``--image_size`` (for ``llava.bench.flops``)."""
    add_coarse_to_fine_args(parser)
    parser.add_argument("--image_size",
                        help="WIDTHxHEIGHT of the image counted with --coarse_to_fine, e.g. 20000x20000")


def parse_size(text: str) -> tuple[int, int]:
    """``"20000x15000"`` -> ``(20000, 15000)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image_size {text!r}: write WIDTHxHEIGHT in pixels, e.g. 20000x15000") from None
    if width < 1 or height < 1:
        raise ValueError(f"--image_size {text!r}: both sides must be >= 1 px")
    return width, height


def preset_config(request: CoarseToFineRequest, preset: str) -> CoarseToFineConfig:
    """The flags' config; without ``--pyramid_config``: ``tiny`` for tiny presets, else ``lrs-default``."""
    default = "tiny" if Path(preset).stem.startswith("tiny") else DEFAULT_CONFIG
    return request.apply(request.named or load_named_config(default))


def flops_report(preset: str, size: tuple[int, int], config: CoarseToFineConfig, schedule: PDropConfig | None,
                 text_tokens: int | None = None) -> dict[str, Any]:
    """The three rows (module docstring), FLOPs per part, with the coarse-to-fine plan per level."""
    spec = load_model_preset(preset)
    vision, text = VisionShape.from_preset(spec), spec["text_config"]
    config.validate_vision(vision.image_size, vision.patch_size)
    config.validate_for(text["num_hidden_layers"], schedule)
    texts = spec["text_tokens"] if text_tokens is None else text_tokens
    plan = planned_walk(*size, config, vision.patch_size)
    walks = {"thumbnail_only": thumbnail_walk(config, vision.patch_size),
             "full_grid": full_grid_walk(*size, config, vision.patch_size), "coarse_to_fine": plan}
    rows = {}
    for name, walk in walks.items():
        counts = coarse_to_fine_flops(walk, vision, text["num_hidden_layers"], text["hidden_size"],
                                      text["intermediate_size"], texts, config.focus_layer, schedule)
        rows[name] = {"vision_images": walk.num_vision_images, "image_tokens": walk.num_image_tokens,
                      "flops": counts.to_dict()}
    return {"preset": preset, "image_size": list(size), "text_tokens": texts, "config": config.to_dict(),
            "schedule": None if schedule is None else schedule.to_dict(), "rows": rows,
            "levels": [asdict(level) for level in plan.levels]}


def format_report(report: dict[str, Any]) -> str:
    """The report as a table, in the unit (T, G or M FLOPs) that suits its largest count."""
    width, height = report["image_size"]
    cfg, schedule = report["config"], report["schedule"]
    largest = max(row["flops"]["total_no_drop"] for row in report["rows"].values())
    unit, scale = next((u, v) for u, v in UNITS if largest >= v or u == UNITS[-1][0])
    lines = [f"preset {report['preset']}: a {width} x {height} image, {report['text_tokens']} text tokens; focus after "
             f"layer {cfg['focus_layer']}, keep {cfg['token_keep_ratio']:g}, at most {cfg['max_tiles_per_level']} "
             "tiles a level",
             "schedule: " + ("none" if schedule is None else
                             f"{schedule['layer_list']} {schedule['image_token_ratio_list']}"),
             f"{'':<22}{'crops':>7}{'img tokens':>11}" + "".join(f"{name:>{w}}" for name, w in COLUMNS.values())]
    for key, label in ROWS.items():
        row = report["rows"][key]
        cells = [row["flops"][name] for name in COLUMNS]
        text = "".join(f"{'-' if c is None else f'{c / scale:.2f}':>{w}}" for c, (_, w) in zip(cells, COLUMNS.values()))
        lines.append(f"{label:<22}{row['vision_images']:>7}{row['image_tokens']:>11}{text}")
    plan = ", ".join(f"x{lv['factor']}: {lv['tiles']} tiles" for lv in report["levels"])
    lines += [f"coarse-to-fine levels (at most): {plan}",
              f"({unit}FLOPs, one sample, prefill; crops: vision-tower passes; pdrop: the LLM with the schedule)"]
    return "\n".join(lines)


def flops_main(args: argparse.Namespace, parser: argparse.ArgumentParser,
               default_schedule: Callable[[int], PDropConfig]) -> dict:
    """``llava.bench.flops --coarse_to_fine``: print the report (``--json PATH``: also as JSON); errors: ``parser.error``.

    The schedule flags resolve as for the plain count (``default_schedule(num_layers)`` without them).
    """
    try:
        request = CoarseToFineRequest.from_args(args)
        if request is None:
            raise ValueError("--image_size applies to --coarse_to_fine")
        if not args.image_size:
            raise ValueError("--coarse_to_fine needs --image_size WIDTHxHEIGHT (the image to count)")
        shape = ModelShape.from_preset(load_model_preset(args.preset))
        schedule = schedule_from_args(args, shape, default_schedule(shape.num_hidden_layers))
        report = flops_report(args.preset, parse_size(args.image_size), preset_config(request, args.preset), schedule,
                              args.text_tokens)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    emit(format_report(report), report, args.json)  # llava/cli.py: --json PATH writes, --json - prints JSON
    return report


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class CoarseToFineTimings:
    """One timed coarse-to-fine batch (seconds); per-sample counts and FLOPs (:mod:`llava.pyramid.flops`)."""

    walk_s: float  # reading, vision tower and focus passes of every level, the whole batch
    vision_s: float  # of which in the vision tower (synchronised at each call on CUDA)
    prefill_s: float  # one forward of the packed batch (KV cache filled)
    generate_s: float  # model.generate of max_new_tokens greedy tokens (its own prefill included); 0 without
    new_tokens: int
    num_vision_images: list[int] = field(default_factory=list)
    num_image_tokens: list[int] = field(default_factory=list)
    tiles_per_level: list[list[int]] = field(default_factory=list)
    flops: list[dict[str, int | None]] = field(default_factory=list)
    peak_mem_mib: float | None = None  # CUDA: max allocated during the run; CPU: not measured

    @property
    def decode_s(self) -> float:
        """``generate_s - prefill_s`` (the decode steps, estimated from a separate prefill)."""
        return max(0.0, self.generate_s - self.prefill_s) if self.new_tokens else 0.0

    @property
    def total_s(self) -> float:
        return self.walk_s + (self.generate_s if self.new_tokens else self.prefill_s)


def wall_timer(device: torch.device) -> Callable[[Callable[[], Any]], tuple[Any, float]]:
    """``timer(fn) -> (fn(), seconds)`` with ``perf_counter``, synchronising CUDA before and after."""
    def timer(fn):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        return result, time.perf_counter() - start
    return timer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run_coarse_to_fine(model, images: Sequence, prefix_ids: Sequence, question_ids: Sequence,
                       config: CoarseToFineConfig, *, norm: PixelNorm | None = None, image_processor=None,
                       max_new_tokens: int = 0, pad_token_id: int = 0, timer=None) -> CoarseToFineTimings:
    """Walk, prefill and (``max_new_tokens > 0``) greedy generation of one batch, each timed.

    ``images`` / ``prefix_ids`` / ``question_ids``: as :func:`llava.pyramid.coarse_to_fine_batch` (a path,
    PIL image or ``LargeImage`` each; 1D ids around the image). ``timer(fn) -> (result, seconds)``
    defaults to :func:`wall_timer` on the model's device (the bench passes its own). The model's
    PyramidDrop schedule, if any, applies to the prefill and generation.
    """
    device = model.get_input_embeddings().weight.device
    timer = timer or wall_timer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _vision_clock(model, device) as vision:
        results, walk_s = timer(lambda: coarse_to_fine_batch(model, images, prefix_ids, question_ids, config, norm,
                                                             image_processor))
    batch = pack_input_ids(model, results, prefix_ids, question_ids, pad_token_id=pad_token_id)
    _, prefill_s = timer(lambda: model(**batch, use_cache=True))
    generate_s = 0.0
    if max_new_tokens:
        _, generate_s = timer(lambda: model.generate(**batch, max_new_tokens=max_new_tokens,
                                                     min_new_tokens=max_new_tokens, do_sample=False,
                                                     pad_token_id=pad_token_id))
    texts = [len(p) + len(q) for p, q in zip(prefix_ids, question_ids)]
    flops = [model_flops(model, r, n, config, getattr(model, "pdrop_config", None)).to_dict()
             for r, n in zip(results, texts)]
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return CoarseToFineTimings(walk_s, vision["seconds"], prefill_s, generate_s, max_new_tokens,
                               [r.num_vision_images for r in results], [r.num_image_tokens for r in results],
                               [r.tiles_per_level for r in results], flops, peak)


class _vision_clock:
    """Adds the time spent in the vision tower's forward calls to ``["seconds"]`` while the block runs."""

    def __init__(self, model, device: torch.device):
        self.tower, self.device, self.clock = model.model.vision_tower, device, {"seconds": 0.0}

    def __enter__(self) -> dict:
        def before(module, args):
            _sync(self.device)
            self.start = time.perf_counter()

        def after(module, args, output):
            _sync(self.device)
            self.clock["seconds"] += time.perf_counter() - self.start

        self.handles = [self.tower.register_forward_pre_hook(before), self.tower.register_forward_hook(after)]
        return self.clock

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A ``width x height`` RGB image with structure at every scale (smooth noise upsampled, plus fine noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(1, height // 64), max(1, width // 64), 3), dtype=np.uint8))
    image = coarse.resize((width, height), Image.Resampling.BILINEAR)
    fine = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(image, fine, 0.2)


def synthetic_inputs(model, width: int, height: int, batch: int = 1, text_tokens: int = 32,
                     seed: int = 0) -> tuple[list[Image.Image], list[list[int]], list[list[int]]]:
    """``batch`` synthetic images and random prompt ids (a quarter before the image, the rest after)."""
    if text_tokens < 2:
        raise ValueError(f"text_tokens={text_tokens}: the prompt needs a token before and one after the image")
    generator = torch.Generator().manual_seed(seed)
    vocab, image_token = model.config.get_text_config().vocab_size, model.config.image_token_id
    high = min(vocab, image_token) if image_token > 2 else vocab
    ids = torch.randint(3, high, (batch, text_tokens), generator=generator).tolist()
    before = max(1, text_tokens // 4)
    return ([synthetic_image(width, height, seed + b) for b in range(batch)],
            [row[:before] for row in ids], [row[before:] for row in ids])


__all__ = ["CoarseToFineTimings", "add_flops_args", "flops_main", "flops_report", "format_report", "parse_size",
           "run_coarse_to_fine", "synthetic_image", "synthetic_inputs", "wall_timer"]
