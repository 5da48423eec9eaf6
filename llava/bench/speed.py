"""Speed and memory of PyramidDrop against no drop (and FastV) on one random-weight model.

One run builds a model of the preset's shape once and, for each method in ``--methods``, switches
its schedule (``model.set_pdrop_config``) and measures:

* ``prefill``: one forward of the prompt (``text_tokens`` text + ``image_tokens`` image tokens per
  sample, batch ``--batch_size``) through the *language model only*: ``inputs_embeds`` with random
  image features plus an image mask, the vision tower and projector excluded, so every preset gets
  exactly its ``image_tokens``. The KV cache is filled; logits are taken for the last token only.
* ``decode``: ``--max_new_tokens`` greedy steps after an untimed prefill, each a language-model
  forward of one token per sample with the KV cache; every method decodes the same count (no EOS
  stop). Reported as tokens/s = batch * steps / time.
* ``train`` / ``train_ckpt``: forward with labels + backward + ``SGD`` step through the whole model
  (real ``pixel_values`` through the frozen vision tower; language model and projector trained),
  without / with activation checkpointing. SGD without momentum keeps no optimizer state; its
  learning rate is 0 so the shared model stays the same for every method (the update still runs).
* peak memory of each measurement (CUDA: ``torch.cuda.max_memory_allocated``; CPU: not measured).
* the FLOPs ratio of the schedule (:mod:`llava.bench.flops`, text tokens included) and the ranking
  overhead: one prefill under ``torch.profiler``, the time in the ``pdrop/rank`` and
  ``pdrop/compact`` ranges as a share of that prefill (CUDA: kernel time inside the ranges).

Warmup runs are discarded; times are the median and min of the repeats (CUDA events on GPU,
``time.perf_counter`` on CPU). Ratios are against ``none``. A task that runs out of memory is
recorded as ``"oom"`` and the run goes on.

Launch::

    python -m llava.bench --preset tiny-llava --device cpu                          # CI smoke
    python -m llava.bench --preset llava-next-7b --dtype bfloat16 --attn sdpa --batch_size 2 --json out.json
    python -m llava.bench --preset llava-1.5-7b --batch_size 8 --methods none,pdrop,fastv
    python -m llava.bench --preset llava-next-7b --batch_size 1 --train_batch_size 2 --tasks prefill,train
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from transformers import LlavaNextForConditionalGeneration
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from ..model.builder import build_random_llava
from ..paths import load_model_preset, load_schedule
from ..pdrop.decoder import pdrop_decoder_forward
from ..pdrop.schedule import PDropConfig
from ..pdrop.args import add_schedule_args, schedule_from_args
from ..pdrop.flops import ModelShape
from .flops import flops_report

TASKS = ("prefill", "decode", "train", "train_ckpt")
METHODS = ("none", "pdrop", "fastv")
RANKING_RANGES = ("pdrop/rank", "pdrop/compact")  # record_function ranges of the decoder's ranking and compaction
TEXT_BEFORE_IMAGE = 2  # prompt layout: a few text tokens, the image tokens, then the rest of the text
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2**20
RATIO_KEYS = ("median_ms", "min_ms", "peak_mem_mib", "median_tokens_per_s", "best_tokens_per_s")


@dataclass
class SpeedSettings:
    """What one benchmark run measures and how."""

    preset: str
    """A ``configs/models/`` preset name or JSON path (shapes and token counts)."""
    methods: tuple[str, ...] = ("none", "pdrop")
    """Subset of ``METHODS``: ``none`` (PyramidDrop off), ``pdrop`` (``schedule``), ``fastv``."""
    tasks: tuple[str, ...] = TASKS
    """Subset of ``TASKS``."""
    schedule: PDropConfig | None = None
    """The ``pdrop`` schedule; None: ``configs/schedules/pdrop-default`` scaled to the model (``tiny`` for tiny presets)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """``cuda``, ``cuda:N`` or ``cpu``."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16`` or ``float16``."""
    attn: str = "sdpa"
    """Attention kernel: ``eager``, ``sdpa`` or ``flash_attention_2``."""
    batch_size: int = 1
    """Samples per prefill / decode batch."""
    train_batch_size: int | None = None
    """Samples per training step; None: ``batch_size``."""
    max_new_tokens: int = 32
    """Decode steps per measurement."""
    warmup: int = 2
    """Untimed runs before the repeats of each measurement."""
    repeats: int = 5
    """Timed runs of each measurement (median and min reported)."""
    fastv_k: int = 2
    """FastV: drop after this many layers."""
    fastv_ratio: float = 0.5
    """FastV: fraction of image tokens dropped (kept: ``1 - fastv_ratio``)."""
    seed: int = 0
    """Seed of the random weights and inputs."""

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if torch.device(self.device).type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    @property
    def train_batch(self) -> int:
        return self.batch_size if self.train_batch_size is None else self.train_batch_size


