"""The user's scripts, for real, on the tiny default: 2 CPU processes, gloo, DeepSpeed.

pretrain (ZeRO-2, wandb offline) -> finetune with PyramidDrop (ZeRO-3) -> reload -> generate, a
resumed ZeRO-3 run, and a LLaVA-NeXT finetune (ZeRO-2). Each run takes a few tens of seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava.data.templates import build_prompt
from llava.model import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("deepspeed")
pytestmark = pytest.mark.integration


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


TINY = {}  # the tiny assets (tests/conftest.py's session folder), set by the pipeline fixture


def run_script(script: str, config: str, tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """A stage script on the tiny assets of this test session: nothing is written into the checkout."""
    data = "pretrain.json" if "pretrain" in config else "finetune.json"
    environment = {**os.environ, "CONFIG": f"configs/train/{config}.json", "PYTHON": sys.executable, "GPUS": "2",
                   "MASTER_PORT": _free_port(), "TORCH_EXTENSIONS_DIR": str(TINY["extensions"]),
                   "WANDB_DIR": str(tmp_path), "TINY_ASSETS": str(TINY["llm"].parent),
                   "MODEL_NAME_OR_PATH": str(TINY["llm"]), "VISION_TOWER": str(TINY["vision"]),
                   "DATA_PATH": str(TINY["data"] / data), "IMAGE_FOLDER": str(TINY["data"] / "images"), **env}
    environment.pop("WANDB_API_KEY", None)
    done = subprocess.run(["bash", f"scripts/{script}", *flags], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def logged_losses(output_dir: Path) -> list[float]:
    last = max(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, assets):
    TINY.update(assets, extensions=tmp_path_factory.getbasetemp() / "torch_extensions")
    tmp = tmp_path_factory.mktemp("pipeline")
    pre, ft = tmp / "pretrain", tmp / "finetune"
    run_script("pretrain_pdrop.sh", "tiny-pretrain", tmp, "--report_to", "wandb", OUTPUT_DIR=str(pre))
    run_script("finetune_pdrop.sh", "tiny-finetune", tmp, OUTPUT_DIR=str(ft),
               PRETRAIN_MM_MLP_ADAPTER=str(pre / "mm_projector.bin"))
    return {"tmp": tmp, "pretrain": pre, "finetune": ft}


def test_pretrain_under_zero2_writes_the_projector_and_logs_offline(pipeline):
    pre = pipeline["pretrain"]
    assert (pre / "mm_projector.bin").is_file() and (pre / "config.json").is_file()
    losses = logged_losses(pre)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert list((pipeline["tmp"] / "wandb").glob("offline-run-*")), "wandb did not log offline"


def test_finetune_under_zero3_trains_saves_16bit_and_generates(pipeline):
    ft = pipeline["finetune"]
    losses = logged_losses(ft)
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    config = json.loads((ft / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["pdrop"]["layer_list"]
    stock = LlavaForConditionalGeneration.from_pretrained(ft)  # consolidated weights, stock class
    model = PDropLlavaForConditionalGeneration.from_pretrained(ft).eval()
    for name, tensor in stock.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    processor = AutoProcessor.from_pretrained(ft)
    from PIL import Image
    image = Image.open(TINY["data"] / "images" / "eval_0000.png")
    prompt = build_prompt([{"from": "human", "value": "<image>\nWhat color is the square?"}], "vicuna_v1")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    kept = model.pdrop_trace.image_tokens_per_stage()[0].tolist()  # the prefill dropped, stage by stage
    assert kept[0] == 16 and kept == sorted(kept, reverse=True) and kept[-1] < kept[0]


def test_zero3_run_resumes_from_its_last_checkpoint(pipeline):
    ft = pipeline["finetune"]
    done = run_script("finetune_pdrop.sh", "tiny-finetune", pipeline["tmp"], "--max_steps", "14",
                      OUTPUT_DIR=str(ft), PRETRAIN_MM_MLP_ADAPTER=str(pipeline["pretrain"] / "mm_projector.bin"))
    assert "resuming from" in done.stderr + done.stdout
    state = json.loads((ft / "checkpoint-14" / "trainer_state.json").read_text())
    assert state["global_step"] == 14
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == list(range(1, 15))  # one history: steps 1-12 from the first run, 13-14 resumed


def test_llava_next_finetune_under_zero2(pipeline):
    out = pipeline["tmp"] / "next"
    run_script("finetune_pdrop_next.sh", "tiny-next-finetune", pipeline["tmp"], OUTPUT_DIR=str(out))
    model = PDropLlavaNextForConditionalGeneration.from_pretrained(out)
    assert model.pdrop_config is not None
    losses = logged_losses(out)
    assert sum(losses[-3:]) < sum(losses[:3]), losses


def test_zero3_without_drop_mixes_image_and_text_only_batches(pipeline):
    """Ranks with and without images call the modules in one order (a mismatch stops ZeRO-3).

    Three text-only records for one with an image and no modality grouping: most steps give one
    rank a batch without images (a dummy image) while the other has images.
    """
    records = json.loads((TINY["data"] / "finetune.json").read_text())
    text = [r for r in records if "image" not in r][:24]
    images = [r for r in records if isinstance(r.get("image"), str)][:8]
    data = pipeline["tmp"] / "mixed.json"
    data.write_text(json.dumps(text + images))
    out = pipeline["tmp"] / "nodrop"
    run_script("finetune_pdrop.sh", "tiny-finetune", pipeline["tmp"], "--no_pdrop", "--max_steps", "8",
               "--save_steps", "8", "--group_by_modality_length", "false", OUTPUT_DIR=str(out), DATA_PATH=str(data),
               PRETRAIN_MM_MLP_ADAPTER=str(pipeline["pretrain"] / "mm_projector.bin"))
    assert json.loads((out / "config.json").read_text()).get("pdrop") is None
