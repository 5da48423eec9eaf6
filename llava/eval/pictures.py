"""Kept-token pictures: which regions of an image reach each stage of the language model.

One PyramidDrop forward on a single-image prompt, then one panel per stage (stage 0 = all image
tokens), each the image with the regions of the dropped tokens greyed and darkened.

- :func:`token_layout` / :func:`token_boxes`: the region of the original image each image token
  covers, in the order the model places the tokens in the sequence.
- :func:`draw_kept_tokens`: the panels (Pillow only, default font).
- :func:`kept_token_picture`: run the model once, read ``model.pdrop_trace``, draw, save.

Launch::

    python -m llava.eval.pictures --model_path checkpoints/llava-v1.5-7b-pdrop --image photo.jpg \\
        --question "What is shown in this image?" --out kept.png
    python -m llava.eval.pictures --model_path llava-hf/llava-1.5-7b-hf --image photo.jpg --question "..." \\
        --out kept.png --conv_mode vicuna_v1 --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'

Geometry (boxes are ``(left, top, right, bottom)`` floats in pixels of the original image):

- ``pad`` (LLaVA-1.5): the image is centred on a square canvas of its longer side (as
  :func:`llava.data.expand_to_square`), resized to the vision size S; the (S/p)^2 tokens are a
  row-major grid over that square. Boxes are clipped to the image; a token that lies wholly in
  the padding covers none of the image and gets None.
- ``square``: CLIP's shortest-edge resize to S then an S x S centre crop; the grid covers the crop
  window, so the cropped-away margins belong to no token. (The image processor's shortest edge
  and crop size are taken to be the vision size S, as in every LLaVA release.)
- ``anyres`` (LLaVA-NeXT): first the base grid (the whole image squashed to S x S, so its boxes
  tile the whole image), then the high-resolution grid: the image resized into the best-fit
  pinpoint resolution (transformers' ``select_best_resolution``), centred with padding, cut into
  S x S crops whose (rows*g) x (cols*g) features are unpadded to the image's aspect ratio
  (transformers' ``unpad_image``); each feature row is followed by one newline token (None).
- With ``vision_feature_select_strategy="full"`` LLaVA-1.5's first token is CLIP's CLS token, a
  summary of the whole image: None as well.

None always means "no region of the image to grey": the drawing skips such tokens, the counts in
the captions include them (the model keeps and drops them like any other image token).

Picture: a title (the question, the model's answer and the right one, the schedule: :func:`picture_header`),
a legend (a kept and a dropped swatch), then one column per stage, captioned with its layers
(numbered from 0) and its counts of image tokens kept and of tokens in the sequence. LLaVA-NeXT's
base grid and high-res grid cover the same pixels, so they get one row of panels each (base image above, high-res crops + newlines below). Dropped
regions are greyscale at 30 % brightness; regions no token of a row covers are washed towards white.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageChops, ImageDraw, ImageFont
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import unpad_image

from ..data.images import ASPECT_RATIOS, ImagePreprocessor, expand_to_square, load_image
from ..data.templates import build_prompt
from .loading import add_model_args, default_aspect_ratio, load_for_eval

PANEL_GAP = 6  # white pixels between two panels (and two rows of panels)
DROPPED_BRIGHTNESS = 0.3  # a dropped token's region: greyscale at this fraction of its brightness
UNSEEN_WASH = 0.7  # a region no token covers: blended this far towards white
PANEL_SIZE = 336  # kept_token_picture: longer side of a panel, so small and huge images both read well


class Box(NamedTuple):
    """A region of the original image, in pixels (floats; right/bottom exclusive)."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass
class TokenLayout:
    """Where one image's tokens come from.

    ``boxes[i]``: the region token i (in sequence order) covers, None if it covers none.
    ``groups``: ``(name, range)`` of token indices drawn as one row of panels; the grids of
    different groups overlap on the image (LLaVA-NeXT: base image, then high-res crops + newlines).
    """

    boxes: list[Box | None]
    groups: list[tuple[str, range]]


def token_boxes(config, image_size: tuple[int, int], aspect_ratio: str) -> list[Box | None]:
    """The region of the original image each image token covers, in token order (see :func:`token_layout`)."""
    return token_layout(config, image_size, aspect_ratio).boxes


