"""The processor: the <image> token, LLaVA / LLaVA-NeXT processors, and image-token counts that match the model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaNextProcessor, LlavaProcessor

from llava.data import ImagePreprocessor, add_image_token, build_processor, num_image_tokens
from llava.model.builder import build_random_llava

from .conftest import PINPOINTS, load_tokenizer

# (width, height) of test images: square, wide, tall, very wide, very tall
IMAGE_SIZES_WH = [(40, 40), (50, 20), (20, 50), (90, 30), (28, 70)]


def test_add_image_token_once_and_sets_a_pad_token(assets):
    tok = load_tokenizer(assets)
    size = len(tok)
    tok.pad_token = None
    image_id = add_image_token(tok)
    assert image_id == size and len(tok) == size + 1
    assert tok.convert_ids_to_tokens(image_id) == "<image>"
    assert tok.pad_token == tok.unk_token
    assert add_image_token(tok) == image_id and len(tok) == size + 1
    assert tok("a <image>b", add_special_tokens=False)["input_ids"].count(image_id) == 1


def test_build_processor_kinds_and_round_trip(assets, image_processor, tmp_path):
    tok = load_tokenizer(assets)
    llava = build_processor(tok, image_processor, patch_size=7)
    nxt = build_processor(tok, image_processor, patch_size=7, image_grid_pinpoints=PINPOINTS)
    assert isinstance(llava, LlavaProcessor) and isinstance(nxt, LlavaNextProcessor)
    assert llava.image_token_id == tok.convert_tokens_to_ids("<image>")  # added by build_processor
    assert nxt.image_processor.image_grid_pinpoints == PINPOINTS
    assert list(nxt.image_processor.image_mean) == pytest.approx(list(image_processor.image_mean))
    for processor, name in ((llava, "llava"), (nxt, "next")):
        processor.save_pretrained(tmp_path / name)
        loaded = AutoProcessor.from_pretrained(tmp_path / name)
        assert type(loaded) is type(processor)
        for width, height in IMAGE_SIZES_WH:
            assert num_image_tokens(loaded, (height, width)) == num_image_tokens(processor, (height, width))


def test_counts(processor, next_processor):
    assert num_image_tokens(processor, (28, 28)) == 16  # (28 / 7)^2, CLS dropped
    assert num_image_tokens(processor, (20, 50)) == 16
    counts = {num_image_tokens(next_processor, (h, w)) for w, h in IMAGE_SIZES_WH}
    assert len(counts) > 2  # any resolution: the count depends on the aspect ratio
    with pytest.raises(ValueError, match="positive"):
        num_image_tokens(processor, (0, 28))


@pytest.mark.parametrize("preset,aspect_ratio", [("tiny-llava", "pad"), ("tiny-llava", "square"),
                                                 ("tiny-llava-next", "anyres")])
def test_counts_match_the_model_features(preset, aspect_ratio, processor, next_processor):
    """The vision tower + projector give exactly num_image_tokens features per image."""
    model = build_random_llava(preset)
    preprocess = ImagePreprocessor(next_processor if aspect_ratio == "anyres" else processor, aspect_ratio)
    images = [Image.new("RGB", size, (200, 30, 30)) for size in IMAGE_SIZES_WH]
    batch = preprocess(images)
    kwargs = {"image_sizes": batch.image_sizes} if batch.image_sizes is not None else {}
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=batch.pixel_values, return_dict=True,
                                                  **kwargs).pooler_output
    assert [f.shape[0] for f in features] == batch.num_image_tokens
    if aspect_ratio == "anyres":
        assert batch.pixel_values.shape[:3] == (5, 5, 3)
        assert batch.image_sizes.tolist() == [[h, w] for w, h in IMAGE_SIZES_WH]
