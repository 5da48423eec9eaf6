"""Pictures of a coarse-to-fine walk: each level visited, its selected tiles outlined, its kept tokens lit.

One panel per level visited, coarsest first, each the whole image at the panel's size: the tiles
encoded at that level outlined, the regions of the tokens the focus kept there at full brightness,
the rest darkened. The last panel's lit tokens are the final ones, which follow the thumbnail into
the language model. A panel's background is the level itself when it is coarser than the panel
(what the model saw), otherwise the image reduced just enough for the panel (a huge image is never
decoded finer than needed to draw it).

Geometry (:mod:`llava.pyramid.geometry`): a level reduced by ``f`` has tile ``(r, c)`` at level pixels
``tile_box(level, r, c, T)``; token ``(r, c)`` of its token grid covers level pixels
``[c s, (c + 1) s) x [r s, (r + 1) s)``, ``s = patch_size * pool``; both scale by ``f`` to full-image
pixels, clipped to the image.

Launch (``llava.eval.pictures`` hands ``--coarse_to_fine`` here)::

    python -m llava.eval.pictures --coarse_to_fine --model_path CKPT --image scene.tif --question "How many ships?" \\
        --out walk.png
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap

from PIL import Image, ImageDraw, ImageEnhance

from ..pyramid import CoarseToFineConfig, CoarseToFineResult, LargeImage, LevelTrace
from ..pyramid.args import CoarseToFineRequest, add_coarse_to_fine_args
from ..pyramid.geometry import pyramid_applies, tile_box
from .coarse_to_fine import CoarseToFineAnswerer
from .loading import add_model_args, default_aspect_ratio, load_for_eval
from .run import Answerer

PANEL_SIZE = 512  # longer side of a panel in pixels
COLUMNS = 4  # panels per row
GAP = 8  # white pixels between panels
CAPTION = 28  # caption height under a panel
DARKENED = 0.35  # brightness outside the kept tokens
TILE_COLOUR = (255, 200, 0)  # outline of an encoded tile
TOKEN_COLOUR = (0, 220, 255)  # outline of a kept token


def full_box(box: tuple[float, float, float, float], factor: int, size: tuple[int, int]):
    """A level-pixel box scaled by ``factor`` to full-image pixels, clipped to the image ``size``."""
    left, top, right, bottom = (v * factor for v in box)
    return max(0, left), max(0, top), min(size[0], right), min(size[1], bottom)


def token_boxes(trace: LevelTrace, token_px: int, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Full-image boxes of the tokens ``trace`` kept (row-major as ``kept_coords``)."""
    f = trace.level.factor
    return [full_box((c * token_px, r * token_px, (c + 1) * token_px, (r + 1) * token_px), f, size)
            for r, c in trace.kept_coords.tolist()]


