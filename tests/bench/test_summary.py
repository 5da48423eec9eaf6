"""The summary of benchmark runs against the targets in configs/bench, and the prepared GPU check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.bench.speed import METHODS
from llava.bench.summary import check_targets, main
from llava.paths import CONFIGS_DIR

REPO = Path(__file__).resolve().parents[2]


def _run(preset, prefill_vs_none, prefill_vs_ideal, decode_vs_none, ranking_pct):
    def paired(x):
        return {"paired_time": {"median": x, "min": x * 0.9, "max": x * 1.1}}

    pdrop = {"metrics": {"prefill": {"median_ms": 2.0}, "decode": {"median_ms": 5.0},
                         "ranking_overhead": {"ranking_pct": ranking_pct}},
             "ratios": {"prefill": paired(prefill_vs_none), "decode": paired(decode_vs_none)},
             "ratios_to_ideal": {"prefill": paired(prefill_vs_ideal)}}
    return {"settings": {"preset": preset, "dtype": "float32", "attn": "sdpa", "batch_size": 1, "train_batch_size": 1},
            "environment": {"device": "cpu", "torch": "x", "transformers": "y"}, "methods": {"pdrop": pdrop}}


def test_targets_are_met_missed_or_missing():
    targets = [{"preset": "p", "task": "prefill", "metric": "time_vs_ideal", "max": 1.05},
               {"preset": "p", "task": "decode", "metric": "tokens_per_s_vs_none", "min": 1.0},
               {"preset": "p", "task": "prefill", "metric": "ranking_pct", "max": 2.0},
               {"preset": "p", "task": "train", "metric": "time_vs_none", "max": 0.6},
               {"preset": "q", "task": "prefill", "metric": "time_vs_none", "max": 0.5}]
    checked = check_targets([_run("p", 0.5, 1.04, 1.25, 3.0)], targets)
    assert [t["status"] for t in checked] == ["met", "missed", "missed", "missing", "missing"]
    assert checked[1]["value"] == pytest.approx(0.8)  # tokens/s ratio: the inverse of the time ratio


def test_a_target_reads_the_first_run_of_its_preset_that_has_its_method():
    full, compiled_only = _run("p", 0.5, 1.04, 1.0, 1.0), _run("p", 0.7, 1.2, 1.0, 1.0)
    compiled_only["methods"]["pdrop_compiled"] = _run("p", 0.51, 1.03, 1.0, 1.0)["methods"]["pdrop"]
    targets = [{"preset": "p", "task": "prefill", "metric": "time_vs_none", "max": 0.52},
               {"preset": "p", "task": "prefill", "metric": "time_vs_ideal", "max": 1.05, "method": "pdrop_compiled"},
               {"preset": "p", "task": "decode", "metric": "time_vs_none", "max": 1.0, "method": "fastv"}]
    checked = check_targets([full, compiled_only], targets)
    assert [(t["value"], t["status"]) for t in checked] == [(0.5, "met"), (1.03, "met"), (None, "missing")]


def test_a_preset_with_a_dot_in_its_name_is_found_as_named_or_by_its_file():
    """llava-1.5-7b is not a file name with the suffix .5-7b (the first GPU run reported its targets missing)."""
    target = [{"preset": "llava-1.5-7b", "task": "prefill", "metric": "time_vs_none", "max": 0.6}]
    for preset in ("llava-1.5-7b", "configs/models/llava-1.5-7b.json"):
        assert check_targets([_run(preset, 0.5, 1.0, 1.0, 1.0)], target)[0]["status"] == "met"


def test_every_targets_file_names_known_presets_and_metrics():
    for path in (CONFIGS_DIR / "bench").glob("targets-*.json"):
        for target in json.loads(path.read_text())["targets"]:
            assert (CONFIGS_DIR / "models" / f"{target['preset']}.json").is_file()
            assert target["metric"] in {"time_vs_none", "time_vs_ideal", "tokens_per_s_vs_none", "ranking_pct"}
            assert ("max" in target) != ("min" in target)
            assert target.get("method", "pdrop") in METHODS


def test_cli_writes_markdown_and_json(tmp_path, capsys):
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_run("tiny-llava", 0.5, 1.0, 1.0, 1.0)))
    main([str(run), "--targets", str(CONFIGS_DIR / "bench" / "targets-cpu.json"),
          "--markdown", str(tmp_path / "s.md"), "--json", str(tmp_path / "s.json")])
    assert "| tiny-llava | tiny decode tokens/s | tokens_per_s_vs_none | >= 0.95 | 1.000 | met |" in (tmp_path / "s.md").read_text()
    assert {t["status"] for t in json.loads((tmp_path / "s.json").read_text())["targets"]} == {"met", "missing"}


def test_gpu_check_says_so_without_a_gpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WHEELS": str(tmp_path / "no-wheels"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/bench/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode == 0:  # a machine with a GPU ran the whole check
        assert (tmp_path / "out" / "summary.md").is_file()
    else:
        assert "no CUDA device" in done.stderr


def _gpu_check_step(budget: int, *command: str, elapsed: int = 0, shim_timeout: bool = False) -> subprocess.CompletedProcess:
    """Run gpu_check.sh's ``step`` function (cut from the script) on ``command`` with ``BUDGET=budget``, ``elapsed``
    seconds already spent; ``shim_timeout``: ``timeout`` only prints the limit it was given."""
    script = (REPO / "scripts" / "bench" / "gpu_check.sh").read_text()
    function = script[script.index("step() {"):script.index("\n}\n", script.index("step() {")) + 3]
    shim = 'timeout() { echo "limit $1"; }\n' if shim_timeout else ""
    program = f"BUDGET={budget}\nSECONDS={elapsed}\n{shim}{function}\nstep \"$@\""
    return subprocess.run(["bash", "-c", program, "bash", *command], capture_output=True, text=True)


def test_gpu_check_steps_stop_at_their_limit_and_within_the_budget():
    assert _gpu_check_step(100, "5", "true").returncode == 0
    assert _gpu_check_step(100, "1", "sleep", "5").returncode == 124  # the step's own limit, for real
    assert _gpu_check_step(480, "150", "x", elapsed=100, shim_timeout=True).stdout == "limit 150\n"
    assert _gpu_check_step(480, "150", "x", elapsed=400, shim_timeout=True).stdout == "limit 80\n"  # what is left
    skipped = _gpu_check_step(480, "100", "true", elapsed=475)
    assert skipped.returncode == 1 and "budget of 480 s is spent; skipped: true" in skipped.stderr