def token_layout(config, image_size: tuple[int, int], aspect_ratio: str) -> TokenLayout:
    """Boxes and groups of the tokens of one image of ``image_size`` = (height, width) pixels.

    ``config``: the model's ``LlavaConfig`` / ``LlavaNextConfig``; ``aspect_ratio``: the preprocessing
    the prompt was built with (``pad`` / ``square`` for LLaVA-1.5, ``anyres`` for LLaVA-NeXT). The
    length equals the image's token count (``llava.data.num_image_tokens``).
    """
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size}")
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}")
    anyres = config.model_type == "llava_next"
    if anyres != (aspect_ratio == "anyres"):
        raise ValueError(f"aspect_ratio {aspect_ratio!r} does not fit a {config.model_type!r} model: LLaVA-NeXT "
                         "takes anyres, LLaVA-1.5 pad or square")
    side, grid = _vision_grid(config)
    if anyres:
        base = _grid_boxes(grid, grid, 0.0, width / grid, 0.0, height / grid, width, height)
        high = _high_res_boxes(config, height, width, side, grid)
        groups = [("base image", range(len(base))),
                  ("high-res crops + newlines", range(len(base), len(base) + len(high)))]
        return TokenLayout(base + high, groups)
    if aspect_ratio == "pad":
        canvas = max(height, width)
        boxes = _grid_boxes(grid, grid, -float((canvas - width) // 2), canvas / grid,
                            -float((canvas - height) // 2), canvas / grid, width, height)
    else:
        boxes = _square_crop_boxes(height, width, side, grid)
    if config.vision_feature_select_strategy == "full":
        boxes = [None] + boxes  # CLIP's CLS token
    return TokenLayout(boxes, [("image", range(len(boxes)))])


def _vision_grid(config) -> tuple[int, int]:
    """(S, g): the vision tower's input size and the tokens per side of one S x S input."""
    vision = config.vision_config
    side, patch = int(vision.image_size), int(vision.patch_size)
    if side % patch:
        raise ValueError(f"vision image_size {side} is not a multiple of patch_size {patch}")
    strategy = config.vision_feature_select_strategy
    if strategy not in ("default", "full") or (strategy == "full" and config.model_type == "llava_next"):
        raise ValueError(f"vision_feature_select_strategy {strategy!r} is not supported for {config.model_type}")
    return side, side // patch


def _grid_boxes(rows: int, cols: int, x0: float, dx: float, y0: float, dy: float, width: int, height: int,
                cells: Sequence[int] | None = None) -> list[Box | None]:
    """Boxes of a row-major grid whose cell (r, c) spans x0 + dx*[c, c+1], y0 + dy*[r, r+1] in image pixels.

    ``cells``: flat cell indices to return (default: all, row-major). Clipped to the image; None when
    a cell does not overlap it.
    """
    boxes = []
    for cell in range(rows * cols) if cells is None else cells:
        r, c = divmod(int(cell), cols)
        left, right = max(x0 + dx * c, 0.0), min(x0 + dx * (c + 1), float(width))
        top, bottom = max(y0 + dy * r, 0.0), min(y0 + dy * (r + 1), float(height))
        boxes.append(Box(left, top, right, bottom) if left < right and top < bottom else None)
    return boxes


def _square_crop_boxes(height: int, width: int, side: int, grid: int) -> list[Box | None]:
    """CLIP: shortest edge resized to S (the other as transformers rounds it), then the centred S x S crop."""
    short, long = sorted((height, width))
    resized_long = int(side * long / short)
    new_h, new_w = (side, resized_long) if height <= width else (resized_long, side)
    top, left = int((new_h - side) / 2), int((new_w - side) / 2)
    sx, sy = new_w / width, new_h / height  # resized pixels per original pixel
    cell = side / grid
    return _grid_boxes(grid, grid, left / sx, cell / sx, top / sy, cell / sy, width, height)


def _high_res_boxes(config, height: int, width: int, side: int, grid: int) -> list[Box | None]:
    """LLaVA-NeXT's crops: unpadded feature rows of the best-fit grid, each row + one newline (None)."""
    best_h, best_w = select_best_resolution((height, width), config.image_grid_pinpoints)
    # The image is resized to fit (best_h, best_w) keeping its aspect ratio, then centred with padding
    # (transformers' get_patch_output_size / _get_padding_size).
    scale_w, scale_h = best_w / width, best_h / height
    if scale_w < scale_h:
        new_w, new_h = best_w, min(_ceil(height * scale_w), best_h)
    else:
        new_h, new_w = best_h, min(_ceil(width * scale_h), best_w)
    paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
    rows, cols = (best_h // side) * grid, (best_w // side) * grid  # the feature grid over the padded canvas
    cell = side / grid
    sx, sy = new_w / width, new_h / height
    # The model drops padding feature rows/columns with unpad_image; run it on the cell indices.
    kept = unpad_image(torch.arange(rows * cols).view(1, rows, cols), (height, width))[0]
    boxes: list[Box | None] = []
    for row in kept:
        boxes += _grid_boxes(rows, cols, -paste_x / sx, cell / sx, -paste_y / sy, cell / sy, width, height,
                             cells=row.tolist())
        boxes.append(None)  # the image_newline token that ends every feature row
    return boxes


def _ceil(value: float) -> int:
    return int(-(-value // 1))


# --------------------------------------------------------------------------- drawing


def draw_kept_tokens(
    image: Image.Image,
    boxes: Sequence[Box | None],
    kept_per_stage: Sequence[set[int] | torch.Tensor],
    titles: Sequence[str] | None = None,
    tokens_per_stage: Sequence[int] | None = None,
    groups: Sequence[tuple[str, range]] | None = None,
    scale: float = 1.0,
    header: Sequence[str] = (),
    legend: bool = True,
) -> Image.Image:
    """One panel per stage, side by side: ``image`` with the dropped tokens' regions greyed and darkened.

    ``kept_per_stage[s]``: indices into ``boxes`` of the tokens present in stage s (a set or a 1-D
    tensor). ``titles``: one per stage (default ``"stage s"``). ``tokens_per_stage``: the sequence
    length the language model runs at each stage (text + image), added to the caption.
    ``groups``: ``(name, range)`` per row of panels (:attr:`TokenLayout.groups`); grids that overlap
    on the image (LLaVA-NeXT's base image and high-res crops) go to different rows. Default: one row.
    ``scale``: panel size / image size. Regions that no token of a row covers (cropped away, or padding
    slivers at the edges of NeXT's crops) are washed towards white in every panel of that row.

    ``header``: lines written above the panels (a title: question, answers, schedule), wrapped to the
    picture's width. ``legend``: a line under the header showing a kept and a dropped swatch.

    Output: the header band, the legend, then ``S`` panels of ``round(w*scale) x round(h*scale)``
    separated by :data:`PANEL_GAP`, each row followed by a white caption band
    (``"stage 2: 8/16 image tokens kept"``, then the group's count).
    """
    num_tokens = len(boxes)
    kept = [_index_set(k, num_tokens, s) for s, k in enumerate(kept_per_stage)]
    titles = list(titles) if titles is not None else [f"stage {s}" for s in range(len(kept))]
    for name, values in (("titles", titles), ("tokens_per_stage", tokens_per_stage)):
        if values is not None and len(values) != len(kept):
            raise ValueError(f"{name} has {len(values)} entries but kept_per_stage has {len(kept)} stages")
    rows = list(groups) if groups is not None else [("", range(num_tokens))]
    panel_w, panel_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    base = image.convert("RGB").resize((panel_w, panel_h), Image.Resampling.BICUBIC)
    dark = _dropped_look(base)
    # Parts of the image no token of a row covers (CLIP's cropped margins, NeXT's edge slivers) are
    # washed out in every panel, so they never read as kept.
    unseen = [ImageChops.invert(_region_mask((panel_w, panel_h), [boxes[i] for i in members if boxes[i] is not None],
                                             scale)) for _, members in rows]
    washed = Image.blend(base, Image.new("RGB", base.size, "white"), UNSEEN_WASH)
    font = ImageFont.load_default()
    captions = [[_caption_lines(titles[s], kept[s], num_tokens, tokens_per_stage, s, name, members, len(rows) > 1)
                 for s in range(len(kept))] for name, members in rows]
    wrapped = [[_wrap(lines, font, panel_w) for lines in row] for row in captions]
    line_h = _line_height(font)
    band = max(len(lines) for row in wrapped for lines in row) * line_h + 4
    width = len(kept) * panel_w + (len(kept) - 1) * PANEL_GAP
    title = _wrap(list(header), font, width)
    top = len(title) * line_h + (line_h + PANEL_GAP if legend else 0) + (PANEL_GAP if title else 0)
    height = top + len(rows) * (panel_h + band) + (len(rows) - 1) * PANEL_GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title):
        draw.text((2, 2 + k * line_h), line, fill="black", font=font)
    if legend:
        _draw_legend(canvas, draw, font, (2, top - line_h - PANEL_GAP + 2), line_h)
    for r, (_, members) in enumerate(rows):
        y = top + r * (panel_h + band + PANEL_GAP)
        for s in range(len(kept)):
            x = s * (panel_w + PANEL_GAP)
            dropped = [boxes[i] for i in members if i not in kept[s] and boxes[i] is not None]
            panel = Image.composite(washed, base, unseen[r])
            canvas.paste(Image.composite(dark, panel, _region_mask((panel_w, panel_h), dropped, scale)), (x, y))
            for k, line in enumerate(wrapped[r][s]):
                draw.text((x + 2, y + panel_h + 2 + k * line_h), line, fill="black", font=font)
    return canvas


def _dropped_look(image: Image.Image) -> Image.Image:
    """How a dropped token's region is drawn: greyscale at :data:`DROPPED_BRIGHTNESS` of its brightness."""
    return Image.eval(image.convert("L"), lambda v: int(v * DROPPED_BRIGHTNESS)).convert("RGB")


LEGEND_COLOURS = ((220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 210, 40))  # the swatch's four quarters


def _draw_legend(canvas: Image.Image, draw, font, corner: tuple[int, int], size: int) -> None:
    """ "[swatch] kept   [swatch] dropped": a four-colour swatch as is, and as a dropped region looks."""
    swatch = Image.new("RGB", (2, 2))
    swatch.putdata(LEGEND_COLOURS)
    swatch = swatch.resize((size, size), Image.Resampling.NEAREST)
    x, y = corner
    for look, label in ((swatch, "kept (reaches the stage)"), (_dropped_look(swatch), "dropped (greyed, darker)")):
        canvas.paste(look, (x, y))
        draw.rectangle([x, y, x + size - 1, y + size - 1], outline="black")
        draw.text((x + size + 4, y), label, fill="black", font=font)
        x += size + 4 + int(font.getlength(label)) + 3 * size


def _index_set(kept: set[int] | torch.Tensor, num_tokens: int, stage: int) -> set[int]:
    indices = set(kept.flatten().tolist()) if isinstance(kept, torch.Tensor) else {int(i) for i in kept}
    if indices and (min(indices) < 0 or max(indices) >= num_tokens):
        raise ValueError(f"stage {stage}: kept token indices must lie in [0, {num_tokens}), got "
                         f"{min(indices)}..{max(indices)}")
    return indices


def _region_mask(size: tuple[int, int], boxes: Sequence[Box], scale: float) -> Image.Image:
    """An "L" mask, 255 inside the (scaled) boxes; a pixel belongs to a box if its centre does."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        left, top = round(box.left * scale), round(box.top * scale)
        right, bottom = round(box.right * scale), round(box.bottom * scale)
        if right > left and bottom > top:
            draw.rectangle([left, top, right - 1, bottom - 1], fill=255)
    return mask


def _caption_lines(title: str, kept: set[int], num_tokens: int, tokens_per_stage, stage: int, group: str,
                   members: range, grouped: bool) -> list[str]:
    lines = [f"{title}: {len(kept)}/{num_tokens} image tokens kept"]
    if grouped:
        lines.append(f"{group}: {len(kept & set(members))}/{len(members)}")
    if tokens_per_stage is not None:
        lines.append(f"sequence: {int(tokens_per_stage[stage])} tokens")
    return lines


def _wrap(lines: list[str], font, width: int) -> list[str]:
    """Word-wrap each caption line to ``width`` pixels (a word longer than the panel stays whole)."""
    chars = max(1, int(width / max(font.getlength("0"), 1.0)))
    return [part for line in lines for part in (textwrap.wrap(line, chars) or [""])]


def _line_height(font) -> int:
    _, top, _, bottom = font.getbbox("Ag")
    return bottom - min(top, 0) + 3


# --------------------------------------------------------------------------- the model


def kept_token_picture(
    model,
    processor,
    image: Image.Image | Sequence[Image.Image],
    prompt: str | Mapping[str, torch.Tensor],
    out_path: str | Path | None = None,
    *,
    aspect_ratio: str | None = None,
    image_index: int = 0,
    panel_size: int | None = PANEL_SIZE,
    header: Sequence[str] = (),
) -> tuple[Image.Image, dict]:
    """Run one PyramidDrop prefill on a single-sample prompt and picture what each stage kept.

    ``prompt``: the text with one ``<image>`` placeholder per image (processed here, with the images
    preprocessed by ``aspect_ratio``: default :func:`default_aspect_ratio`), or the inputs already
    made by the processor (``input_ids`` ``(1, n)``, ``pixel_values``, ``image_sizes`` for NeXT) from
    the same images. With several images (a list), image ``image_index`` is pictured (default the
    first); the stages' keep ratios apply to the pool of all of them, so its counts may differ.
    ``panel_size``: the panels' longer side in pixels (None: the image's own size). ``header``: title
    lines above the panels (e.g. :func:`picture_header`); each panel is titled with its stage and layers.

    Returns the picture (also saved as PNG to ``out_path`` if given) and ``{"kept": [image tokens of
    the pictured image kept per stage, stage 0 first], "image_tokens", "tokens_per_stage" (the
    sequence length per stage), "image_index", "aspect_ratio"}``.
    """
    images = [image] if isinstance(image, Image.Image) else list(image)
    if not 0 <= image_index < len(images):
        raise ValueError(f"image_index {image_index} is out of range for {len(images)} image(s)")
    aspect_ratio = aspect_ratio or default_aspect_ratio(model.config)
    layouts = [token_layout(model.config, (im.height, im.width), aspect_ratio) for im in images]
    inputs = prompt if isinstance(prompt, Mapping) else processed_inputs(processor, images, prompt, aspect_ratio)
    trace = run_prefill(model, inputs)
    kept = kept_token_indices(trace, [len(layout.boxes) for layout in layouts], image_index)
    layout, pictured = layouts[image_index], images[image_index]
    tokens_per_stage = trace.tokens_per_stage()[0].tolist()
    scale = 1.0 if panel_size is None else panel_size / max(pictured.size)
    picture = draw_kept_tokens(pictured, layout.boxes, kept, titles=stage_titles(model),
                               tokens_per_stage=tokens_per_stage, groups=layout.groups, scale=scale, header=header)
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        picture.save(out_path, format="PNG")
    summary = {"kept": [len(k) for k in kept], "image_tokens": len(layout.boxes), "tokens_per_stage": tokens_per_stage,
               "image_index": image_index, "aspect_ratio": aspect_ratio}
    return picture, summary


def stage_titles(model) -> list[str]:
    """``"stage s, layers a-b"`` per stage of the model's schedule (layers numbered from 0, as quicklook does)."""
    num_layers = model.config.get_text_config().num_hidden_layers
    stages = model.pdrop_config.stage_layers(num_layers)
    return [f"stage {s}, layer {r.start}" if len(r) == 1 else f"stage {s}, layers {r.start}-{r.stop - 1}"
            for s, r in enumerate(stages)]


def picture_header(question: str, schedule, answer: str | None = None, truth: str | None = None) -> list[str]:
    """Title lines of a picture: the question, the model's answer and the right one (when known), the schedule."""
    lines = [f"Q: {question}"]
    said = [f"model: {answer!r}" if answer else "model: (no answer)" if answer is not None else "",
            f"ground truth: {truth!r}" if truth is not None else ""]
    if any(said):
        lines.append("   ".join(s for s in said if s))
    ratios = ", ".join(f"{r:g}" for r in schedule.image_token_ratio_list)
    lines.append(f"schedule: drop after {list(schedule.layer_list)} layers, keep [{ratios}] of the image tokens"
                 + ("" if schedule.method == "pdrop" else f" ({schedule.method} ranking)"))
    return lines


def generate_answer(model, processor, inputs: Mapping[str, torch.Tensor], max_new_tokens: int = 32,
                    stop_ids: Sequence[int] | None = None) -> str:
    """The model's greedy answer to a single-sample prompt, ending at ``stop_ids`` (default: the model's eos)."""
    batch = {k: v.to(model.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    stop = {} if stop_ids is None else {"eos_token_id": list(stop_ids)}
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id, **stop)
    return processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def processed_inputs(processor, images: list[Image.Image], prompt: str, aspect_ratio: str) -> dict[str, torch.Tensor]:
    """The processor's inputs for ``prompt`` and ``images``, padded to squares first for ``pad``.

    The prompt is tokenized without special tokens, as training does (the templates write the bos).
    """
    preprocess = ImagePreprocessor(processor, aspect_ratio)  # checks anyres against the processor
    if aspect_ratio == "pad":
        images = [expand_to_square(im.convert("RGB"), preprocess.background) for im in images]
    out = processor(images=images, text=prompt, return_tensors="pt", add_special_tokens=False)
    return dict(out)


def run_prefill(model, inputs: Mapping[str, torch.Tensor]):
    """One forward without cache on a batch of one; returns ``model.pdrop_trace``."""
    if getattr(model, "pdrop_config", None) is None:
        raise ValueError(f"{type(model).__name__} has no PyramidDrop schedule, so nothing is dropped: load it with "
                         "pdrop_config=PDropConfig(...) (command line: --layer_list and --image_token_ratio_list, or "
                         "--lambda) or use a checkpoint saved with one")
    input_ids = inputs["input_ids"]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"a picture needs a batch of one prompt, got input_ids of shape {tuple(input_ids.shape)}")
    batch = {k: v.to(model.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    model.pdrop_trace = None
    with torch.no_grad():
        model(**batch, use_cache=False)
    if model.pdrop_trace is None:
        raise RuntimeError("the forward left no pdrop_trace")
    return model.pdrop_trace


def kept_token_indices(trace, image_token_counts: list[int], image_index: int = 0, sample: int = 0) -> list[torch.Tensor]:
    """Per stage, the indices (within image ``image_index``) of its tokens present in that stage, for the batch's
    ``sample``.

    The sample's image positions in the input are split into images by ``image_token_counts`` (one
    count per image, in prompt order); a mismatch with the model's image tokens raises, naming both.
    """
    positions = trace.image_mask[sample].nonzero().squeeze(1).cpu()
    if positions.numel() != sum(image_token_counts):
        raise ValueError(f"the prompt holds {positions.numel()} image tokens but the token geometry gives "
                         f"{sum(image_token_counts)} ({image_token_counts}): wrong aspect_ratio for this processor?")
    start = sum(image_token_counts[:image_index])
    span = positions[start:start + image_token_counts[image_index]]
    kept = []
    for stage in range(trace.num_stages):
        present = trace.kept_image_positions(stage)[sample].cpu()
        index = torch.searchsorted(span, present).clamp(max=span.numel() - 1)
        kept.append(index[span[index] == present])
    return kept


def main(argv: list[str] | None = None) -> dict:
    from . import pyramid_pictures  # huge images: --coarse_to_fine draws the walk's levels there

    if pyramid_pictures.requested(argv):
        return pyramid_pictures.main(argv)
    parser = argparse.ArgumentParser(description="Picture the image tokens PyramidDrop keeps at each stage.")
    add_model_args(parser, no_pdrop=False)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--out", default="kept.png", help="PNG to write")
    parser.add_argument("--panel_size", type=int, default=PANEL_SIZE, help="longer side of a panel in pixels")
    parser.add_argument("--truth", help="the right answer, written in the title next to the model's")
    parser.add_argument("--max_new_tokens", type=int, default=32,
                        help="length of the model's answer written in the title (0: no answer)")
    args = parser.parse_args(argv)
    model, processor = load_for_eval(args)
    if model.pdrop_config is None:
        parser.error(f"{args.model_path} has no saved PyramidDrop schedule: pass --layer_list and "
                     "--image_token_ratio_list (or --lambda/--stages)")
    image = load_image(args.image, sample_id=args.image)
    prompt = build_prompt([{"from": "human", "value": "<image>\n" + args.question}], args.conv_mode,
                          processor.tokenizer)
    aspect_ratio = args.image_aspect_ratio or default_aspect_ratio(model.config)
    inputs = processed_inputs(processor, [image], prompt, aspect_ratio)
    answer = generate_answer(model, processor, inputs, args.max_new_tokens) if args.max_new_tokens > 0 else None
    header = picture_header(args.question, model.pdrop_config, answer, args.truth)
    _, summary = kept_token_picture(model, processor, image, inputs, args.out, aspect_ratio=aspect_ratio,
                                    panel_size=args.panel_size, header=header)
    summary["answer"] = answer
    print(f"wrote {args.out}: image tokens kept per stage {' -> '.join(map(str, summary['kept']))} "
          f"(sequence {' -> '.join(map(str, summary['tokens_per_stage']))} tokens)")
    return summary


if __name__ == "__main__":
    from ..cli import cli_main

    cli_main(main, prog="llava.eval.pictures")
