"""Speed benchmark: smoke runs on the tiny presets (no timing assertions), errors, OOM handling."""

import json

import pytest
import torch

from llava.bench import speed
from llava.bench.speed import SpeedSettings, main
from llava.paths import load_model_preset

QUICK = ["--device", "cpu", "--warmup", "0", "--repeats", "1", "--max_new_tokens", "3"]


def bench_for(tasks, attn="sdpa", **kwargs):
    kwargs = {"warmup": 0, "repeats": 1, **kwargs}
    settings = SpeedSettings(preset="tiny-llava", device="cpu", tasks=tasks, attn=attn, **kwargs)
    return speed.setup_bench(settings, load_model_preset("tiny-llava"))


@pytest.mark.parametrize("preset, methods, train_image_tokens", [
    ("tiny-llava", "none,pdrop,fastv,ideal", 16),
    ("tiny-llava-next", "none,pdrop,ideal", 88),  # base crop + 2x2 grid + a newline per row: the model's own count
])
def test_tiny_run_reports_every_metric_and_writes_json(preset, methods, train_image_tokens, tmp_path, capsys):
    path = tmp_path / "out.json"
    results = main(["--preset", preset, "--methods", methods, *QUICK, "--repeats", "2", "--json", str(path)])
    table = capsys.readouterr().out
    for method in methods.split(","):
        entry = results["methods"][method]
        for task in speed.TASKS:
            metric = entry["metrics"][task]
            assert metric["median_ms"] > 0 and metric["min_ms"] <= metric["median_ms"] <= metric["max_ms"]
            assert metric["peak_mem_mib"] is None and metric["repeats"] == 2  # CPU
            assert entry["ratios"][task]["median_ms"] is not None
            assert entry["ratios_to_ideal"][task]["paired_time"]["min"] <= entry["ratios_to_ideal"][task]["paired_time"]["max"]
        assert entry["metrics"]["decode"]["new_tokens_per_run"] == [3]  # every method decodes the same count
        assert entry["metrics"]["decode"]["median_tokens_per_s"] > 0
        assert entry["metrics"]["train_ckpt"]["image_tokens"] == train_image_tokens
        assert set(entry["dispatch"]) == {"prefill", "decode_step"} and entry["dispatch"]["prefill"]["ops"] > 0
        assert table.count(f"\n{method} ") == 4  # metrics, spread, memory and dispatch rows
    assert results["methods"]["none"]["ratios"]["prefill"]["paired_time"]["median"] == 1.0
    assert results["methods"]["ideal"]["ratios_to_ideal"]["prefill"]["paired_time"]["median"] == 1.0
    assert results["methods"]["pdrop"]["flops_ratio"] < 1.0
    assert results["methods"]["ideal"]["flops_ratio"] == results["methods"]["pdrop"]["flops_ratio"]
    assert results["methods"]["pdrop"]["metrics"]["ranking_overhead"]["ranking_pct"] > 0
    assert "ranking_overhead" not in results["methods"]["ideal"]["metrics"]
    assert results["dispatch_per_boundary"]["ops"] > 0 and "syncs" in results["dispatch_per_boundary"]
    saved = json.loads(path.read_text())
    assert saved["environment"]["device"] and saved["environment"]["torch"] == torch.__version__
    assert saved["environment"]["transformers"] and saved["environment"]["cpu_cores"] >= 1
    assert saved["command"].startswith(f"python -m llava.bench --preset {preset} --methods {methods}")
    assert saved["inputs"]["image_tokens"] == load_model_preset(preset)["image_tokens"]
    assert saved["settings"]["dtype"] == "float32" and saved["settings"]["schedule"]["layer_list"] == [1, 2, 3]
    assert isinstance(saved["reliability_warnings"], list) and saved["machine"]["prefill"]["before"]["cores"] >= 1


def test_the_arms_are_interleaved(monkeypatch):
    order = []
    monkeypatch.setitem(speed.TASK_STEPS, "prefill", lambda bench, arm: order.append(arm.name) or 1e-3)
    bench = bench_for(("prefill",), repeats=3)
    arms = speed.method_arms(bench.settings, 4)
    speed.measure_task(bench, "prefill", arms)
    assert order == ["none", "pdrop", "ideal", "pdrop", "ideal", "none", "ideal", "none", "pdrop"]


