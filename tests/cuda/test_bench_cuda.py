"""The speed benchmark on CUDA: events, peak memory, bf16, every method (a smoke run on the tiny preset)."""

import torch

from llava.bench.speed import main


def test_tiny_benchmark_on_cuda_measures_memory_and_every_method():
    results = main(["--preset", "tiny-llava", "--device", "cuda", "--methods", "none,pdrop,fastv,ideal",
                    "--warmup", "1", "--repeats", "2", "--max_new_tokens", "3"])
    assert results["settings"]["dtype"] == "bfloat16" and results["environment"]["device_type"] == "cuda"
    for method in ("none", "pdrop", "fastv", "ideal"):
        for task in ("prefill", "decode", "train", "train_ckpt"):
            metric = results["methods"][method]["metrics"][task]
            assert metric["median_ms"] > 0 and metric["peak_mem_mib"] > 0
    assert results["methods"]["pdrop"]["metrics"]["ranking_overhead"]["ranking_pct"] > 0
    assert torch.cuda.is_available()
