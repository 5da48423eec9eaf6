"""Speed and memory of PyramidDrop against no drop, FastV and the method's physical limit, in one run.

One run builds a model of the preset's shape once and measures, for each method in ``--methods``:

* ``none``: PyramidDrop off (the stock forward); ``pdrop``: the schedule; ``fastv``: FastV(K, R);
* ``ideal``: the schedule's token counts by free slicing (:mod:`llava.bench.ideal`): no ranking, no
  gather, no mask work. ``pdrop / ideal`` is the share of the possible gain the method's own work costs.
* ``c2f`` (LLaVA-NeXT presets): coarse-to-fine on a synthetic image of ``--c2f_image_size``
  (:func:`llava.bench.coarse_to_fine.run_coarse_to_fine`): the walk (reading, vision tower, focus
  passes), the prefill and ``--max_new_tokens`` of decoding, with tiles and tokens used, its FLOPs
  and peak memory; a pipeline of its own, reported beside the tasks (``coarse_to_fine`` in the JSON).

The tasks:

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

The arms are interleaved: after the warmup runs of every method, each repeat runs every method once
(the order rotating), so drift and other load hit all of them alike; times are reported as median,
min and max, ratios as medians of the per-repeat ratios with their range. Peak memory is measured
on CUDA (``torch.cuda.max_memory_allocated``). Also recorded: the FLOPs ratio of the schedule
(:mod:`llava.bench.flops`), the ranking overhead (one profiled prefill: the time in the
``pdrop/rank`` and ``pdrop/compact`` ranges), and what each prefill and decode step asks of the
device (:mod:`llava.bench.dispatch`: operator calls, host reads, allocations; per boundary for the
schedule). On a CPU, the run says when its figures are unreliable (other load, more threads than
cores, a wide spread). A task that runs out of memory is recorded as ``"oom"`` and the run goes on.

Launch::

    python -m llava.bench --preset tiny-llava --device cpu                          # CI smoke
    python -m llava.bench --preset cpu-mid --device cpu --methods none,pdrop,ideal   # a minute on 2 cores
    python -m llava.bench --preset llava-next-7b --dtype bfloat16 --attn sdpa --batch_size 2 --json out.json
    python -m llava.bench --preset llava-1.5-7b --batch_size 8 --methods none,pdrop,fastv,ideal
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import DynamicCache, LlavaNextForConditionalGeneration
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from ..cli import check_json_path, emit
from ..cli import ArgumentParser
from ..model.builder import build_random_llava
from ..paths import load_model_preset, load_schedule
from ..pdrop.args import add_schedule_args, schedule_from_args
from ..pdrop.decoder import pdrop_decoder_forward
from ..pdrop.flops import ModelShape
from ..pdrop.ranges import RangeTimer
from ..pdrop.schedule import PDropConfig
from .dispatch import count_dispatch
from .flops import flops_report
from .ideal import ideal_decoder_forward, ideal_training_loss
from .report import describe_inputs, environment, format_table, reliability, warn_unreliable

TASKS = ("prefill", "decode", "train", "train_ckpt")
METHODS = ("none", "pdrop", "pdrop_compiled", "fastv", "ideal", "c2f")
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
    methods: tuple[str, ...] = ("none", "pdrop", "ideal")
    """Subset of ``METHODS``: ``none`` (PyramidDrop off), ``pdrop`` (``schedule``), ``pdrop_compiled`` (``schedule``,
    ranked by the compiled ranking), ``fastv``, ``ideal`` (``schedule``'s token counts by free slicing)."""
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
    """Timed runs of each measurement, interleaved across methods (median, min and max reported)."""
    fastv_k: int = 2
    """FastV: drop after this many layers."""
    fastv_ratio: float = 0.5
    """FastV: fraction of image tokens dropped (kept: ``1 - fastv_ratio``)."""
    c2f_image_size: str = "4000x3000"
    """``c2f``: WIDTHxHEIGHT of the synthetic image walked coarse to fine."""
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


@dataclass(frozen=True)
class Arm:
    """One method: ``schedule`` is what the model runs (``pdrop``, ``fastv``), or the token counts the
    ``ideal`` arm slices to; ``none`` has none."""

    name: str
    schedule: PDropConfig | None

    @property
    def model_schedule(self) -> PDropConfig | None:
        return None if self.name == "ideal" else self.schedule

    @property
    def compiled(self) -> bool:
        """``pdrop_compiled``: the ``pdrop`` schedule scored by the compiled ranking."""
        return self.name == "pdrop_compiled"


@dataclass
class Measurement:
    """Timed repeats of one task for one method."""

    times_s: list[float]
    peak_mem_mib: float | None  # CUDA: max allocated during the repeats (weights included); CPU: None
    base_mem_mib: float | None  # CUDA: allocated before the repeats (weights and inputs)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        median, best, worst = statistics.median(self.times_s), min(self.times_s), max(self.times_s)
        deviation = statistics.median(abs(t - median) for t in self.times_s)  # robust to one slow repeat
        out = {"median_ms": 1e3 * median, "min_ms": 1e3 * best, "max_ms": 1e3 * worst,
               "spread_pct": 100 * (worst - best) / median, "mad_pct": 100 * deviation / median,
               "repeats": len(self.times_s),
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

    def use(self, arm: Arm) -> None:
        self.model.set_pdrop_config(arm.model_schedule)
        self.model.pdrop_compile_ranking = arm.compiled


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


def method_arms(settings: SpeedSettings, num_layers: int) -> list[Arm]:
    """Validated arms of the methods to run (``none``: PyramidDrop off; ``ideal``: the schedule's counts)."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown or not settings.methods:
        raise ValueError(f"unknown method(s) {unknown or list(settings.methods)}: choose from {', '.join(METHODS)}")
    schedule = settings.schedule or default_schedule(settings.preset, num_layers)
    arms = []
    for method in (m for m in settings.methods if m != "c2f"):
        arm_schedule = {"none": None, "fastv": PDropConfig.fastv(settings.fastv_k, settings.fastv_ratio)}.get(method, schedule)
        if arm_schedule is not None:
            arm_schedule.validate_for(num_layers)
        arms.append(Arm(method, arm_schedule))
    return arms


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


# ---------------------------------------------------------------------------------------------- tasks
def language_model_forward(bench: Bench, arm: Arm, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, cache=None):
    """One language-model forward of ``arm`` with the KV cache (a prefill passes none).

    Returns the last position's logits ``(B, 1, V)`` and the cache.
    """
    model = bench.model
    decoder = model.model.language_model
    if arm.name == "ideal":
        cache = DynamicCache(config=decoder.config) if cache is None else cache
        hidden = ideal_decoder_forward(decoder, arm.schedule, inputs_embeds, int(bench.spec["image_tokens"]), cache)
        return model.lm_head(hidden[:, -1:]), cache
    if arm.schedule is None:
        out = decoder(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True)
    else:
        out = pdrop_decoder_forward(decoder, arm.schedule, inputs_embeds, image_mask, past_key_values=cache,
                                    use_cache=True, trace=False, compile_ranking=arm.compiled)
    return model.lm_head(out.last_hidden_state[:, -1:]), out.past_key_values


@torch.no_grad()
def prefill_step(bench: Bench, arm: Arm) -> float:
    return timed(lambda: language_model_forward(bench, arm, **bench.lm_inputs), bench.device)[1]


@torch.no_grad()
def greedy_decode(bench: Bench, arm: Arm) -> tuple[torch.Tensor, float]:
    """Untimed prefill, then ``max_new_tokens`` timed greedy steps. Returns the tokens ``(B, N)`` and seconds."""
    logits, cache = language_model_forward(bench, arm, **bench.lm_inputs)
    embed = bench.model.get_input_embeddings()

    def loop() -> torch.Tensor:
        nonlocal logits
        tokens = []
        for _ in range(bench.settings.max_new_tokens):
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(token)
            logits, _ = language_model_forward(bench, arm, embed(token), torch.zeros_like(token, dtype=torch.bool), cache)
        return torch.cat(tokens, dim=1)

    return timed(loop, bench.device)


def decode_step(bench: Bench, arm: Arm) -> float:
    return greedy_decode(bench, arm)[1]


def train_step(bench: Bench, arm: Arm) -> float:
    model, optimizer = bench.model, bench.optimizer

    def step() -> None:
        if arm.name == "ideal":
            ideal_training_loss(model, arm.schedule, bench.train_inputs).backward()
        else:
            model(**bench.train_inputs, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, bench.device)[1]


TASK_STEPS: dict[str, Callable[[Bench, Arm], float]] = {
    "prefill": prefill_step, "decode": decode_step, "train": train_step, "train_ckpt": train_step,
}


@contextlib.contextmanager
def task_mode(bench: Bench, task: str):
    """Training tasks: train mode (checkpointing for ``train_ckpt``); always back to eval afterwards."""
    training = task.startswith("train")
    if training:
        bench.model.train()
        set_checkpointing(bench.model, task == "train_ckpt")
    try:
        yield
    finally:
        if training:
            bench.optimizer.zero_grad(set_to_none=True)
            set_checkpointing(bench.model, False)
            bench.model.eval()


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


def task_extra(bench: Bench, task: str) -> dict[str, Any]:
    settings = bench.settings
    if task == "decode":
        steps = settings.max_new_tokens
        return {"new_tokens": steps, "new_tokens_per_run": [steps], "batch_size": settings.batch_size,
                "tokens_per_step": settings.batch_size * steps}
    if task.startswith("train"):
        ids = bench.train_inputs["input_ids"]
        return {"batch_size": settings.train_batch,
                "image_tokens": int((ids == bench.spec["image_token_id"])[0].sum())}
    return {}


# ---------------------------------------------------------------------------------------------- interleaved runs
def run_guarded(fn: Callable[[], Any], bench: Bench) -> Any:
    """``fn()``, or ``"oom"`` if it runs out of memory (memory is freed for the next run)."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        bench.model.zero_grad(set_to_none=True)
        gc.collect()
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
        return "oom"


def measure_task(bench: Bench, task: str, arms: list[Arm]) -> dict[str, Measurement | str]:
    """Warmup runs of every arm, then ``repeats`` rounds that run every arm once (the order rotating)."""
    step = TASK_STEPS[task]
    times: dict[str, list[float]] = {arm.name: [] for arm in arms}
    peaks: dict[str, float | None] = {arm.name: None for arm in arms}
    failed: set[str] = set()

    def run(arm: Arm, record: bool) -> None:
        bench.use(arm)
        cuda = bench.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(bench.device)
            torch.cuda.reset_peak_memory_stats(bench.device)
        seconds = run_guarded(lambda: step(bench, arm), bench)
        if seconds == "oom":
            failed.add(arm.name)
        elif record:
            times[arm.name].append(seconds)
            if cuda:
                peak = torch.cuda.max_memory_allocated(bench.device) / MIB
                peaks[arm.name] = max(peak, peaks[arm.name] or 0.0)

    with task_mode(bench, task):
        base = torch.cuda.memory_allocated(bench.device) / MIB if bench.device.type == "cuda" else None
        for _ in range(bench.settings.warmup):
            for arm in arms:
                if arm.name not in failed:
                    run(arm, record=False)
        for r in range(bench.settings.repeats):
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
                if arm.name not in failed:
                    run(arm, record=True)
    bench.use(Arm("none", None))
    extra = task_extra(bench, task)
    return {arm.name: "oom" if arm.name in failed else Measurement(times[arm.name], peaks[arm.name], base, dict(extra))
            for arm in arms}


def paired_ratio(times: list[float], reference: list[float]) -> dict[str, float]:
    """Median, min and max of the per-repeat time ratios (the arms ran side by side in each repeat)."""
    ratios = [t / r for t, r in zip(times, reference)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def ratios_to(metrics: dict[str, Any], reference: dict[str, Any] | None,
              times: dict[str, list[float]] | None = None, reference_times: dict[str, list[float]] | None = None):
    """Per task, every numeric metric divided by the reference's (None where either is missing), and the
    paired per-repeat time ratio."""
    out = {}
    for task in TASKS:
        mine, ref = metrics.get(task), (reference or {}).get(task)
        if not isinstance(mine, dict):
            continue
        out[task] = {key: (value / ref[key] if isinstance(ref, dict) and isinstance(ref.get(key), float) and ref[key]
                           and isinstance(value, float) else None)
                     for key, value in mine.items() if key in RATIO_KEYS}
        if times and reference_times and task in times and task in reference_times:
            out[task]["paired_time"] = paired_ratio(times[task], reference_times[task])
    return out


# ---------------------------------------------------------------------------------------------- what the device is asked
@torch.no_grad()
def dispatch_counts(bench: Bench, arm: Arm) -> dict[str, dict[str, int]]:
    """Operator calls, host reads and allocations of one prefill and of one decode step of ``arm``."""
    bench.use(arm)
    inputs = bench.lm_inputs
    prefill = count_dispatch(lambda: language_model_forward(bench, arm, **inputs))
    logits, cache = language_model_forward(bench, arm, **inputs)
    token = logits[:, -1].argmax(dim=-1, keepdim=True)
    embeds, no_image = bench.model.get_input_embeddings()(token), torch.zeros_like(token, dtype=torch.bool)
    decode = count_dispatch(lambda: language_model_forward(bench, arm, embeds, no_image, cache))
    bench.use(Arm("none", None))
    return {"prefill": prefill, "decode_step": decode}


def per_boundary(counts: dict[str, dict], schedule: PDropConfig) -> dict[str, float]:
    """What the schedule's own work adds per boundary: (pdrop - ideal) prefill counts / boundaries."""
    pdrop, ideal = counts["pdrop"]["prefill"], counts["ideal"]["prefill"]
    return {key: (pdrop[key] - ideal[key]) / len(schedule.layer_list) for key in pdrop}


@torch.no_grad()
def ranking_overhead(bench: Bench, arm: Arm | None = None, rounds: int = 5) -> dict[str, Any] | None:
    """Time in the ``RANKING_RANGES`` of a prefill, and its share of that prefill (median of ``rounds``).

    On CUDA the range time is the kernel time launched inside the ranges, read with ``torch.profiler``
    (their host time would include waiting for earlier kernels). On CPU it is their wall-clock time,
    read by :class:`~llava.pdrop.ranges.RangeTimer` in an unprofiled prefill; the profiler's figure
    is reported beside it (``profiler_ranking_pct``): its own cost per operator call (a few
    microseconds, about as much as a small call itself) weighs each range by its number of calls.
    None if no range was entered.
    """
    arm = arm or Arm("model", bench.model.pdrop_config)
    if bench.device.type == "cuda":
        result = _median_share([_profiled_share(bench, arm) for _ in range(rounds)])
        return result and {**result, "measured_by": "kernel time in the ranges (torch.profiler)"}
    result = _median_share([_timed_share(bench, arm) for _ in range(rounds)])
    if result is None:
        return None
    profiled = _median_share([_profiled_share(bench, arm) for _ in range(3)])
    return {**result, "measured_by": "wall-clock time in the ranges (RangeTimer, no profiler)",
            "profiler_ranking_pct": profiled["ranking_pct"]}


def _timed_share(bench: Bench, arm: Arm) -> tuple[float, float] | None:
    """``(range seconds, prefill seconds)`` of one prefill timed on the host, None if no range was entered."""
    with RangeTimer() as timer:
        _, seconds = timed(lambda: language_model_forward(bench, arm, **bench.lm_inputs), bench.device)
    ranges = [timer.seconds[name] for name in RANKING_RANGES if name in timer.seconds]
    return (sum(ranges), seconds) if ranges else None


def _profiled_share(bench: Bench, arm: Arm) -> tuple[float, float] | None:
    """``(range seconds, prefill seconds)`` of one profiled prefill (CUDA: kernel time; CPU: the ranges' CPU time)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        _, seconds = timed(lambda: language_model_forward(bench, arm, **bench.lm_inputs), bench.device)
    ranges = [e for e in prof.events() if e.name in RANKING_RANGES
              and e.device_type == torch.autograd.DeviceType.CPU and not _inside_range(e)]
    if not ranges:
        return None
    attr = "device_time_total" if bench.device.type == "cuda" else "cpu_time_total"
    return sum(getattr(e, attr) for e in ranges) / 1e6, seconds


def _median_share(rounds: list[tuple[float, float] | None]) -> dict[str, Any] | None:
    """The round with the median share: ``ranking_ms``, ``prefill_ms``, ``ranking_pct`` and the range of the shares."""
    if not rounds or any(r is None for r in rounds):
        return None
    shares = sorted((100 * range_s / seconds, range_s, seconds) for range_s, seconds in rounds)
    pct, range_s, seconds = shares[len(shares) // 2]
    return {"ranking_ms": 1e3 * range_s, "prefill_ms": 1e3 * seconds, "ranking_pct": pct,
            "ranking_pct_range": [shares[0][0], shares[-1][0]]}


def _inside_range(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in RANKING_RANGES:
            return True
        parent = parent.cpu_parent
    return False


# ---------------------------------------------------------------------------------------------- the run
def setup_bench(settings: SpeedSettings, spec: dict[str, Any]) -> Bench:
    """Build the model once (random weights, PyramidDrop off) and the inputs of the requested tasks."""
    device = torch.device(settings.device)
    with device:  # initialise the weights where they will live
        model = build_random_llava(spec, None, settings.attn, settings.torch_dtype, settings.seed)
    model.pdrop_record_trace = False  # the trace is for inspection; the benchmark measures the method
    bench = Bench(settings, spec, model.to(device), device)
    gen = torch.Generator().manual_seed(settings.seed)
    bench.lm_inputs = language_model_inputs(bench, gen)
    if {"train", "train_ckpt"} & set(settings.tasks):
        bench.train_inputs = training_inputs(bench, gen)
        model.model.vision_tower.requires_grad_(False)  # frozen, as in LLaVA fine-tuning
        bench.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    return bench


def measure_methods(bench: Bench, arms: list[Arm]) -> tuple[dict, dict, dict]:
    """Task by task, all arms interleaved on the same model.

    Returns the metrics per arm and task, the raw times per arm and task, and the machine's state
    (load, threads) before and after each task.
    """
    metrics: dict[str, dict[str, Any]] = {arm.name: {} for arm in arms}
    times: dict[str, dict[str, list]] = {arm.name: {} for arm in arms}
    machine: dict[str, dict] = {}
    for task in bench.settings.tasks:
        before = reliability(bench.device)
        for name, result in measure_task(bench, task, arms).items():
            metrics[name][task] = result.to_dict() if isinstance(result, Measurement) else result
            if isinstance(result, Measurement):
                times[name][task] = result.times_s
        machine[task] = {"before": before, "after": reliability(bench.device)}
    for arm in arms:
        if arm.model_schedule is not None and "prefill" in bench.settings.tasks:
            bench.use(arm)
            metrics[arm.name]["ranking_overhead"] = run_guarded(lambda: ranking_overhead(bench, arm), bench)
            bench.use(Arm("none", None))
    return metrics, times, machine


def run_benchmark(settings: SpeedSettings) -> dict[str, Any]:
    """Measure every method and task; the results as a JSON-ready dict (see ``docs/benchmarks.md``)."""
    check_tasks(settings.tasks)
    spec = load_model_preset(settings.preset)
    arms = method_arms(settings, spec["text_config"]["num_hidden_layers"])
    bench = setup_bench(settings, spec)
    metrics, times, machine = measure_methods(bench, arms)
    pdrop = next((arm for arm in arms if arm.name in ("pdrop", "ideal")), None)
    schedule = pdrop.schedule if pdrop else settings.schedule or default_schedule(settings.preset, len(
        bench.model.model.language_model.layers))
    # a compiled arm is not counted: under the counter's dispatch mode torch.compile runs the eager code
    counts = {arm.name: None if arm.compiled else dispatch_counts(bench, arm) for arm in
              [*arms, *[Arm(name, schedule) for name in ("pdrop", "ideal") if name not in settings.methods]]}
    train_tokens = next((m[t]["image_tokens"] for m in metrics.values() for t in ("train", "train_ckpt")
                         if isinstance(m.get(t), dict)), None)
    methods = {arm.name: method_entry(settings, arm, metrics, times, counts[arm.name], train_tokens) for arm in arms}
    c2f = measure_coarse_to_fine(bench) if "c2f" in settings.methods else None
    results = {"settings": {**asdict(settings), "schedule": schedule.to_dict(),
                            "dtype": str(settings.torch_dtype).removeprefix("torch."),
                            "train_batch_size": settings.train_batch},
               "environment": environment(bench.device), "inputs": describe_inputs(bench, train_tokens),
               "methods": methods, "dispatch_per_boundary": per_boundary(counts, schedule), "machine": machine,
               "coarse_to_fine": c2f}
    results["reliability_warnings"] = warn_unreliable(results)
    return results


def measure_coarse_to_fine(bench: Bench) -> dict[str, Any]:
    """``repeats`` timed coarse-to-fine runs (after ``warmup``) of one synthetic image: medians and counts."""
    from .coarse_to_fine import run_coarse_to_fine, synthetic_inputs
    from ..pyramid import CoarseToFineConfig
    from ..pyramid.args import load_named_config

    settings = bench.settings
    width, height = (int(side) for side in settings.c2f_image_size.lower().split("x"))
    config = load_named_config("tiny" if Path(settings.preset).stem.startswith("tiny") else "lrs-default")
    inputs = synthetic_inputs(bench.model, width, height, batch=settings.batch_size, text_tokens=bench.spec["text_tokens"])
    bench.use(Arm("none", None))

    def once():
        return run_coarse_to_fine(bench.model, *inputs, config, max_new_tokens=settings.max_new_tokens,
                                  timer=lambda fn: timed(fn, bench.device))

    for _ in range(settings.warmup):
        once()
    runs = [once() for _ in range(settings.repeats)]
    median = {key: 1e3 * statistics.median(getattr(run, key) for run in runs)
              for key in ("walk_s", "vision_s", "prefill_s", "decode_s", "total_s")}
    last = runs[-1]
    return {"image_size": [width, height], "config": CoarseToFineConfig.to_dict(config),
            "median_ms": {key.replace("_s", ""): value for key, value in median.items()},
            "num_vision_images": last.num_vision_images, "num_image_tokens": last.num_image_tokens,
            "tiles_per_level": last.tiles_per_level, "flops": last.flops,
            "peak_mem_mib": max((run.peak_mem_mib or 0.0) for run in runs) or None}


def method_entry(settings: SpeedSettings, arm: Arm, metrics: dict, times: dict, counts: dict,
                 train_tokens: int | None) -> dict[str, Any]:
    """One method's JSON: its schedule, FLOPs ratios, metrics, dispatch counts, ratios to none and ideal."""
    flops_schedule = arm.schedule
    return {
        "schedule": None if arm.schedule is None else arm.schedule.to_dict(),
        **flops_ratios(settings.preset, flops_schedule),
        "train_flops_ratio": flops_ratios(settings.preset, flops_schedule, train_tokens)["flops_ratio"]
        if train_tokens else None,
        "metrics": metrics[arm.name],
        "dispatch": counts,
        "ratios": ratios_to(metrics[arm.name], metrics.get("none"), times[arm.name], times.get("none")),
        "ratios_to_ideal": ratios_to(metrics[arm.name], metrics.get("ideal"), times[arm.name], times.get("ideal"))
        if "ideal" in metrics else None,
    }


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


# ---------------------------------------------------------------------------------------------- command line
def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_settings(argv: list[str] | None) -> tuple[SpeedSettings, argparse.Namespace, argparse.ArgumentParser]:
    parser = ArgumentParser("llava.bench", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "models").glob("*.json"))
    parser.add_argument("--preset", required=True, help=f"a configs/models/ preset name ({', '.join(presets)}) or JSON path")
    parser.add_argument("--methods", default="none,pdrop,ideal", help=f"comma-separated, from {','.join(METHODS)} "
                        "(default: none,pdrop,ideal)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {','.join(TASKS)} (default: all)")
    parser.add_argument("--device", default=SpeedSettings.device, help="cuda, cuda:N or cpu (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="auto: bfloat16 on CUDA, float32 on CPU (default: %(default)s)")
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"],
                        help="attention kernel (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=1, help="prefill / decode batch (default: %(default)s)")
    parser.add_argument("--train_batch_size", type=int, help="training-step batch (default: --batch_size)")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="decode steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per method (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, methods interleaved (default: %(default)s)")
    parser.add_argument("--fastv_k", type=int, default=2, help="FastV: drop after this many layers (default: %(default)s)")
    parser.add_argument("--fastv_ratio", type=float, default=0.5,
                        help="FastV: fraction of image tokens dropped (default: %(default)s)")
    parser.add_argument("--c2f_image_size", default="4000x3000",
                        help="c2f: WIDTHxHEIGHT of the synthetic image (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
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
    method_arms(settings, num_layers)  # unknown methods, boundaries the model cannot have
    if "c2f" in settings.methods and spec.get("architecture") != "llava_next":
        raise ValueError(f"--methods c2f needs a LLaVA-NeXT preset (coarse-to-fine walks any-resolution tiles); "
                         f"{settings.preset} is {spec.get('architecture', 'llava')}")
    check_tasks(settings.tasks)
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from the command line; print the table, write ``--json PATH`` (``-``: JSON on stdout instead,
    as every command: llava/cli.py); return the results. A ``--json`` folder that does not exist stops it first."""
    settings, args, parser = parse_settings(argv)
    try:
        check_json_path(args.json)
        _check_settings(settings, args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    results = run_benchmark(settings)
    results["command"] = shlex.join(["python", "-m", "llava.bench", *(sys.argv[1:] if argv is None else argv)])
    emit(format_table(results), results, args.json)
    return results
