"""The CUDA tests, all here: what `scripts/bench/gpu_check.sh` runs on a GPU machine. Skipped without one."""

import importlib.util

import pytest
import torch

HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
KERNELS = ["sdpa", pytest.param("flash_attention_2", marks=pytest.mark.skipif(not HAS_FLASH, reason="flash-attn"))]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cuda/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            item.add_marker(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))
