"""What a benchmark run prints and records next to its numbers: the machine, the inputs, the tables,
and the reasons its figures may not be trusted (other load, thread oversubscription, wide spread)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch
import transformers

MAD_WARNING_PCT = 10.0  # median absolute deviation of the repeats, % of the median
OTHER_LOAD_WARNING = 0.5  # runnable threads beyond this run's own, averaged over a minute
TABLE_COLUMNS = [("prefill", "median_ms", "prefill ms"), ("decode", "median_tokens_per_s", "decode tok/s"),
                 ("train", "median_ms", "train ms"), ("train_ckpt", "median_ms", "train+ckpt ms")]


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "device_type": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None, "python": platform.python_version(),
        "cpu_cores": _cores(), "torch_threads": torch.get_num_threads(),
    }


def describe_inputs(bench, train_tokens: int | None) -> dict[str, Any]:
    return {
        "image_tokens": bench.spec["image_tokens"], "text_tokens": bench.spec["text_tokens"],
        "train_image_tokens": train_tokens,
        "prefill_decode": "language model only: inputs_embeds (random image features) + image mask; "
                          "vision tower and projector excluded",
        "train": "full model: pixel_values through the frozen vision tower; LM + projector trained; "
                 "SGD (no momentum, no optimizer state, lr 0)",
        "ideal": "the schedule's token counts per stage by free slicing (views of the hidden states, rotary "
                 "embedding and mask): no ranking, gather or mask work",
        "peak_memory": "torch.cuda.max_memory_allocated (weights included)" if bench.device.type == "cuda"
                       else "not measured on CPU",
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def reliability(device: torch.device) -> dict[str, Any]:
    """The machine's state now: 1-minute load average, usable cores, torch's threads (CPU runs)."""
    if device.type == "cuda":
        return {"device": "cuda"}
    return {"load_1min": os.getloadavg()[0], "cores": _cores(), "threads": torch.get_num_threads()}


def warn_unreliable(results: dict[str, Any]) -> list[str]:
    """Reasons the run's timings may mislead, in words (empty when none was seen)."""
    warnings = []
    states = [state for task in results["machine"].values() for state in task.values() if "load_1min" in state]
    if states:
        cores, threads = states[0]["cores"], states[0]["threads"]
        if threads > cores:
            warnings.append(f"torch runs {threads} threads on {cores} cores (oversubscribed): set OMP_NUM_THREADS "
                            f"to {cores} or fewer")
        other = max(state["load_1min"] for state in states) - min(threads, cores)
        if other > OTHER_LOAD_WARNING:
            warnings.append(f"other work shared the CPU (1-minute load up to {other + min(threads, cores):.1f} on "
                            f"{cores} cores while this run used {min(threads, cores)}): timings are unreliable, "
                            "ratios less so (the methods were interleaved)")
    for name, method in results["methods"].items():
        for task, metric in method["metrics"].items():
            if isinstance(metric, dict) and metric.get("mad_pct", 0) > MAD_WARNING_PCT:
                warnings.append(f"{name} {task}: the repeats deviate by {metric['mad_pct']:.0f}% of the median "
                                f"(min .. max {metric['spread_pct']:.0f}%): raise --repeats, or run on a quiet machine")
    return warnings


def _ratio(method: dict[str, Any], key: str, task: str, tokens: bool) -> str:
    ratios = (method.get(key) or {}).get(task) or {}
    paired = ratios.get("paired_time")
    if paired is None:
        return "-"
    value = 1 / paired["median"] if tokens else paired["median"]
    return f"{value:.3f}"


def _cell(method: dict[str, Any], task: str, key: str) -> str:
    value = method["metrics"].get(task)
    if value is None:
        return "-"
    if not isinstance(value, dict):
        return str(value)
    tokens = key.endswith("tokens_per_s")
    return f"{value[key]:.4g} [{_ratio(method, 'ratios', task, tokens)} | {_ratio(method, 'ratios_to_ideal', task, tokens)}]"


