"""One summary of several benchmark runs: their headline ratios and the targets they meet or miss.

Reads the JSON that ``python -m llava.bench --json`` writes, and a targets file from
``configs/bench/`` (``targets-gpu.json``, ``targets-cpu.json``: the one place the numbers live). A
target names a preset, a task, a metric and a bound:

* ``time_vs_none`` / ``time_vs_ideal``: PyramidDrop's time over no drop / over the ideal (median of the
  per-repeat ratios);
* ``tokens_per_s_vs_none``: decode tokens/s over no drop;
* ``ranking_pct``: ranking + compaction as a share of the prefill (%).

A target names the method it reads (``method``, default ``pdrop``; e.g. ``pdrop_compiled``). A target
whose run or metric is missing is reported as ``missing``, never as met.

Launch::

    python -m llava.bench.summary next-7b.json llava-1.5-7b.json --targets configs/bench/targets-gpu.json \\
        --markdown summary.md --json summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..paths import CONFIGS_DIR


def metric_value(run: dict[str, Any], task: str, metric: str, method: str = "pdrop") -> float | None:
    """One figure of ``method`` in a benchmark run's JSON (None if the run lacks it)."""
    entry = run["methods"].get(method) or {}
    if metric == "ranking_pct":
        overhead = (entry.get("metrics") or {}).get("ranking_overhead")
        return overhead["ranking_pct"] if isinstance(overhead, dict) else None
    key = "ratios_to_ideal" if metric == "time_vs_ideal" else "ratios"
    paired = ((entry.get(key) or {}).get(task) or {}).get("paired_time")
    if paired is None:
        return None
    return 1 / paired["median"] if metric == "tokens_per_s_vs_none" else paired["median"]


def preset_name(preset: str) -> str:
    """A run's preset as the targets name it: ``llava-1.5-7b`` as given, a preset file by its name less ``.json``."""
    name = Path(preset).name
    return name[:-len(".json")] if name.endswith(".json") else name


def check_targets(runs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the measured value and ``met`` / ``missed`` / ``missing``.

    A preset may have several runs (e.g. one of every method and task, one of a single arm): a target
    takes its value from the first run, in the order given, that has it.
    """
    checked = []
    for target in targets:
        values = (metric_value(run, target["task"], target["metric"], target.get("method", "pdrop"))
                  for run in runs if preset_name(run["settings"]["preset"]) == target["preset"])
        value = next((v for v in values if v is not None), None)
        if value is None:
            status = "missing"
        elif ("max" in target and value > target["max"]) or ("min" in target and value < target["min"]):
            status = "missed"
        else:
            status = "met"
        checked.append({**target, "value": value, "status": status})
    return checked


def headline(run: dict[str, Any]) -> list[str]:
    """Markdown rows: each method and task with its median and ratios to none and ideal."""
    rows = []
    for name, entry in run["methods"].items():
        for task, metric in entry["metrics"].items():
            if not isinstance(metric, dict) or "median_ms" not in metric:
                continue
            ratios = [((entry.get(key) or {}).get(task) or {}).get("paired_time") for key in ("ratios", "ratios_to_ideal")]
            cells = ["-" if r is None else f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})" for r in ratios]
            rows.append(f"| {name} | {task} | {metric['median_ms']:.4g} | {cells[0]} | {cells[1]} |")
    return rows


def render_markdown(runs: list[dict[str, Any]], checked: list[dict[str, Any]]) -> str:
    lines = ["# Benchmark summary", ""]
    for run in runs:
        env, settings = run["environment"], run["settings"]
        lines += [f"## {settings['preset']} on {env['device']} ({settings['dtype']}, {settings['attn']}, "
                  f"batch {settings['batch_size']}, train batch {settings['train_batch_size']})", "",
                  f"`{run.get('command', '')}`; torch {env['torch']}, transformers {env['transformers']}", "",
                  "| method | task | median ms | time / none (range) | time / ideal (range) |", "|---|---|---|---|---|",
                  *headline(run), ""]
        lines += [f"- warning: {w}" for w in run.get("reliability_warnings", [])] + [""]
    lines += ["## Targets", "", "| preset | what | metric | bound | measured | status |", "|---|---|---|---|---|---|"]
    for t in checked:
        bound = f"<= {t['max']}" if "max" in t else f">= {t['min']}"
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {t['preset']} | {t.get('what', t['task'])} | {t['metric']} | {bound} | {value} | {t['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m llava.bench.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by python -m llava.bench --json")
    parser.add_argument("--targets", default=str(CONFIGS_DIR / "bench" / "targets-gpu.json"),
                        help="a targets file (default: configs/bench/targets-gpu.json)")
    parser.add_argument("--markdown", metavar="PATH", help="write the summary as markdown to PATH")
    parser.add_argument("--json", metavar="PATH", help="write the checked targets as JSON to PATH")
    args = parser.parse_args(argv)
    try:
        runs = [json.loads(Path(path).read_text()) for path in args.results]
        targets = json.loads(Path(args.targets).read_text())["targets"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        parser.error(f"cannot read the results or targets: {err}")
    checked = check_targets(runs, targets)
    text = render_markdown(runs, checked)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"targets": checked, "runs": [r.get("command") for r in runs]}, indent=2))
    return checked


if __name__ == "__main__":
    from ..cli import cli_main

    cli_main(main, prog="llava.bench.summary")