@dataclass
class Measurement:
    """Timed repeats of one task for one method."""

    times_s: list[float]
    peak_mem_mib: float | None  # CUDA: max allocated during the repeats (weights included); CPU: None
    base_mem_mib: float | None  # CUDA: allocated before the repeats (weights and inputs)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        median, best = statistics.median(self.times_s), min(self.times_s)
        out = {"median_ms": 1e3 * median, "min_ms": 1e3 * best, "repeats": len(self.times_s),
               "peak_mem_mib": self.peak_mem_mib, "base_mem_mib": self.base_mem_mib, **self.extra}
        tokens = self.extra.get("tokens_per_step")
        if tokens is not None:
            out["median_tokens_per_s"], out["best_tokens_per_s"] = tokens / median, tokens / best
        return out


@dataclass
class Bench:
    """The model, its inputs and the optimizer shared by every method and task."""

    settings: SpeedSettings
    spec: dict[str, Any]
    model: torch.nn.Module
    device: torch.device
    lm_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # inputs_embeds (B, n, d), image_mask (B, n)
    train_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # input_ids, labels, pixel_values, ...
    optimizer: torch.optim.Optimizer | None = None


# ---------------------------------------------------------------------------------------------- schedules
def default_schedule(preset: str, num_layers: int) -> PDropConfig:
    """``pdrop-default`` (``tiny`` for tiny presets), boundaries scaled to ``num_layers``.

    Both files have equal stages, so the layer count they were written for is
    ``layer_list[0] * num_stages`` (32 and 4); a 28-layer model gets ``[7, 14, 21]``.
    """
    schedule = load_schedule("tiny" if Path(preset).stem.startswith("tiny") else "pdrop-default")
    written_for = schedule.layer_list[0] * schedule.num_stages
    if written_for == num_layers:
        return schedule
    return replace(schedule, layer_list=[round(b * num_layers / written_for) for b in schedule.layer_list])


def method_schedules(settings: SpeedSettings, num_layers: int) -> dict[str, PDropConfig | None]:
    """Validated schedules of the methods to run (``none``: PyramidDrop off)."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown or not settings.methods:
        raise ValueError(f"unknown method(s) {unknown or list(settings.methods)}: choose from {', '.join(METHODS)}")
    schedules = {}
    for method in settings.methods:
        if method == "none":
            schedules[method] = None
        elif method == "pdrop":
            schedules[method] = settings.schedule or default_schedule(settings.preset, num_layers)
        else:
            schedules[method] = PDropConfig.fastv(settings.fastv_k, settings.fastv_ratio)
        if schedules[method] is not None:
            schedules[method].validate_for(num_layers)
    return schedules


# ---------------------------------------------------------------------------------------------- inputs
def prompt_ids(spec: dict[str, Any], batch: int, image_tokens: int, gen: torch.Generator) -> torch.Tensor:
    """``(batch, text_tokens + image_tokens)``: random text with one block of image tokens, no padding."""
    high = min(spec["image_token_id"], spec["text_config"]["vocab_size"])
    words = torch.randint(3, high, (batch, spec["text_tokens"]), generator=gen)
    image = torch.full((batch, image_tokens), spec["image_token_id"])
    return torch.cat([words[:, :TEXT_BEFORE_IMAGE], image, words[:, TEXT_BEFORE_IMAGE:]], dim=1)


@torch.no_grad()
def language_model_inputs(bench: Bench, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Prefill inputs for the language model: text embeddings, random image features in the image slots."""
    spec, model = bench.spec, bench.model
    ids = prompt_ids(spec, bench.settings.batch_size, spec["image_tokens"], gen).to(bench.device)
    image_mask = ids == spec["image_token_id"]
    embeds = model.get_input_embeddings()(ids)
    features = torch.randn(embeds.shape, generator=gen).to(embeds) * embeds.float().std()
    return {"inputs_embeds": torch.where(image_mask[..., None], features, embeds), "image_mask": image_mask}


