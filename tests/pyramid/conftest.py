"""Fixtures of the coarse-to-fine tests: the tiny LLaVA-NeXT (28 px CLIP, 7 px patches) and images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from llava.paths import load_pyramid_config
from tests.conftest import preset_model


@pytest.fixture(scope="module")
def next_model():
    """Tiny LLaVA-NeXT, PyramidDrop off, peaked attention (larger random weights)."""
    return preset_model("tiny-llava-next", schedule=None)


@pytest.fixture
def tiny_config():
    return load_pyramid_config("tiny")


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Random pixels with some large-scale structure (smooth gradients + noise), so levels differ."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 255 // max(width, 1)), (ys * 255 // max(height, 1)), (xs + ys) % 256], axis=-1)
    pixels = np.clip(base + rng.integers(-60, 60, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)