def tile_boxes(trace: LevelTrace, tile_size: int, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Full-image boxes of the tiles encoded at ``trace``'s level."""
    return [full_box(tile_box(trace.level, r, c, tile_size), trace.level.factor, size) for r, c in trace.tiles]


def background_factor(level_factor: int, size: tuple[int, int], panel_size: int) -> int:
    """The reduction a panel is drawn from: the level's own, or less reduced only as far as the panel needs.

    The largest power of two ``f <= level_factor`` with ``ceil(long side / f) >= panel_size`` (at least 1).
    """
    long_side, f = max(size), level_factor
    while f > 1 and math.ceil(long_side / f) < panel_size:
        f //= 2
    return f


def draw_panel(image: LargeImage, trace: LevelTrace, config: CoarseToFineConfig, token_px: int,
               panel_size: int) -> Image.Image:
    """One level: the image at ``panel_size`` (longer side), darkened but for the kept tokens, tiles outlined."""
    size = image.size
    scale = panel_size / max(size)
    panel_wh = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    background = image.level_rgb(background_factor(trace.level.factor, size, panel_size)).resize(
        panel_wh, Image.Resampling.BOX)
    panel = ImageEnhance.Brightness(background).enhance(DARKENED)
    draw = ImageDraw.Draw(panel)
    for box in token_boxes(trace, token_px, size):
        region = tuple(round(v * scale) for v in box)
        if region[2] > region[0] and region[3] > region[1]:
            panel.paste(background.crop(region), region[:2])
            draw.rectangle((region[0], region[1], region[2] - 1, region[3] - 1), outline=TOKEN_COLOUR)
    for box in tile_boxes(trace, config.tile_size, size):
        left, top, right, bottom = (round(v * scale) for v in box)
        draw.rectangle((left, top, max(left, right - 1), max(top, bottom - 1)), outline=TILE_COLOUR, width=2)
    return panel


def no_pyramid(image: LargeImage, config: CoarseToFineConfig) -> ValueError:
    return ValueError(f"{image.name}: {image.size[0]} x {image.size[1]} px fits one {config.tile_size} px tile: "
                      "no pyramid, nothing to draw coarse to fine (draw it without --coarse_to_fine)")


def caption(trace: LevelTrace, last: bool) -> str:
    level = trace.level
    text = (f"level {level.index} (x{level.factor}): {len(trace.tiles)} of {level.num_tiles} tiles, "
            f"{len(trace.kept_coords)} of {trace.num_tokens} tokens kept")
    return text + (" (final)" if last else "")


def draw_walk(image: LargeImage, result: CoarseToFineResult, config: CoarseToFineConfig, patch_size: int,
              panel_size: int = PANEL_SIZE, header: str | None = None) -> Image.Image:
    """Every level of ``result``'s walk as a panel (module docstring), ``COLUMNS`` a row, captions under them."""
    if not result.traces:
        raise no_pyramid(image, config)
    token_px = patch_size * config.pool
    panels = [draw_panel(image, trace, config, token_px, panel_size) for trace in result.traces]
    lines = textwrap.wrap(header, 100) if header else []
    top = GAP + 14 * len(lines)
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    cell_w, cell_h = max(p.width for p in panels), max(p.height for p in panels) + CAPTION
    canvas = Image.new("RGB", (GAP + columns * (cell_w + GAP), top + rows * (cell_h + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((GAP, GAP // 2 + 14 * i), line, fill="black")
    for i, (panel, trace) in enumerate(zip(panels, result.traces)):
        x, y = GAP + (i % columns) * (cell_w + GAP), top + (i // columns) * (cell_h + GAP)
        canvas.paste(panel, (x, y))
        draw.text((x, y + panel.height + 4), caption(trace, i == len(panels) - 1), fill="black")
    return canvas


def requested(argv: list[str] | None) -> bool:
    """Whether a ``llava.eval.pictures`` command line asks for ``--coarse_to_fine`` (it is then drawn here)."""
    return "--coarse_to_fine" in (sys.argv[1:] if argv is None else argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Picture a coarse-to-fine walk: levels, selected tiles, kept tokens.")
    add_model_args(parser)
    add_coarse_to_fine_args(parser)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--out", default="coarse_to_fine.png", help="PNG to write")
    parser.add_argument("--panel_size", type=int, default=PANEL_SIZE, help="longer side of a panel in pixels")
    parser.add_argument("--truth", help="the right answer, written in the header next to the model's")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="length of the answer in the header (0: none)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Walk (and answer) once, draw the walk, save it; returns a summary."""
    args = build_parser().parse_args(argv)
    request = CoarseToFineRequest.from_args(args)
    if args.panel_size < 16:
        raise ValueError(f"--panel_size {args.panel_size} is too small to draw (>= 16)")
    model, processor = load_for_eval(args)
    aspect = args.image_aspect_ratio or default_aspect_ratio(model.config)
    plain = Answerer(model, processor, args.conv_mode, None, aspect)
    answerer = CoarseToFineAnswerer.from_request(plain, request)
    prompt = answerer.prompt({"question_id": "picture", "image": args.image, "text": args.question})
    if not pyramid_applies(*prompt.image.size, answerer.config.tile_size):
        raise no_pyramid(prompt.image, answerer.config)
    answer = answerer.answer([prompt], max_new_tokens=max(1, args.max_new_tokens), do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)[0]
    result = answerer.last_results[0]
    header = f"Q: {args.question}" + (f"  A: {answer}" if args.max_new_tokens > 0 else "") + \
        (f"  (truth: {args.truth})" if args.truth else "")
    with LargeImage(args.image, answerer.config.max_image_pixels) as image:
        picture = draw_walk(image, result, answerer.config, model.config.vision_config.patch_size, args.panel_size,
                            header)
    picture.save(args.out)
    summary = {"out": args.out, "answer": answer if args.max_new_tokens > 0 else None,
               "tiles_per_level": result.tiles_per_level, "image_tokens": result.num_image_tokens,
               "stop_reason": result.stop_reason}
    print(f"wrote {args.out}: tiles per level {result.tiles_per_level}, {result.num_image_tokens} image tokens "
          f"(stop: {result.stop_reason})")
    return summary