def next_image_size(model: torch.nn.Module, spec: dict[str, Any]) -> tuple[int, int]:
    """LLaVA-NeXT: the grid resolution whose crop count is nearest the preset's image tokens.

    The image is exactly that resolution (no unpadding); its token count (base + crops + one newline
    per row) is then counted by the model and can differ a little from the preset's ``image_tokens``.
    """
    size, patch = spec["vision_config"]["image_size"], spec["vision_config"]["patch_size"]
    target_crops = spec["image_tokens"] / (size // patch) ** 2 - 1
    pinpoints = model.config.image_grid_pinpoints
    return tuple(min(pinpoints, key=lambda hw: abs((hw[0] // size) * (hw[1] // size) - target_crops)))


@torch.no_grad()
def image_inputs(bench: Bench, batch: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], int]:
    """``pixel_values`` (``image_sizes`` for NeXT) for ``batch`` images and the image tokens each gives."""
    model, spec, dtype = bench.model, bench.spec, bench.settings.torch_dtype
    size = spec["vision_config"]["image_size"]
    if not isinstance(model, LlavaNextForConditionalGeneration):
        pixels = torch.randn(batch, 3, size, size, generator=gen).to(bench.device, dtype)
        return {"pixel_values": pixels}, spec["image_tokens"]
    height, width = next_image_size(model, spec)
    crops = image_size_to_num_patches((height, width), model.config.image_grid_pinpoints, size)
    pixels = torch.randn(batch, crops, 3, size, size, generator=gen).to(bench.device, dtype)
    sizes = torch.tensor([[height, width]] * batch, device=bench.device)
    features = model.model.get_image_features(pixel_values=pixels[:1], image_sizes=sizes[:1], return_dict=True)
    return {"pixel_values": pixels, "image_sizes": sizes}, features.pooler_output[0].shape[0]


def training_inputs(bench: Bench, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A full-model training batch; the labels are the last half of the text (the answer)."""
    batch = bench.settings.train_batch
    images, image_tokens = image_inputs(bench, batch, gen)
    ids = prompt_ids(bench.spec, batch, image_tokens, gen)
    labels = torch.full_like(ids, -100)
    answer = bench.spec["text_tokens"] // 2
    labels[:, -answer:] = ids[:, -answer:]
    return {"input_ids": ids.to(bench.device), "labels": labels.to(bench.device), **images}


# ---------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``fn()`` and its duration in seconds (CUDA events on GPU, ``perf_counter`` on CPU)."""
    if device.type != "cuda":
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    result = fn()
    end.record()
    end.synchronize()
    return result, begin.elapsed_time(end) / 1e3


def measure(step: Callable[[], float], bench: Bench, **extra) -> Measurement:
    """Warmup runs, then the timed repeats of ``step`` (which returns the seconds it timed)."""
    for _ in range(bench.settings.warmup):
        step()
    base = None
    if bench.device.type == "cuda":
        torch.cuda.synchronize(bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        base = torch.cuda.memory_allocated(bench.device) / MIB
    times = [step() for _ in range(bench.settings.repeats)]
    peak = torch.cuda.max_memory_allocated(bench.device) / MIB if bench.device.type == "cuda" else None
    return Measurement(times, peak, base, extra)


# ---------------------------------------------------------------------------------------------- tasks
def language_model_forward(model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, cache=None):
    """One language-model forward (PyramidDrop or stock, as the model is set) with the KV cache.

    Returns the last position's logits ``(B, 1, V)`` and the cache. A prefill passes no cache.
    """
    decoder = model.model.language_model
    if model.pdrop_config is None:
        out = decoder(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True)
    else:
        out = pdrop_decoder_forward(decoder, model.pdrop_config, inputs_embeds, image_mask,
                                    past_key_values=cache, use_cache=True)
    return model.lm_head(out.last_hidden_state[:, -1:]), out.past_key_values


@torch.no_grad()
def run_prefill(bench: Bench) -> Measurement:
    def step() -> float:
        return timed(lambda: language_model_forward(bench.model, **bench.lm_inputs), bench.device)[1]

    return measure(step, bench)


@torch.no_grad()
def greedy_decode(bench: Bench) -> tuple[torch.Tensor, float]:
    """Untimed prefill, then ``max_new_tokens`` timed greedy steps. Returns the tokens ``(B, N)`` and seconds."""
    model = bench.model
    logits, cache = language_model_forward(model, **bench.lm_inputs)
    embed = model.get_input_embeddings()

    def loop() -> torch.Tensor:
        nonlocal logits
        tokens = []
        for _ in range(bench.settings.max_new_tokens):
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(token)
            logits, _ = language_model_forward(model, embed(token), torch.zeros_like(token, dtype=torch.bool), cache)
        return torch.cat(tokens, dim=1)

    return timed(loop, bench.device)


def run_decode(bench: Bench) -> Measurement:
    counts = []

    def step() -> float:
        tokens, seconds = greedy_decode(bench)
        counts.append(tokens.shape[1])
        return seconds

    batch, steps = bench.settings.batch_size, bench.settings.max_new_tokens
    result = measure(step, bench, new_tokens=steps, batch_size=batch, tokens_per_step=batch * steps)
    result.extra["new_tokens_per_run"] = sorted(set(counts))
    return result


def run_train(bench: Bench, checkpointing: bool = False) -> Measurement:
    model, optimizer = bench.model, bench.optimizer

    def train_step() -> None:
        model(**bench.train_inputs, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    set_checkpointing(model, checkpointing)
    try:
        return measure(lambda: timed(train_step, bench.device)[1], bench, batch_size=bench.settings.train_batch,
                       image_tokens=int((bench.train_inputs["input_ids"] == bench.spec["image_token_id"])[0].sum()))
    finally:
        optimizer.zero_grad(set_to_none=True)
        set_checkpointing(model, False)
        model.eval()


def set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing on or off (``activation_checkpointing_*`` from transformers 5.23, else ``gradient_``)."""
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    elif model.is_activation_checkpointing if hasattr(model, "activation_checkpointing_enable") \
            else model.is_gradient_checkpointing:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
        model.disable_input_require_grads()  # the hook enabling checkpointing registered


TASK_RUNNERS: dict[str, Callable[[Bench], Measurement]] = {
    "prefill": run_prefill,
    "decode": run_decode,
    "train": run_train,
    "train_ckpt": lambda bench: run_train(bench, checkpointing=True),
}


@torch.no_grad()
def ranking_overhead(bench: Bench) -> dict[str, float] | None:
    """Time in the ``RANKING_RANGES`` of one profiled prefill, and its share of that prefill's time.

    On CUDA the range time is the kernel time launched inside the ranges (their CPU time would
    include waiting for earlier kernels); on CPU it is their CPU time. None if no range was recorded.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        _, seconds = timed(lambda: language_model_forward(bench.model, **bench.lm_inputs), bench.device)
    ranges = [e for e in prof.events() if e.name in RANKING_RANGES and e.device_type == torch.autograd.DeviceType.CPU
              and not _inside_range(e)]
    if not ranges:
        return None
    attr = "device_time_total" if bench.device.type == "cuda" else "cpu_time_total"
    range_s = sum(getattr(e, attr) for e in ranges) / 1e6
    return {"ranking_ms": 1e3 * range_s, "profiled_prefill_ms": 1e3 * seconds, "ranking_pct": 100 * range_s / seconds}


def _inside_range(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in RANKING_RANGES:
            return True
        parent = parent.cpu_parent
    return False


def run_guarded(fn: Callable[[Bench], Any], bench: Bench) -> Any:
    """``fn(bench)``, or ``"oom"`` if it runs out of memory (memory is freed for the next task)."""
    try:
        return fn(bench)
    except torch.OutOfMemoryError:
        return "oom"
    finally:
        bench.model.zero_grad(set_to_none=True)
        gc.collect()
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- the run
def setup_bench(settings: SpeedSettings, spec: dict[str, Any]) -> Bench:
    """Build the model once (random weights, PyramidDrop off) and the inputs of the requested tasks."""
    device = torch.device(settings.device)
    with device:  # initialise the weights where they will live
        model = build_random_llava(spec, None, settings.attn, settings.torch_dtype, settings.seed)
    bench = Bench(settings, spec, model.to(device), device)
    gen = torch.Generator().manual_seed(settings.seed)
    if {"prefill", "decode"} & set(settings.tasks):
        bench.lm_inputs = language_model_inputs(bench, gen)
    if {"train", "train_ckpt"} & set(settings.tasks):
        bench.train_inputs = training_inputs(bench, gen)
        model.model.vision_tower.requires_grad_(False)  # frozen, as in LLaVA fine-tuning
        bench.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    return bench


def measure_methods(bench: Bench, schedules: dict[str, PDropConfig | None]) -> dict[str, dict[str, Any]]:
    """Task by task, every method in turn on the same model (so drift hits all methods alike)."""
    metrics: dict[str, dict[str, Any]] = {method: {} for method in schedules}
    for task in bench.settings.tasks:
        for method, schedule in schedules.items():
            bench.model.set_pdrop_config(schedule)
            result = run_guarded(TASK_RUNNERS[task], bench)
            metrics[method][task] = result.to_dict() if isinstance(result, Measurement) else result
            if task == "prefill" and schedule is not None:
                metrics[method]["ranking_overhead"] = run_guarded(ranking_overhead, bench)
    bench.model.set_pdrop_config(None)
    return metrics


def ratios_to(metrics: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, dict[str, float | None]]:
    """Per task, every numeric metric divided by the reference's (None where either is missing)."""
    out = {}
    for task in TASKS:
        mine, ref = metrics.get(task), (reference or {}).get(task)
        if not isinstance(mine, dict):
            continue
        out[task] = {key: (value / ref[key] if isinstance(ref, dict) and isinstance(ref.get(key), float) and ref[key]
                           and isinstance(value, float) else None)
                     for key, value in mine.items() if key in RATIO_KEYS}
    return out


def run_benchmark(settings: SpeedSettings) -> dict[str, Any]:
    """Measure every method and task; the results as a JSON-ready dict (see ``docs/benchmarks.md``)."""
    check_tasks(settings.tasks)
    spec = load_model_preset(settings.preset)
    schedules = method_schedules(settings, spec["text_config"]["num_hidden_layers"])
    bench = setup_bench(settings, spec)
    metrics = measure_methods(bench, schedules)
    train_tokens = next((m[t]["image_tokens"] for m in metrics.values() for t in ("train", "train_ckpt")
                         if isinstance(m.get(t), dict)), None)
    methods: dict[str, Any] = {}
    for method, schedule in schedules.items():
        methods[method] = {
            "schedule": None if schedule is None else schedule.to_dict(),
            **flops_ratios(settings.preset, schedule),
            "train_flops_ratio": flops_ratios(settings.preset, schedule, train_tokens)["flops_ratio"] if train_tokens
            else None,
            "metrics": metrics[method],
            "ratios": ratios_to(metrics[method], metrics.get("none")),
        }
    pdrop = schedules.get("pdrop", settings.schedule)
    schedule = None if pdrop is None else pdrop.to_dict()
    return {"settings": {**asdict(settings), "schedule": schedule, "dtype": str(settings.torch_dtype).removeprefix("torch."),
                         "train_batch_size": settings.train_batch},
            "environment": environment(bench.device), "inputs": describe_inputs(bench, train_tokens), "methods": methods}


def check_tasks(tasks: tuple[str, ...]) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or list(tasks)}: choose from {', '.join(TASKS)}")


def flops_ratios(preset: str, schedule: PDropConfig | None, image_tokens: int | None = None) -> dict[str, float]:
    """Language-model FLOPs of the schedule over no drop: text tokens included, and image tokens only (the paper's)."""
    if schedule is None:
        return {"flops_ratio": 1.0, "flops_ratio_image_only": 1.0}
    report = flops_report(preset, schedule, image_tokens)
    return {"flops_ratio": report.full_ratio, "flops_ratio_image_only": report.paper_ratio}


def describe_inputs(bench: Bench, train_tokens: int | None) -> dict[str, Any]:
    return {
        "image_tokens": bench.spec["image_tokens"], "text_tokens": bench.spec["text_tokens"],
        "train_image_tokens": train_tokens,
        "prefill_decode": "language model only: inputs_embeds (random image features) + image mask; "
                          "vision tower and projector excluded",
        "train": "full model: pixel_values through the frozen vision tower; LM + projector trained; "
                 "SGD (no momentum, no optimizer state, lr 0)",
        "peak_memory": "torch.cuda.max_memory_allocated (weights included)" if bench.device.type == "cuda"
                       else "not measured on CPU",
    }


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "device_type": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None, "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------- output
TABLE_COLUMNS = [("prefill", "median_ms", "prefill ms"), ("decode", "median_tokens_per_s", "decode tok/s"),
                 ("train", "median_ms", "train ms"), ("train_ckpt", "median_ms", "train+ckpt ms")]


def _cell(method: dict[str, Any], task: str, key: str) -> str:
    value = method["metrics"].get(task)
    if value is None:
        return "-"
    if not isinstance(value, dict):
        return str(value)
    ratio = method["ratios"].get(task, {}).get(key)
    number = value.get(key)
    if number is None:
        return "n/a"
    return f"{number:.4g}" + (f" ({ratio:.3f})" if ratio is not None else "")


def format_table(results: dict[str, Any]) -> str:
    """Method x metric (median, ratio to ``none`` in brackets), then peak memory the same way."""
    s, env, inputs = results["settings"], results["environment"], results["inputs"]
    lines = [f"preset {s['preset']} on {env['device_type']} ({env['device']}), {s['dtype']}, {s['attn']}; "
             f"prefill/decode batch {s['batch_size']}, train batch {s['train_batch_size']}; "
             f"median of {s['repeats']} after {s['warmup']} warmup; (ratio to none)",
             f"prefill/decode: {inputs['prefill_decode']}", f"train: {inputs['train']}"]
    header = f"{'method':<8}" + "".join(f"{title:>22}" for _, _, title in TABLE_COLUMNS) + f"{'FLOPs/none':>12}{'rank %':>9}"
    lines += ["", header]
    for name, method in results["methods"].items():
        overhead = method["metrics"].get("ranking_overhead")
        rank = f"{overhead['ranking_pct']:.2f}" if isinstance(overhead, dict) else str(overhead) if overhead else "-"
        lines.append(f"{name:<8}" + "".join(f"{_cell(method, t, k):>22}" for t, k, _ in TABLE_COLUMNS)
                     + f"{method['flops_ratio']:>12.3f}{rank:>9}")
    lines += ["", f"peak memory, MiB ({inputs['peak_memory']})",
              f"{'method':<8}" + "".join(f"{task:>22}" for task, _, _ in TABLE_COLUMNS)]
    for name, method in results["methods"].items():
        lines.append(f"{name:<8}" + "".join(f"{_cell(method, t, 'peak_mem_mib'):>22}" for t, _, _ in TABLE_COLUMNS))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- command line
def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_settings(argv: list[str] | None) -> tuple[SpeedSettings, argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="python -m llava.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="a configs/models/ preset name or JSON path")
    parser.add_argument("--methods", default="none,pdrop", help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {','.join(TASKS)}")
    parser.add_argument("--device", default=SpeedSettings.device)
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"])
    parser.add_argument("--batch_size", type=int, default=1, help="prefill / decode batch")
    parser.add_argument("--train_batch_size", type=int, help="training-step batch (default: --batch_size)")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="decode steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fastv_k", type=int, default=2, help="FastV: drop after this many layers")
    parser.add_argument("--fastv_ratio", type=float, default=0.5, help="FastV: fraction of image tokens dropped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    add_schedule_args(parser, no_pdrop=False)
    args = parser.parse_args(argv)
    fields_ = {f.name for f in fields(SpeedSettings)} - {"methods", "tasks", "schedule"}
    settings = SpeedSettings(methods=_names(args.methods), tasks=_names(args.tasks),
                             **{k: v for k, v in vars(args).items() if k in fields_})
    return settings, args, parser


def _check_settings(settings: SpeedSettings, args: argparse.Namespace) -> SpeedSettings:
    """Errors a user can fix, raised as ``ValueError`` before anything is built."""
    if min(settings.batch_size, settings.train_batch, settings.max_new_tokens, settings.repeats) < 1 or settings.warmup < 0:
        raise ValueError("--batch_size, --train_batch_size, --max_new_tokens and --repeats must be >= 1, --warmup >= 0")
    if torch.device(settings.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {settings.device}: CUDA is not available on this machine")
    spec = load_model_preset(settings.preset)
    num_layers = spec["text_config"]["num_hidden_layers"]
    # the flags' schedule if they give one, else the default; --drop_method/--drop_seed switch its ranking
    settings.schedule = schedule_from_args(args, ModelShape.from_preset(spec), default_schedule(settings.preset, num_layers))
    method_schedules(settings, num_layers)  # unknown methods, boundaries the model cannot have
    check_tasks(settings.tasks)
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from the command line; print the table, write ``--json``; return the results."""
    settings, args, parser = parse_settings(argv)
    try:
        _check_settings(settings, args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    results = run_benchmark(settings)
    results["command"] = shlex.join(["python", "-m", "llava.bench", *(sys.argv[1:] if argv is None else argv)])
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"results written to {args.json}")
    return results