def test_ideal_runs_the_schedules_token_counts_by_slicing():
    from llava.bench.ideal import stage_lengths

    schedule = speed.default_schedule("tiny-llava", 4)
    assert stage_lengths(schedule, 28, 16) == [28, 20, 16, 14]
    bench = bench_for(("prefill",))
    seen = []
    for layer in bench.model.model.language_model.layers:
        layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    with torch.no_grad():
        speed.language_model_forward(bench, speed.Arm("ideal", schedule), **bench.lm_inputs)
    assert seen == [28, 20, 16, 14]
    seen.clear()
    with torch.no_grad():
        speed.language_model_forward(bench, speed.Arm("pdrop", schedule), **bench.lm_inputs)
    assert seen == [28, 20, 16, 14]  # the same counts as the method itself


def test_dispatch_counts_see_host_reads_and_allocations():
    from llava.bench.dispatch import count_dispatch

    x = torch.ones(4)
    counts = count_dispatch(lambda: (x + 1, x.view(2, 2), int(x.sum()), x.tolist()))
    assert counts == {"ops": 4, "syncs": 2, "allocations": 2}  # add, view, sum, item; tolist is a read too


def test_unreliable_conditions_are_named():
    from llava.bench.report import warn_unreliable

    results = {"machine": {"prefill": {"before": {"load_1min": 3.5, "cores": 2, "threads": 4},
                                       "after": {"load_1min": 3.9, "cores": 2, "threads": 4}}},
               "methods": {"pdrop": {"metrics": {"prefill": {"spread_pct": 60.0, "mad_pct": 12.0},
                                                 "decode": {"spread_pct": 60.0, "mad_pct": 2.0}}}}}
    warnings = "\n".join(warn_unreliable(results))
    assert "4 threads on 2 cores" in warnings and "other work shared the CPU" in warnings
    assert "pdrop prefill: the repeats deviate by 12%" in warnings and "decode" not in warnings


def test_out_of_memory_is_recorded_and_the_run_goes_on(monkeypatch, capsys):
    def out_of_memory(bench, arm):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setitem(speed.TASK_STEPS, "train", out_of_memory)
    results = main(["--preset", "tiny-llava", *QUICK, "--tasks", "prefill,train,train_ckpt"])
    for method in ("none", "pdrop", "ideal"):
        metrics = results["methods"][method]["metrics"]
        assert metrics["train"] == "oom"
        assert metrics["prefill"]["median_ms"] > 0 and metrics["train_ckpt"]["median_ms"] > 0
        assert "train" not in results["methods"][method]["ratios"]
    assert "oom" in capsys.readouterr().out


def test_checkpointing_is_on_only_for_train_ckpt(monkeypatch):
    bench = bench_for(("train", "train_ckpt"))
    seen = []

    def spy(b, arm):
        seen.append(b.model.is_activation_checkpointing and b.model.training)
        return 1e-3

    monkeypatch.setitem(speed.TASK_STEPS, "train", spy)
    monkeypatch.setitem(speed.TASK_STEPS, "train_ckpt", spy)
    arm = [speed.Arm("none", None)]
    speed.measure_task(bench, "train_ckpt", arm)
    speed.measure_task(bench, "train", arm)
    assert seen == [True, False]
    assert not bench.model.is_activation_checkpointing and not bench.model.training


@pytest.mark.parametrize("schedule", [None, speed.default_schedule("tiny-llava", 4)])
def test_decode_loop_is_greedy_generate(schedule):
    """The timed loop computes what generate() does (prompt embedded as generate embeds it)."""
    bench = bench_for(("decode",), attn="eager", max_new_tokens=4)
    model, spec = bench.model, bench.spec
    ids = speed.prompt_ids(spec, 2, spec["image_tokens"], torch.Generator().manual_seed(1))
    embeds = model.get_input_embeddings()(ids).detach()
    bench.lm_inputs = {"inputs_embeds": embeds, "image_mask": ids == spec["image_token_id"]}
    model.set_pdrop_config(schedule)
    tokens, _ = speed.greedy_decode(bench, speed.Arm("pdrop" if schedule else "none", schedule))
    expected = model.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(tokens, expected[:, -4:])


