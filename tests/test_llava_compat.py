"""LLaVA's own command lines (tests/llava_command_lines.py) run as they are: evaluation and training.

The tables: llava/compat.py (template names), llava/eval/llava_compat.py, llava/train/llava_compat.py.
Evaluation runs the thin ``llava.eval.model_vqa*`` modules on a tiny assembled checkpoint; training runs
LLaVA's pretrain and finetune flag lists for one or two steps on the tiny assets (``use_cpu``; the
DeepSpeed flag is checked by translation here and end to end in the integration test).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.compat import CONV_MODES, OUR_TEMPLATES, template_name
from llava.eval import chunks, model_vqa, model_vqa_loader, model_vqa_mmbench, model_vqa_science, run
from llava.eval.llava_compat import RULES as EVAL_RULES
from llava.eval.llava_compat import to_run_argv
from llava.train import llava_compat as train_compat
from llava.train.llava_compat import RULES as TRAIN_RULES
from llava.train.llava_compat import to_train_argv
from llava.train.train import main as train_main
from tests.conftest import HAS_WANDB, save_assembled_llava
from tests.llava_command_lines import (FINETUNE, GQA_CHUNK, MMBENCH, MMBENCH_CN, MMVET, PDROP_EVAL, PDROP_TRAIN,
                                       PRETRAIN, SQA, TEXTVQA, fill)

REPO = Path(__file__).resolve().parents[1]
SCHEDULE = ["--layer_list", "[1,2,3]", "--image_token_ratio_list", "[0.5,0.25,0.125]"]


# --------------------------------------------------------------------------- the tables
def test_template_names_map_to_our_templates():
    from llava.data.templates import TEMPLATES

    assert tuple(TEMPLATES) == OUR_TEMPLATES
    assert {template_name(name) for name, (ours, _) in CONV_MODES.items() if ours} <= set(TEMPLATES)
    assert (template_name("v1"), template_name("llava_v1"), template_name("llava_llama_3")) == \
        ("vicuna_v1", "vicuna_v1", "llama_3")
    for name in ("mpt", "v0", "llama_2", "no_such_template"):
        with pytest.raises(ValueError, match="ours are plain, vicuna_v1, llama_3, chatml, chat_template"):
            template_name(name)


def test_the_light_copies_match_the_package():
    """llava/train/llava_compat.py keeps its own aspect ratios and projector (to stay import-light): the same."""
    from llava.data.images import ASPECT_RATIOS
    from llava.model.assemble import PROJECTOR_TYPES

    assert train_compat.ASPECT_RATIOS == ASPECT_RATIOS and PROJECTOR_TYPES == ("mlp2x_gelu",)


def test_readme_lists_every_mapping():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Coming from LLaVA"):]
    for rule in EVAL_RULES + TRAIN_RULES:
        assert f"`{rule.flag}" in section, rule.flag


# --------------------------------------------------------------------------- evaluation: translation
def test_llava_eval_lines_become_run_flags():
    argv = fill(GQA_CHUNK + " " + PDROP_EVAL, ckpt="ckpt", questions="q.jsonl", images="img", answers="a.jsonl",
                chunks=8, idx=3, layer_list="[8,16,24]", ratio_list="[1.0,0.5,0.25,0.125]")
    assert to_run_argv(argv) == [
        "--model_path", "ckpt", "--question_file", "q.jsonl", "--image_folder", "img", "--answers_file", "a.jsonl",
        "--temperature", "0", "--conv_mode", "vicuna_v1", "--num_chunks", "8", "--chunk_idx", "3",
        "--layer_list", "[8,16,24]", "--image_token_ratio_list", "[0.5, 0.25, 0.125]"]  # stage 0's 1.0 dropped
    assert to_run_argv(fill(MMBENCH_CN, ckpt="c", questions="q.tsv", answers="a.jsonl")) == [
        "--model_path", "c", "--question_file", "q.tsv", "--answers_file", "a.jsonl", "--single_pred_prompt",
        "--temperature", "0", "--conv_mode", "vicuna_v1", "--lang", "cn"]
    # ours pass through, and a ratio list with one ratio per boundary is left alone
    assert to_run_argv(["--conv_mode", "llava_v1", *SCHEDULE]) == ["--conv_mode", "llava_v1", *SCHEDULE]


@pytest.mark.parametrize("argv, message", [
    (["--model-base", "lmsys/vicuna-7b-v1.5"], "--model-base (LLaVA's flag) is not supported here: LoRA runs save"),
    (["--all-rounds"], "circular variants are rows of the .tsv"),
    (["--answer-prompter"], "--single-pred-prompt asks for the option's letter"),
    (["--conv-mode", "mpt"], "--conv-mode mpt: conversation template 'mpt' (LLaVA's) has no equivalent here"),
])
def test_llava_eval_flags_without_equivalent_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        model_vqa_loader.main(["--model-path", "x", "--question-file", "q.jsonl", "--answers-file", "a", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("llava.eval.model_vqa_loader: error: ") and message in err


def test_each_module_keeps_llava_defaults_and_the_help_names_it(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(run, "run", lambda args: seen.setdefault("args", args))
    for module, tokens in ((model_vqa_loader, 128), (model_vqa, 1024), (model_vqa_science, 1024),
                           (model_vqa_mmbench, 1024)):
        seen.clear()
        module.main(["--model-path", "m", "--question-file", "q", "--answers-file", "a"])
        args = seen["args"]
        assert (args.max_new_tokens, args.conv_mode, args.temperature) == (tokens, "vicuna_v1", 0.0)
    with pytest.raises(SystemExit) as stop:
        model_vqa_science.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith("usage: python -m llava.eval.model_vqa_science")
    assert "LLaVA's flags:" in out and "--single-pred-prompt" in out and "--model-base" in out


# --------------------------------------------------------------------------- evaluation: end to end
@pytest.fixture(scope="module")
def checkpoint(assets, tmp_path_factory):
    """An assembled (untrained) tiny LLaVA, saved with its processor (no schedule: the flags give one)."""
    return save_assembled_llava(assets, tmp_path_factory.mktemp("ckpt") / "tiny-llava")


@pytest.fixture(scope="module")
def questions(assets, tmp_path_factory):
    """Five questions in LLaVA's .jsonl, the same as a ScienceQA-style .json and as an MMBench .tsv."""
    records = json.loads((assets["data"] / "eval.json").read_text())[:5]
    folder = tmp_path_factory.mktemp("questions")
    lines = [{"question_id": r["id"], "image": r["image"], "text": r["question"]} for r in records]
    (folder / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    sqa = [{"id": r["id"], "image": r["image"], "conversations": [
        {"from": "human", "value": f"<image>\n{r['question']}\nA. red\nB. blue"}, {"from": "gpt", "value": "A"}]}
        for r in records]
    (folder / "sqa.json").write_text(json.dumps(sqa))
    rows = ["index\tquestion\tA\tB\tanswer\tcategory\timage"]
    for i, r in enumerate(records):
        encoded = base64.b64encode((assets["data"] / "images" / r["image"]).read_bytes()).decode()
        rows.append(f"{i}\t{r['question']}\tred\tblue\tA\tcolor\t{encoded}")
    (folder / "mmbench.tsv").write_text("\n".join(rows) + "\n")
    return folder


TINY = ["--max_new_tokens", "3", "--attn_implementation", "eager", "--device", "cpu"]


def test_textvqa_and_gqa_lines_answer_as_llava_eval_run(checkpoint, questions, assets, tmp_path):
    """textvqa.sh's line, and gqa.sh's two chunks merged, give llava.eval.run's answers with the same schedule."""
    common = dict(ckpt=checkpoint, questions=questions / "q.jsonl", images=assets["data"] / "images")
    pdrop = fill(PDROP_EVAL, layer_list="[1,2,3]", ratio_list="[1.0,0.5,0.25,0.125]")
    model_vqa_loader.main(fill(TEXTVQA, answers=tmp_path / "textvqa.jsonl", **common) + pdrop + TINY)
    parts = [tmp_path / f"gqa_{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        model_vqa_loader.main(fill(GQA_CHUNK, answers=part, chunks=2, idx=i, **common) + pdrop + TINY)
    chunks.merge(parts, tmp_path / "gqa.jsonl")
    run.main(["--model_path", str(checkpoint), "--question_file", str(questions / "q.jsonl"), "--image_folder",
              str(assets["data"] / "images"), "--answers_file", str(tmp_path / "ours.jsonl"), *SCHEDULE, *TINY])
    texts = {name: {r["question_id"]: r["text"] for r in chunks.read_jsonl(tmp_path / f"{name}.jsonl")}
             for name in ("textvqa", "gqa", "ours")}
    assert len(texts["ours"]) == 5 and texts["textvqa"] == texts["gqa"] == texts["ours"]
    record = chunks.read_jsonl(tmp_path / "textvqa.jsonl")[0]
    assert record["metadata"]["pdrop"]["image_token_ratio_list"] == [0.5, 0.25, 0.125]


def test_sqa_mmbench_and_mmvet_lines(checkpoint, questions, assets, tmp_path):
    images = assets["data"] / "images"
    model_vqa_science.main(fill(SQA, ckpt=checkpoint, questions=questions / "sqa.json", images=images,
                                answers=tmp_path / "sqa.jsonl") + TINY)
    model_vqa_mmbench.main(fill(MMBENCH, ckpt=checkpoint, questions=questions / "mmbench.tsv",
                                answers=tmp_path / "mmbench.jsonl") + TINY)
    model_vqa_mmbench.main(fill(MMBENCH_CN, ckpt=checkpoint, questions=questions / "mmbench.tsv",
                                answers=tmp_path / "mmbench_cn.jsonl") + TINY)
    model_vqa.main(fill(MMVET, ckpt=checkpoint, questions=questions / "q.jsonl", images=images,
                        answers=tmp_path / "mmvet.jsonl") + TINY)
    prompts = {name: [r["prompt"] for r in chunks.read_jsonl(tmp_path / f"{name}.jsonl")]
               for name in ("sqa", "mmbench", "mmbench_cn", "mmvet")}
    assert all(len(p) == 5 for p in prompts.values())
    assert all(p.endswith("\nAnswer with the option's letter from the given choices directly.")
               for p in prompts["sqa"] + prompts["mmbench"])
    assert all(p.endswith("\n请直接回答选项字母。") for p in prompts["mmbench_cn"])
    assert prompts["mmbench"][0].splitlines()[-3:-1] == ["A. red", "B. blue"]
    assert all(p.startswith("<image>\n") and "Answer" not in p for p in prompts["mmvet"])


# --------------------------------------------------------------------------- training: translation
def test_llava_finetune_flags_become_ours(tmp_path):
    argv = fill(FINETUNE + " " + PDROP_TRAIN, llm="lmsys/vicuna-7b-v1.5", data="d", vision="v", adapter="a.bin",
                out="o", layer_list="[8,16,24]", ratio_list="[0.5,0.25,0.125]")
    ours = dict(zip(*[iter(to_train_argv(argv))] * 2))
    assert ours["--version"] == "vicuna_v1" and ours["--warmup_steps"] == "0.03" and ours["--eval_strategy"] == "no"
    assert Path(ours["--deepspeed"]) == REPO / "configs" / "deepspeed" / "zero3.json"  # LLaVA's ./scripts/zero3.json
    for gone in ("--mm_use_im_start_end", "--mm_use_im_patch_token", "--lazy_preprocess", "--warmup_ratio",
                 "--evaluation_strategy"):
        assert gone not in ours
    assert (ours["--layer_list"], ours["--image_token_ratio_list"]) == ("[8,16,24]", "[0.5,0.25,0.125]")
    assert to_train_argv(["--image_grid_pinpoints", "[(336, 672), (672, 336)]"]) == [
        "--image_grid_pinpoints", "[[336, 672], [672, 336]]"]
    assert to_train_argv(["--lazy_preprocess", "--version=plain"]) == ["--version", "plain"]  # bool without a value
    existing = tmp_path / "zero3.json"
    existing.write_text("{}")
    assert to_train_argv(["--deepspeed", str(existing)]) == ["--deepspeed", str(existing)]  # a file that exists wins


@pytest.mark.parametrize("flags, message", [
    (["--mm_use_im_start_end", "True"], "image start/end tokens are not supported"),
    (["--version", "mpt"], "MPT language models are not supported; ours are plain, vicuna_v1"),
    (["--image_aspect_ratio", "anyres_max_9"], "ours are pad, square, anyres"),
    (["--mm_projector_type", "linear"], "only mlp2x_gelu exists here"),
    (["--cache_dir", "/data/hf"], "set HF_HOME"),
    (["--warmup_ratio", "3"], "for a number of steps use --warmup_steps N"),
])
def test_llava_train_flags_without_equivalent_are_refused_in_one_line(flags, message, capsys):
    from llava.cli import cli_main

    with pytest.raises(SystemExit) as stop:
        cli_main(train_main, ["--model_name_or_path", "m", "--data_path", "d", "--output_dir", "o", *flags],
                 prog="llava.train.train")
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"llava.train.train: error: {flags[0]}") and message in err


def test_train_help_shows_config_and_the_llava_table(capsys):
    with pytest.raises(SystemExit) as stop:
        train_main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith("usage: python -m llava.train.train [--config FILE]")
    assert "--config FILE" in out and "LLaVA's training flags" in out and "--mm_use_im_start_end" in out


# --------------------------------------------------------------------------- training: end to end
@pytest.fixture
def llava_env(monkeypatch, tmp_path):
    """One process; wandb (LLaVA's --report_to wandb) disabled and kept in tmp_path; skips without wandb."""
    if not HAS_WANDB:
        pytest.skip("wandb (LLaVA's --report_to wandb) is in the `train` extra")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    return tmp_path


def without(argv: list[str], flag: str = "--deepspeed") -> list[str]:
    """``argv`` less ``flag`` and its value."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def test_llava_pretrain_then_pdrop_finetune_lines_train(assets, llava_env, caplog):
    """pretrain.sh's flags then the official pdrop_train/finetune.sh's, a step or two each, on the tiny assets."""
    tmp = llava_env
    paths = dict(llm=assets["llm"], vision=assets["vision"], data=assets["data"])
    pretrain = without(fill(PRETRAIN, out=tmp / "pre", **paths))
    trainer = train_main(pretrain + ["--max_steps", "1", "--use_cpu", "True"])
    assert trainer.state.global_step == 1 and (tmp / "pre" / "mm_projector.bin").is_file()
    assert trainer.args.bf16 and trainer.args.warmup_steps == 0.03 and trainer.args.eval_strategy == "no"
    finetune = without(fill(FINETUNE + " " + PDROP_TRAIN, out=tmp / "ft", adapter=tmp / "pre" / "mm_projector.bin",
                            layer_list="[1,2,3]", ratio_list="[0.5,0.25,0.125]", **paths))
    # --bf16 False keeps this run in float32; bf16 has its own test (test_llava_finetune_in_bf16)
    trainer = train_main(finetune + ["--max_steps", "2", "--use_cpu", "True", "--bf16", "False"])
    assert trainer.state.global_step == 2
    saved = json.loads((tmp / "ft" / "config.json").read_text())
    assert saved["pdrop"]["layer_list"] == [1, 2, 3] and saved["pdrop"]["image_token_ratio_list"] == [0.5, 0.25, 0.125]
    args = json.loads((tmp / "ft" / "llava_training_args.json").read_text())
    assert args["data_args"]["version"] == "vicuna_v1" and args["training_args"]["group_by_modality_length"] is True
    assert "--tf32 True ignored" in caplog.text  # no Ampere GPU here


def test_llava_finetune_in_bf16(assets, llava_env):
    """--bf16 True without DeepSpeed trains under autocast (the ranking keeps its scores in float32)."""
    paths = dict(llm=assets["llm"], vision=assets["vision"], data=assets["data"])
    finetune = without(without(fill(FINETUNE + " " + PDROP_TRAIN, out=llava_env / "ft", adapter="unused", **paths,
                                    layer_list="[1,2,3]", ratio_list="[0.5,0.25,0.125]")), "--pretrain_mm_mlp_adapter")
    trainer = train_main(finetune + ["--max_steps", "1", "--use_cpu", "True", "--per_device_train_batch_size", "2"])
    assert trainer.state.global_step == 1 and trainer.args.bf16


def test_train_mem_file_runs_as_llava_launches_it(tmp_path):
    """``python llava/train/train_mem.py`` (as deepspeed and torchrun start LLaVA's trainer): one-line errors."""
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(REPO / "llava" / "train" / "train_mem.py"), "--version", "llava_v0",
                             "--model_name_or_path", "m", "--data_path", "d", "--output_dir", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("llava.train.train: error: --version llava_v0")


@pytest.mark.integration
def test_llava_finetune_line_with_deepspeed_through_train_mem(assets, tmp_path):
    """LLaVA's finetune.sh as it is (ZeRO-3 via ./scripts/zero3.json, bf16), torchrun on one CPU process."""
    paths = dict(llm=assets["llm"], vision=assets["vision"], data=assets["data"])
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    pretrain = fill(PRETRAIN, out=tmp_path / "pre", **paths) + ["--max_steps", "1", "--use_cpu", "True"]
    finetune = fill(FINETUNE + " " + PDROP_TRAIN, out=tmp_path / "ft", adapter=tmp_path / "pre" / "mm_projector.bin",
                    layer_list="[1,2,3]", ratio_list="[0.5,0.25,0.125]", **paths)
    finetune += ["--max_steps", "2", "--use_cpu", "True"]
    for argv in (pretrain, finetune):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                        "29631", str(REPO / "llava" / "train" / "train_mem.py"), *argv], cwd=tmp_path, env=env,
                       check=True, capture_output=True)
    state = json.loads((tmp_path / "ft" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["pdrop"]["layer_list"] == [1, 2, 3]