def format_table(results: dict[str, Any]) -> str:
    """Method x task (median, then [vs none | vs ideal] as medians of per-repeat ratios), spreads, counts, warnings."""
    s, env, inputs = results["settings"], results["environment"], results["inputs"]
    lines = [f"preset {s['preset']} on {env['device_type']} ({env['device']}, {env['torch_threads']} threads), "
             f"{s['dtype']}, {s['attn']}; prefill/decode batch {s['batch_size']}, train batch {s['train_batch_size']}; "
             f"median of {s['repeats']} interleaved rounds after {s['warmup']} warmup",
             f"schedule {s['schedule']}", f"prefill/decode: {inputs['prefill_decode']}", f"train: {inputs['train']}",
             f"ideal: {inputs['ideal']}", "[x | y]: the method over none | over ideal (tok/s: the inverse)", ""]
    w = max([8, *(len(name) + 1 for name in results["methods"])])  # the method column
    lines.append(f"{'method':<{w}}" + "".join(f"{title:>30}" for _, _, title in TABLE_COLUMNS)
                 + f"{'FLOPs/none':>12}{'rank %':>9}")
    for name, method in results["methods"].items():
        overhead = method["metrics"].get("ranking_overhead")
        rank = f"{overhead['ranking_pct']:.1f}" if isinstance(overhead, dict) else "-"
        lines.append(f"{name:<{w}}" + "".join(f"{_cell(method, t, k):>30}" for t, k, _ in TABLE_COLUMNS)
                     + f"{method['flops_ratio']:>12.3f}{rank:>9}")
    lines += ["", "spread: min .. max ms of the repeats", f"{'method':<{w}}" + "".join(f"{t:>22}" for t, _, _ in TABLE_COLUMNS)]
    for name, method in results["methods"].items():
        cells = [f"{m['min_ms']:.4g} .. {m['max_ms']:.4g}" if isinstance(m := method["metrics"].get(t), dict) else "-"
                 for t, _, _ in TABLE_COLUMNS]
        lines.append(f"{name:<{w}}" + "".join(f"{c:>22}" for c in cells))
    lines += ["", f"peak memory, MiB ({inputs['peak_memory']})", f"{'method':<{w}}" + "".join(f"{t:>22}" for t, _, _ in TABLE_COLUMNS)]
    for name, method in results["methods"].items():
        cells = [f"{m['peak_mem_mib']:.0f}" if isinstance(m := method["metrics"].get(t), dict) and m.get("peak_mem_mib")
                 else ("n/a" if isinstance(m, dict) else str(m or "-")) for t, _, _ in TABLE_COLUMNS]
        lines.append(f"{name:<{w}}" + "".join(f"{c:>22}" for c in cells))
    lines += ["", "asked of the device (operator calls / host reads / allocations)",
              f"{'method':<{w}}{'prefill':>24}{'decode step':>24}"]
    for name, method in results["methods"].items():
        counts = method["dispatch"]  # None for a compiled arm: a dispatch counter runs it eager
        lines.append(f"{name:<{w}}" + "".join(
            f"{'{ops} / {syncs} / {allocations}'.format(**counts[k]) if counts else 'not counted':>24}"
            for k in ("prefill", "decode_step")))
    c2f = results.get("coarse_to_fine")
    if c2f:
        times = ", ".join(f"{key} {value:.4g}" for key, value in c2f["median_ms"].items())
        lines += ["", f"c2f on a {c2f['image_size'][0]}x{c2f['image_size'][1]} synthetic image (median ms): {times}",
                  f"    vision-tower images {c2f['num_vision_images']}, image tokens {c2f['num_image_tokens']}, "
                  f"tiles per level {c2f['tiles_per_level']}"]
    per = results["dispatch_per_boundary"]
    lines.append(f"per boundary (pdrop - ideal prefill): {per['ops']:.1f} ops, {per['syncs']:.1f} host reads, "
                 f"{per['allocations']:.1f} allocations")
    lines += [f"WARNING: {w}" for w in results.get("reliability_warnings", [])]
    return "\n".join(lines)
