"""The processor: tokenizer + image processor + the rule that says how many tokens an image takes.

- :func:`add_image_token` makes ``<image>`` one special token of the tokenizer (as LLaVA does for
  Vicuna) and gives the tokenizer a pad token when it has none.
- :func:`build_processor` wraps the tokenizer and the vision tower's ``CLIPImageProcessor`` in
  transformers' own ``LlavaProcessor`` (LLaVA-1.5: one fixed-size image) or ``LlavaNextProcessor``
  (LLaVA-NeXT any resolution: a base image plus crops on a grid from ``image_grid_pinpoints``), so
  the processor saved next to a checkpoint is the standard one.
- :func:`num_image_tokens` is the one place that counts image tokens: the dataset expands each
  ``<image>`` placeholder to exactly this many copies of the image token, the number of feature
  vectors the model's vision tower + projector produce for that image.

Example::

    tokenizer = AutoTokenizer.from_pretrained("playground/tiny/llm")
    image_processor = AutoImageProcessor.from_pretrained("playground/tiny/vision")
    processor = build_processor(tokenizer, image_processor, patch_size=7)
    num_image_tokens(processor, (28, 28))  # 16: (28 / 7) ** 2 patches, CLS dropped
"""

from __future__ import annotations

from tokenizers import AddedToken
from transformers import LlavaNextProcessor, LlavaProcessor

IMAGE_TOKEN = "<image>"

# CLIPImageProcessor settings carried over to the any-resolution image processor.
_SHARED_IMAGE_SETTINGS = ("size", "crop_size", "image_mean", "image_std", "resample", "do_resize", "do_center_crop",
                          "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb")


def add_image_token(tokenizer, image_token: str = IMAGE_TOKEN) -> int:
    """Add ``image_token`` as a special token if the tokenizer lacks it; return its id.

    Also sets ``tokenizer.pad_token`` to the unk token (else the eos token) when there is no pad
    token. Idempotent. The model's embedding matrix must cover ``len(tokenizer)`` afterwards.
    """
    if image_token not in tokenizer.get_added_vocab():
        tokenizer.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
        if fallback is None:
            raise ValueError("the tokenizer has no pad, unk or eos token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer.convert_tokens_to_ids(image_token)


def build_processor(
    tokenizer,
    image_processor,
    *,
    patch_size: int,
    vision_feature_select_strategy: str = "default",
    image_grid_pinpoints: list[list[int]] | None = None,
) -> LlavaProcessor | LlavaNextProcessor:
    """A ``LlavaProcessor`` (``image_grid_pinpoints`` None) or a ``LlavaNextProcessor``.

    ``patch_size`` is the vision tower's patch size; ``vision_feature_select_strategy`` must be the
    model config's ("default" drops CLIP's CLS token, "full" keeps it). For LLaVA-NeXT the CLIP
    processor's size, crop size, mean, std and resampling are copied into a
    ``LlavaNextImageProcessor`` with the given pinpoints (``[[height, width], ...]`` in pixels).
    The tokenizer gets the ``<image>`` token (:func:`add_image_token`) if it lacks it.
    """
    add_image_token(tokenizer, IMAGE_TOKEN)
    common = dict(tokenizer=tokenizer, patch_size=patch_size,
                  vision_feature_select_strategy=vision_feature_select_strategy, image_token=IMAGE_TOKEN,
                  num_additional_image_tokens=1)
    if image_grid_pinpoints is None:
        return LlavaProcessor(image_processor=image_processor, **common)
    return LlavaNextProcessor(image_processor=anyres_image_processor(image_processor, image_grid_pinpoints), **common)


def anyres_image_processor(image_processor, image_grid_pinpoints: list[list[int]]):
    """A ``LlavaNextImageProcessor`` with ``image_processor``'s settings and the crop grid ``image_grid_pinpoints``.

    Uses the same backend (PIL or torchvision) as ``image_processor``, so both give the same pixels.
    """
    import transformers

    pinpoints = [[int(h), int(w)] for h, w in image_grid_pinpoints]
    settings = image_processor.to_dict()
    kwargs = {key: settings[key] for key in _SHARED_IMAGE_SETTINGS if settings.get(key) is not None}
    pil_class = getattr(transformers, "LlavaNextImageProcessorPil", None)
    uses_pil = type(image_processor).__name__.endswith("Pil")
    cls = pil_class if (uses_pil and pil_class is not None) else transformers.LlavaNextImageProcessor
    return cls(image_grid_pinpoints=pinpoints, do_pad=True, **kwargs)


def is_anyres(processor) -> bool:
    """Whether ``processor`` is a LLaVA-NeXT (any resolution) processor."""
    return isinstance(processor, LlavaNextProcessor)


def num_image_tokens(processor, image_size: tuple[int, int]) -> int:
    """Image tokens the model produces for an image of ``image_size`` = (height, width) pixels.

    ``image_size`` is the size given to the processor (after any square padding). LLaVA-1.5: the
    same for every size ((crop / patch)^2, minus CLS with the "default" strategy). LLaVA-NeXT: base
    image + unpadded crop grid + one newline token per feature row, so it depends on the size.
    """
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size}")
    return int(processor._get_num_multimodal_tokens(image_sizes=[[height, width]]).num_image_tokens[0])
