"""Checks of a LLaVA forward's inputs that name the problem, with PyramidDrop on or off.

transformers would otherwise fail later with a message about tensor shapes, or, for an attention
mask of all zeros or ``<image>`` tokens without an image, run without complaint and give a result
that means nothing.
"""

from __future__ import annotations

import torch
from transformers import LlavaNextForConditionalGeneration


def check_pixel_values(model, pixel_values: torch.Tensor | None, image_sizes) -> None:
    """``pixel_values`` of the shape the model reads; LLaVA-NeXT also needs ``image_sizes``."""
    if pixel_values is None:
        return
    next_model = isinstance(model, LlavaNextForConditionalGeneration)
    expected = (4, 5) if next_model else (4,)
    if pixel_values.dim() not in expected:
        layout = "(num_images, num_crops, 3, height, width)" if next_model else "(num_images, 3, height, width)"
        raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; {type(model).__name__} expects {layout}")
    if next_model:
        check_image_sizes(pixel_values, image_sizes)


def check_image_sizes(pixel_values: torch.Tensor, image_sizes: torch.Tensor | None) -> None:
    """LLaVA-NeXT needs one ``(height, width)`` per image to unpad its crops."""
    if image_sizes is None:
        raise ValueError("LLaVA-NeXT needs image_sizes (num_images, 2) with pixel_values: the processor returns it")
    sizes = torch.as_tensor(image_sizes)
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise ValueError(f"image_sizes must have shape (num_images, 2), got {tuple(sizes.shape)}")
    if pixel_values.dim() == 5 and sizes.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"image_sizes has {sizes.shape[0]} rows but pixel_values holds {pixel_values.shape[0]} images")
    if bool((sizes <= 0).any()):
        raise ValueError(f"image_sizes must be positive (height, width) pairs, got {sizes.tolist()}")


def check_prefill_inputs(model, input_ids, attention_mask, pixel_values, mm_encoder_outputs) -> int | None:
    """Refuse a sample whose attention mask is all zeros, and ``<image>`` tokens with no image (one device read).

    Returns the number of ``<image>`` tokens in ``input_ids`` (None without ``input_ids``), read in
    the same device read, for :func:`check_image_token_count` once the features are known.
    """
    parts = []
    if attention_mask is not None and attention_mask.dim() == 2:
        parts.append((attention_mask == 0).all(dim=1).long())
    if input_ids is not None:
        parts.append((input_ids == model.config.image_token_id).sum().view(1))
    if not parts:
        return None
    values = torch.cat(parts).tolist()
    image_tokens = values.pop() if input_ids is not None else None
    empty = [i for i, flag in enumerate(values) if flag]
    if empty:
        raise ValueError(f"sample(s) {empty} have an attention mask of all zeros: every sample needs at least one real "
                         "token (check the padding of the batch)")
    has_images = pixel_values is not None or (mm_encoder_outputs or {}).get("image") is not None
    if image_tokens and not has_images:
        raise ValueError(f"the input holds {image_tokens} image tokens but no pixel_values: pass the image(s) the "
                         "<image> placeholders stand for (or remove the placeholders)")
    return image_tokens


def check_image_token_count(num_tokens: int, num_features: int, num_images: int) -> None:
    if num_tokens != num_features:
        raise ValueError(
            f"image-token count mismatch: the input holds {num_tokens} image tokens but the {num_images} image(s) "
            f"give {num_features} feature vectors (the processor must expand each <image> to one token per "
            "feature, and every <image> needs its image)"
        )