@pytest.mark.integration
def test_the_compiled_arm_runs_beside_the_eager_one(capsys):
    results = main(["--preset", "tiny-llava", "--methods", "none,pdrop,pdrop_compiled,ideal", "--tasks",
                    "prefill,decode,train", *QUICK])
    entry, eager = results["methods"]["pdrop_compiled"], results["methods"]["pdrop"]
    assert entry["schedule"] == eager["schedule"] and entry["flops_ratio"] == eager["flops_ratio"]
    assert all(entry["metrics"][task]["median_ms"] > 0 for task in ("prefill", "decode", "train"))
    assert entry["metrics"]["ranking_overhead"]["ranking_pct"] > 0
    assert entry["dispatch"] is None and "not counted" in capsys.readouterr().out  # a counter would run it eager


def test_ranking_overhead_found_only_with_pdrop():
    bench = bench_for(("prefill",))
    assert speed.ranking_overhead(bench) is None  # PyramidDrop off: no ranking ranges
    bench.model.set_pdrop_config(speed.default_schedule("tiny-llava", 4))
    overhead = speed.ranking_overhead(bench)
    assert 0 < overhead["ranking_ms"] < overhead["prefill_ms"]
    low, high = overhead["ranking_pct_range"]
    assert low <= overhead["ranking_pct"] <= high
    assert overhead["measured_by"].startswith("wall-clock")  # on CPU: no profiler in the timed prefill
    assert 0 < overhead["profiler_ranking_pct"] < 100


def test_default_schedule_is_scaled_to_the_model():
    assert list(speed.default_schedule("tiny-llava", 4).layer_list) == [1, 2, 3]
    assert list(speed.default_schedule("llava-1.5-7b", 32).layer_list) == [8, 16, 24]
    qwen = speed.default_schedule("llava-qwen2-7b", 28)
    assert list(qwen.layer_list) == [7, 14, 21] and list(qwen.image_token_ratio_list) == [0.5, 0.25, 0.125]


@pytest.mark.parametrize("argv, message", [
    (["--preset", "no-such-preset"], "no model config 'no-such-preset'"),
    (["--preset", "tiny-llava", "--methods", "none,fast"], "unknown method(s) ['fast']"),
    (["--preset", "tiny-llava", "--tasks", "prefill,backward"], "unknown task(s) ['backward']"),
    (["--preset", "tiny-llava", "--methods", "fastv", "--fastv_k", "4"], "boundary 4"),
    (["--preset", "tiny-llava", "--methods", "fastv", "--fastv_ratio", "1.0"], "FastV ratio"),
    (["--preset", "tiny-llava", "--layer_list", "[1,5]", "--image_token_ratio_list", "[0.5,0.25]"], "boundary 5"),
    (["--preset", "tiny-llava", "--repeats", "0"], "must be >= 1"),
])
def test_bad_arguments_give_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--device", "cpu"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_c2f_walks_a_synthetic_image_on_next_presets_only(capsys):
    results = main(["--preset", "tiny-llava-next", "--methods", "none,c2f", *QUICK, "--tasks", "prefill",
                    "--c2f_image_size", "400x300"])
    c2f = results["coarse_to_fine"]
    assert c2f["image_size"] == [400, 300] and c2f["num_vision_images"][0] > 1 and c2f["num_image_tokens"][0] > 0
    assert c2f["median_ms"]["walk"] > 0 and c2f["flops"][0]
    assert "c2f on a 400x300 synthetic image" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--preset", "tiny-llava", "--methods", "none,c2f", *QUICK])
    assert "needs a LLaVA-NeXT preset" in capsys.readouterr().err


def prefill_and_decode_step_reads(model, batch) -> tuple[int, int]:
    """Host reads of device values (what a GPU waits for) in one full-model prefill and one decode step."""
    from llava.bench.dispatch import count_dispatch

    with torch.no_grad():
        prefill = count_dispatch(lambda: model(**batch, use_cache=True))
        out = model(**batch, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(token)], 1)
        step = count_dispatch(lambda: model(input_ids=token, attention_mask=mask, past_key_values=out.past_key_values))
    return prefill["syncs"], step["syncs"]


def test_a_prefill_reads_the_device_twice_and_a_decode_step_once():
    """The input checks with the image-token count, and the keep plan; a decode step reads what the stock
    model reads. The counts do not depend on the device (tests/cuda runs this on a GPU)."""
    from llava.pdrop import PDropConfig

    from ..conftest import Sample, make_batch, tiny_model

    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]), "sdpa")
    batch = make_batch([Sample(before=[5, 6, 7], after=[8, 9, 10, 11]), Sample(before=[12], after=[13, 14, 15])], "left")
    assert prefill_and_decode_step_reads(model, batch) == (2, 1)
