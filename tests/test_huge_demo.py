"""The huge-image demo: its rows, the runs it launches, what it measures, the table; end to end (integration)."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from llava import huge_demo
from llava.paths import load_pyramid_config

CONFIG = load_pyramid_config("huge-demo")


def test_five_rows_one_config_apart():
    rows = huge_demo.methods(CONFIG, seed=2)
    assert [m.key for m in rows] == ["thumbnail", "full_grid", "c2f", "random", "trained"]
    walks = {m.key: m.config for m in rows if m.kind == "walk"}
    assert walks["c2f"] == CONFIG and walks["random"] == CONFIG.__class__(**{**CONFIG.to_dict(), "focus": "random",
                                                                           "focus_seed": 2})
    assert walks["trained"].focus == "trained" and walks["trained"].focus_layer == CONFIG.focus_layer


def test_training_runs_go_through_the_next_scripts_each_starting_from_the_one_before(tmp_path):
    assets = {name: tmp_path / "assets" / name for name in ("llm", "vision", "data", "images")}
    args = argparse.Namespace(gpus=2, seed=0, pretrain_steps=None, finetune_steps=7, focus_steps=None)
    runs = huge_demo.training_runs(tmp_path, {**assets, "hash": "abc"}, args, {"OMP_NUM_THREADS": "1"})
    assert [(r.script, r.config) for r in runs.values()] == [
        ("pretrain_pdrop_next.sh", "huge-demo-pretrain"), ("finetune_pdrop_next.sh", "huge-demo-finetune"),
        ("finetune_pdrop_next.sh", "huge-demo-focus")]
    assert runs["finetune"].env["PRETRAIN_MM_MLP_ADAPTER"] == str(tmp_path / "pretrain" / "mm_projector.bin")
    assert runs["focus"].env["MODEL_NAME_OR_PATH"] == str(tmp_path / "finetune")
    assert runs["finetune"].flags == ["--seed", "0", "--max_steps", "7"] and runs["finetune"].max_steps() == 7
    assert runs["pretrain"].after == "abc" and runs["focus"].after == huge_demo.digest(runs["finetune"].settings())
    config = json.loads((huge_demo.REPO / "configs/train/huge-demo-focus.json").read_text())
    assert config["train_focus_module"] and config["focus_module_layers"] == CONFIG.focus_layer


def fake_result(kind: str, factor: int = 1, kept=()):
    trace = SimpleNamespace(level=SimpleNamespace(factor=factor), kept_coords=torch.tensor(kept).reshape(-1, 2))
    return SimpleNamespace(stop_reason=kind, traces=[trace])


def test_object_kept_reads_the_last_level_s_tokens_in_full_resolution_pixels():
    obj = {"left": 200, "top": 90, "side": 84}  # columns 200..283, rows 90..173
    token_px = 84  # 42 px patches pooled 2 x 2
    assert huge_demo.object_kept(fake_result("full_resolution", 1, [[1, 2]]), obj, token_px)  # rows 84..167
    assert not huge_demo.object_kept(fake_result("full_resolution", 1, [[0, 0], [3, 3]]), obj, token_px)
    assert huge_demo.object_kept(fake_result("max_levels", 2, [[0, 1]]), obj, token_px)  # 168 px tokens
    assert huge_demo.object_kept(fake_result("full_grid"), obj, token_px)
    assert huge_demo.object_kept(fake_result("thumbnail"), obj, token_px) is None


def rows():
    def row(key, accuracy, tokens, vision, kept):
        return {"key": key, "setting": key, "accuracy": accuracy, "spread": 1.0, "object_kept": kept,
                "image_tokens": tokens, "vision_gflops": vision, "total_gflops": vision + 1, "peak_memory_mb": 100.0,
                "note": ""}
    return [row("thumbnail", 10, 64, 0.03, None), row("full_grid", 30, 2416, 4.0, 100),
            row("c2f", 60, 140, 1.2, 80), row("random", 12, 150, 1.2, 10), row("trained", 50, 140, 1.2, 70),
            huge_demo.chance_row()]


def test_the_table_and_its_claims():
    text = huge_demo.table(rows(), seeds=3)
    lines = text.splitlines()
    assert len(lines) == 7 and "accuracy % (±sd, 3 seeds)" in lines[0] and "chance" in lines[-1]
    assert "2416" in lines[2] and "16.7" in lines[-1]
    claims = huge_demo.claims(rows())
    assert claims == {"token_share_of_full_grid": round(140 / 2416, 4), "vision_flops_share_of_full_grid": 0.3,
                      "accuracy_minus_full_grid": 30, "accuracy_minus_thumbnail": 50, "accuracy_minus_random": 48,
                      "trained_minus_training_free": -10}


def test_a_row_whose_answers_collapse_says_so():
    assert huge_demo.answer_note(["red", "blue", "green"]) == ""
    assert huge_demo.answer_note(["", "", "", "red"]) == "answers '' 75% (ends at once)"


@pytest.mark.integration
def test_the_demo_runs_end_to_end_at_a_reduced_size(tmp_path):
    """Trained through the scripts (fewer images and steps), 2 seeds x 4 images of 2,000 and 4,000 px: the
    tables' structure, the costs they report (exact orderings) and what coarse-to-fine keeps of the object."""
    results = huge_demo.main(["--out", str(tmp_path), "--num_train", "400", "--pretrain_steps", "10",
                              "--finetune_steps", "150", "--focus_steps", "30", "--num_eval", "4", "--eval_seeds", "2"])
    assert json.loads((tmp_path / "results.json").read_text())["sizes"] == json.loads(json.dumps(results["sizes"]))
    tiles = {"2000": 6, "4000": 12}
    for size, result in results["sizes"].items():
        by = {row["key"]: row for row in result["rows"]}
        assert list(by) == ["thumbnail", "full_grid", "c2f", "random", "trained", "chance"]
        for key in ("thumbnail", "full_grid", "c2f", "random", "trained"):
            assert len(by[key]["per_seed"]) == 2 and by[key]["peak_memory_mb"] is not None
        n = tiles[size]
        assert by["thumbnail"]["image_tokens"] == 64 and by["full_grid"]["image_tokens"] == 64 + n * n * 16 + n * 4
        assert by["thumbnail"]["vision_crops"] == 1 and by["full_grid"]["vision_crops"] == 1 + n * n
        for key in ("c2f", "random", "trained"):
            assert 64 < by[key]["image_tokens"] < 0.25 * by["full_grid"]["image_tokens"]
            assert by["thumbnail"]["vision_gflops"] < by[key]["vision_gflops"] < by["full_grid"]["vision_gflops"]
        assert by["full_grid"]["object_kept"] == 100 and by["c2f"]["object_kept"] > by["random"]["object_kept"]
    assert results["sizes"]["4000"]["claims"]["token_share_of_full_grid"] < 0.1
