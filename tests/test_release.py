"""The Hub release command: what the upload folder holds, that it loads, the card, refusals, the push calls.

Tiny random checkpoints in temporary folders; nothing touches the network (``HfApi`` is faked).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import (AutoProcessor, AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration,
                          LlavaNextForConditionalGeneration)

import llava.release as release
from llava.data.synthetic import make_tokenizer
from llava.model import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration
from llava.model.builder import build_random_llava
from llava.pdrop import PDropConfig
from llava.release import build_upload_folder, main, push

SCHEDULE = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])
TRAINING_ARGS = {
    "model_args": {"model_name_or_path": "lmsys/vicuna-7b-v1.5", "vision_tower": "openai/clip-vit-large-patch14-336",
                   "mm_projector_type": "mlp2x_gelu", "layer_list": "[1,2,3]",
                   "image_token_ratio_list": "[0.5,0.25,0.125]"},
    "data_args": {"data_path": "/data/llava/llava_v1_5_mix665k.json", "image_folder": "/data/llava/images",
                  "version": "vicuna_v1", "image_aspect_ratio": "pad"},
    "training_args": {"learning_rate": 2e-5, "mm_projector_lr": None, "num_train_epochs": 1.0,
                      "per_device_train_batch_size": 16, "global_batch_size": 128, "gradient_accumulation_steps": 1,
                      "deepspeed": "configs/deepspeed/zero3.json", "model_max_length": 2048,
                      "tune_mm_mlp_adapter": False, "lora_enable": False, "bits": 16, "bf16": True,
                      "hub_token": "hf_do_not_publish", "license": "apache-2.0"},
}
DECOYS = ("optimizer.pt", "scheduler.pt", "rng_state_0.pth", "training_args.bin", "trainer_state.json")
DECOY_DIRS = ("checkpoint-5", "global_step5", "adapter")
RELEASE_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json", "README.md", "llava_training_args.json"}


def make_checkpoint(path: Path, preset="tiny-llava", schedule=SCHEDULE, training_args=TRAINING_ARGS, decoys=True,
                    weights="safetensors"):
    """A checkpoint as training leaves it: model, tokenizer, image processor, arguments, training state."""
    model = build_random_llava(preset, schedule)
    if weights.startswith("bin"):  # an older save: config + pickled state dict (transformers 4 key layout)
        path.mkdir(parents=True)
        model.config.save_pretrained(path)
        state = model.state_dict()
        if weights == "bin-legacy":
            state = {legacy_key(k): v for k, v in state.items()}
        torch.save(state, path / "pytorch_model.bin")
    else:
        model.save_pretrained(path, **({"max_shard_size": "300KB"} if weights == "sharded" else {}))
    make_tokenizer().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    if training_args is not None:
        (path / "llava_training_args.json").write_text(json.dumps(training_args))
    if decoys:
        for name in DECOYS:
            (path / name).write_bytes(b"state")
        for name in DECOY_DIRS:
            (path / name).mkdir()
            (path / name / "config.json").write_text("{}")
    return path, model


def legacy_key(key: str) -> str:
    """transformers 4's LLaVA layout: the language model held its own lm_head, no ``model.`` wrapper."""
    for new, old in (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
                     ("model.multi_modal_projector.", "multi_modal_projector."), ("lm_head.", "language_model.lm_head.")):
        if key.startswith(new):
            return old + key[len(new):]
    return key


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(checkpoint, model, upload folder) of the tiny LLaVA with the schedule, built once."""
    root = tmp_path_factory.mktemp("release")
    checkpoint, model = make_checkpoint(root / "llava-tiny-pdrop")
    return checkpoint, model, build_upload_folder(checkpoint, "org/name")


def tree(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def front_matter(card: str) -> dict:
    _, yaml_block, _ = card.split("---\n", 2)
    return yaml.safe_load(yaml_block)


def assert_same_weights(loaded, model):
    expected = model.state_dict()
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for key in expected:
        assert torch.equal(state[key], expected[key]), key


# ------------------------------------------------------------------------------------------- folder


def test_folder_holds_release_files_and_no_training_state(released):
    checkpoint, _, folder = released
    assert folder == checkpoint.parent / "llava-tiny-pdrop-hub-upload"  # a sibling, not inside
    assert {p.name for p in folder.iterdir()} == RELEASE_FILES
    args = (folder / "llava_training_args.json").read_text()
    assert "hf_do_not_publish" not in args and json.loads(args)["data_args"] == {
        **TRAINING_ARGS["data_args"], "data_path": "llava_v1_5_mix665k.json", "image_folder": "images"}
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_checkpoint_is_never_written(tmp_path):
    checkpoint, _ = make_checkpoint(tmp_path / "ckpt", decoys=False)
    before = tree(checkpoint)
    build_upload_folder(checkpoint, "org/name")
    assert tree(checkpoint) == before


def test_release_loads_with_stock_transformers(released):
    _, model, folder = released
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlavaForConditionalGeneration"]
    assert_same_weights(LlavaForConditionalGeneration.from_pretrained(folder), model)
    text = "What color is the square?"
    assert AutoTokenizer.from_pretrained(folder)(text).input_ids == make_tokenizer()(text).input_ids
    assert type(AutoProcessor.from_pretrained(folder)).__name__ == "LlavaProcessor"


def test_pdrop_class_restores_the_schedule(released):
    _, _, folder = released
    assert PDropLlavaForConditionalGeneration.from_pretrained(folder).pdrop_config == SCHEDULE


# ------------------------------------------------------------------------------------------- card


def test_card_front_matter_and_sections(released):
    _, _, folder = released
    text = (folder / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert {"llava", "pyramiddrop"} <= set(meta["tags"])
    assert meta["base_model"] == "lmsys/vicuna-7b-v1.5" and meta["license"] == "apache-2.0"
    assert ModelCard.load(folder / "README.md").data.base_model == "lmsys/vicuna-7b-v1.5"
    for row in ("| 0 | 0-0 | 100 % | 16 |", "| 1 | 1-1 | 50 % | 8 |", "| 2 | 2-2 | 25 % | 4 |",
                "| 3 | 3-3 | 12.5 % | 2 |"):
        assert row in text
    for fact in ("openai/clip-vit-large-patch14-336", "`llava_v1_5_mix665k.json`", "| template | vicuna_v1 |",
                 "| learning rate | 2e-05 |", "| global batch | 128 |", "| epochs | 1 |", "| stage | finetuning |",
                 "| DeepSpeed config | zero3.json |", "| model_max_length | 2048 |"):
        assert fact in text, fact
    assert 'LlavaForConditionalGeneration.from_pretrained("org/name"' in text
    assert 'AutoProcessor.from_pretrained("org/name")' in text
    assert 'PDropLlavaForConditionalGeneration.from_pretrained("org/name"' in text
    assert "pdrop_config=PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])" in text  # an example valid for this depth
    assert "@inproceedings{xing2025pyramiddrop" in text and "2410.17247" in text


def test_next_checkpoint_gets_next_classes(tmp_path):
    checkpoint, model = make_checkpoint(tmp_path / "next", preset="tiny-llava-next", decoys=False)
    tokenizer = make_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tokenizer.save_pretrained(checkpoint)
    folder = build_upload_folder(checkpoint, "org/next", license="mit")
    assert (folder / "chat_template.jinja").is_file()
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlavaNextForConditionalGeneration"]
    text = (folder / "README.md").read_text()
    assert front_matter(text)["license"] == "mit" and "llava-next" in front_matter(text)["tags"]
    assert 'LlavaNextForConditionalGeneration.from_pretrained("org/next"' in text
    assert 'PDropLlavaNextForConditionalGeneration.from_pretrained("org/next"' in text
    assert "PDropLlavaForConditionalGeneration" not in text and " LlavaForConditionalGeneration" not in text
    assert "processor.apply_chat_template" in text and "| 3 | 3-3 | 12.5 % |\n" in text  # N0 varies: no count column
    assert_same_weights(LlavaNextForConditionalGeneration.from_pretrained(folder), model)
    assert PDropLlavaNextForConditionalGeneration.from_pretrained(folder).pdrop_config == SCHEDULE


def test_without_schedule_or_training_args_the_card_says_so(tmp_path):
    checkpoint, _ = make_checkpoint(tmp_path / "plain", schedule=None, training_args=None, decoys=False)
    config = json.loads((checkpoint / "config.json").read_text())
    config["architectures"] = ["PDropLlavaForConditionalGeneration"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    folder = build_upload_folder(checkpoint, "org/plain")
    text = (folder / "README.md").read_text()
    assert "trained without PyramidDrop" in text
    assert "Training arguments\n\nUnknown" in text and "base_model" not in front_matter(text)
    named = build_upload_folder(checkpoint, "org/plain", base_model_id="lmsys/vicuna-7b-v1.5")
    card = (named / "README.md").read_text()
    assert front_matter(card)["base_model"] == "lmsys/vicuna-7b-v1.5"
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlavaForConditionalGeneration"]
    assert not (folder / "llava_training_args.json").exists()
    assert PDropLlavaForConditionalGeneration.from_pretrained(folder).pdrop_config is None


# ------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("weights", ["bin", "bin-legacy"])
def test_pytorch_bin_is_converted_to_safetensors(tmp_path, weights):
    checkpoint, model = make_checkpoint(tmp_path / "bin", weights=weights, decoys=False)
    folder = build_upload_folder(checkpoint, "org/bin")
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and not [n for n in names if n.endswith(".bin") or n.startswith(".")]
    assert_same_weights(LlavaForConditionalGeneration.from_pretrained(folder), model)
    assert release.plan_upload(checkpoint).left_out["pytorch_model.bin"] == "converted to safetensors"


def test_sharded_safetensors_are_copied_with_their_index(tmp_path):
    checkpoint, model = make_checkpoint(tmp_path / "sharded", weights="sharded", decoys=False)
    shards = sorted(p.name for p in checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 1
    folder = build_upload_folder(checkpoint, "org/sharded")
    assert sorted(p.name for p in folder.glob("model-*.safetensors")) == shards
    assert (folder / "model.safetensors.index.json").is_file()
    assert_same_weights(LlavaForConditionalGeneration.from_pretrained(folder), model)


# ------------------------------------------------------------------------------------------- refusals


def _drop(*names):
    def edit(checkpoint: Path):
        for name in names:
            path = checkpoint / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return edit


def _model_type(value):
    def edit(checkpoint: Path):
        config = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": value}))
    return edit


@pytest.mark.parametrize("edit, error, match", [
    (lambda c: shutil.rmtree(c), FileNotFoundError, "does not exist"),
    (_drop("config.json"), FileNotFoundError, "no config.json"),
    (_model_type("llama"), ValueError, "model_type='llama' is not one of"),
    (_model_type("llava_llama"), ValueError, "llava.model.convert"),
    (_drop("model.safetensors"), FileNotFoundError, "has no weights"),
    (_drop("tokenizer.json", "tokenizer_config.json"), FileNotFoundError, "has no tokenizer: missing tokenizer_config"),
], ids=["missing-dir", "no-config", "not-llava", "original-format", "no-weights", "no-tokenizer"])
def test_bad_checkpoints_are_refused(tmp_path, edit, error, match):
    checkpoint, _ = make_checkpoint(tmp_path / "ckpt", decoys=False)
    edit(checkpoint)
    with pytest.raises(error, match=match):
        build_upload_folder(checkpoint, "org/name")
    assert [p.name for p in tmp_path.iterdir()] == (["ckpt"] if checkpoint.exists() else [])


def test_lora_only_checkpoint_names_the_fix(tmp_path):
    checkpoint, _ = make_checkpoint(tmp_path / "lora", decoys=True)
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="LoRA adapters only"):
        build_upload_folder(checkpoint, "org/name")


@pytest.mark.parametrize("repo_id", ["name", "org/team/name", "org/", "org/na--me", "org/name with space"])
def test_bad_repo_ids_are_refused(released, repo_id):
    checkpoint, _, _ = released
    with pytest.raises(ValueError, match="repo_id="):
        build_upload_folder(checkpoint, repo_id, checkpoint.parent / "unused")
    assert not (checkpoint.parent / "unused").exists()


def test_out_dir_never_inside_the_checkpoint_nor_around_it(released, tmp_path):
    checkpoint, _, _ = released
    for out_dir, match in ((checkpoint / "upload", "inside the checkpoint"), (checkpoint, "inside the checkpoint"),
                           (checkpoint.parent, "contains the checkpoint")):
        with pytest.raises(ValueError, match=match):
            build_upload_folder(checkpoint, "org/name", out_dir)
    assert not (checkpoint / "upload").exists()
    foreign = tmp_path / "my-notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by llava.release"):
        build_upload_folder(checkpoint, "org/name", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_rebuild_replaces_the_old_folder_only_when_complete(tmp_path, monkeypatch):
    checkpoint, _ = make_checkpoint(tmp_path / "ckpt", decoys=False)
    out = tmp_path / "upload"
    build_upload_folder(checkpoint, "org/name", out)
    (out / "stale.txt").write_text("from an older release")
    monkeypatch.setattr(release, "model_card", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_upload_folder(checkpoint, "org/name", out)
    assert (out / "stale.txt").is_file() and (out / "README.md").is_file()  # old folder untouched
    monkeypatch.undo()
    build_upload_folder(checkpoint, "org/name", out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "upload"]  # no staging or old copy left


# ------------------------------------------------------------------------------------------- command and push


class FakeHfApi:
    """Records what ``push`` asks of the Hub."""

    calls: list = []
    public_repo = False

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def repo_info(self, repo_id, **kwargs):
        return type("Info", (), {"private": not self.public_repo})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


@pytest.fixture
def fake_hub(monkeypatch):
    monkeypatch.setattr(FakeHfApi, "calls", [])
    monkeypatch.setattr(release, "HfApi", FakeHfApi)
    return FakeHfApi


def test_main_dry_run_lists_the_folder_and_touches_no_hub(released, tmp_path, fake_hub, capsys):
    checkpoint, _, _ = released
    main(["--checkpoint", str(checkpoint), "--repo_id", "org/name", "--dry_run", "--out_dir", str(tmp_path / "up")])
    out = capsys.readouterr().out
    assert f"upload folder: {tmp_path / 'up'}" in out and "model.safetensors" in out and "kB" in out
    for name in DECOYS + tuple(f"{d}/" for d in DECOY_DIRS):
        assert name in out.split("left out of")[1], name
    assert "dry run: nothing uploaded" in out and fake_hub.calls == []


def test_main_pushes_the_folder(released, tmp_path, fake_hub, capsys):
    checkpoint, _, _ = released
    main(["--checkpoint", str(checkpoint), "--repo_id", "org/name", "--private", "--out_dir", str(tmp_path / "up"),
          "--commit_message", "first release"])
    assert fake_hub.calls == [
        ("init", None),
        ("create_repo", "org/name", {"private": True, "exist_ok": True, "repo_type": "model"}),
        ("upload_folder", {"folder_path": str(tmp_path / "up"), "repo_id": "org/name", "repo_type": "model",
                           "commit_message": "first release", "allow_patterns": sorted(RELEASE_FILES)}),
    ]
    assert "https://huggingface.co/org/name/commit/abc" in capsys.readouterr().out


def test_push_returns_the_commit_url_and_keeps_private_releases_private(released, fake_hub, monkeypatch):
    _, _, folder = released
    url = push(folder, "org/name", private=False, commit_message="m", token="hf_x")
    assert url == "https://huggingface.co/org/name/commit/abc"
    assert fake_hub.calls[0] == ("init", "hf_x") and fake_hub.calls[1][2]["private"] is False
    monkeypatch.setattr(FakeHfApi, "public_repo", True)
    with pytest.raises(PermissionError, match="already exists and is public"):
        push(folder, "org/name", private=True, commit_message="m")
    assert fake_hub.calls[-1][0] == "create_repo"  # nothing uploaded


# ------------------------------------------------------------------------------------------- privacy and what ran


def local_checkpoint(root: Path, **extra_state):
    """A checkpoint trained from local folders, as this machine leaves it: its paths in every file that holds one."""
    llm, tower = root / "models" / "my-vicuna", root / "models" / "my-clip"
    llm.mkdir(parents=True)
    tower.mkdir()
    args = json.loads(json.dumps(TRAINING_ARGS))
    args["model_args"].update(model_name_or_path=str(llm), vision_tower=str(tower),
                              pretrain_mm_mlp_adapter=str(root / "pre" / "mm_projector.bin"))
    args["data_args"].update(data_path=f"{root}/data/a.json,{root}/data/b.jsonl", image_folder=str(root / "images"))
    args["training_args"].update(output_dir=str(root / "run"), logging_dir=str(root / "run" / "runs"),
                                 run_name=str(root / "run"), max_steps=12, deepspeed=str(root / "zero3.json"))
    args["local_paths"] = ["model_name_or_path", "vision_tower"]
    checkpoint, model = make_checkpoint(root / "run", training_args=args, decoys=False)
    config = json.loads((checkpoint / "config.json").read_text())
    config["_name_or_path"] = str(checkpoint)
    config["text_config"]["_name_or_path"] = str(llm)
    config["vision_config"]["_name_or_path"] = str(tower)
    (checkpoint / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((checkpoint / "tokenizer_config.json").read_text())
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "name_or_path": str(llm)}))
    (checkpoint / "trainer_state.json").write_text(json.dumps(
        {"global_step": 12, "max_steps": 12, "epoch": 0.1371, "num_train_epochs": 1, **extra_state}))
    return checkpoint, model


def test_release_publishes_no_local_path(tmp_path):
    checkpoint, model = local_checkpoint(tmp_path / "machine")
    folder = build_upload_folder(checkpoint, "org/name", tmp_path / "up")
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":
            assert str(tmp_path) not in path.read_text(), path.name
    args = json.loads((folder / "llava_training_args.json").read_text())
    assert args["model_args"]["model_name_or_path"] == "my-vicuna" and args["model_args"]["vision_tower"] == "my-clip"
    assert args["data_args"]["data_path"] == "a.json,b.jsonl" and args["training_args"]["output_dir"] == "run"
    assert args["training_args"]["deepspeed"] == "zero3.json"
    card = (folder / "README.md").read_text()
    assert "| Base language model | `my-vicuna` (llama," in card
    assert "| Vision tower | `my-clip` (clip_vision_model," in card
    assert "base_model" not in front_matter(card)  # a folder name is not a Hub id
    assert_same_weights(LlavaForConditionalGeneration.from_pretrained(folder), model)

    named = build_upload_folder(checkpoint, "org/name", tmp_path / "up", base_model_id="lmsys/vicuna-7b-v1.5",
                                vision_tower_id="openai/clip-vit-large-patch14-336")
    card = (named / "README.md").read_text()
    assert front_matter(card)["base_model"] == "lmsys/vicuna-7b-v1.5"
    assert "`openai/clip-vit-large-patch14-336` (clip_vision_model" in card
    assert json.loads((named / "llava_training_args.json").read_text())["model_args"]["model_name_or_path"] == \
        "lmsys/vicuna-7b-v1.5"


def test_a_path_left_in_any_file_stops_the_release(tmp_path):
    checkpoint, _ = local_checkpoint(tmp_path / "machine")
    (checkpoint / "chat_template.jinja").write_text(f"{{# written in {checkpoint} #}}{{{{ messages }}}}")
    with pytest.raises(ValueError, match=f"would publish local paths: \\['chat_template.jinja \\({checkpoint}"):
        build_upload_folder(checkpoint, "org/name", tmp_path / "up")
    assert not (tmp_path / "up").exists()


def test_card_reports_what_ran_with_quicklook_layer_numbers(tmp_path, capsys):
    from llava.quicklook import main as quicklook

    checkpoint, _ = local_checkpoint(tmp_path / "machine")
    card = (build_upload_folder(checkpoint, "org/name", tmp_path / "up") / "README.md").read_text()
    assert "| optimizer steps | 12 (max_steps=12) |" in card
    assert "| epochs | 0.137 (what max_steps=12 amounts to) |" in card
    quicklook([])  # the tiny preset and schedule: the same model shape as this checkpoint
    printed = re.findall(r"layers (\d+-\d+)", capsys.readouterr().out)
    carded = re.findall(r"^\| \d \| (\d+-\d+) \|", card, flags=re.MULTILINE)
    assert printed and carded == printed
    assert "image tokens are dropped before layers 1, 2, 3" in card


def test_release_tokenizer_pads_on_the_left(tmp_path):
    checkpoint, _ = make_checkpoint(tmp_path / "ckpt", decoys=False)
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "right"}))
    folder = build_upload_folder(checkpoint, "org/name")
    assert AutoTokenizer.from_pretrained(folder).padding_side == "left"
    assert any("padding_side 'right' -> 'left'" in note for note in release.plan_upload(checkpoint).notes)


def test_dry_run_lists_exactly_the_files_push_uploads(released, tmp_path, fake_hub, capsys):
    checkpoint, _, _ = released
    main(["--checkpoint", str(checkpoint), "--repo_id", "org/name", "--dry_run", "--out_dir", str(tmp_path / "up")])
    listed = capsys.readouterr().out.split("nothing else\n")[1].split("left out of")[0].split()[::3]
    push(tmp_path / "up", "org/name", private=False, commit_message="m")
    uploaded = fake_hub.calls[-1][1]["allow_patterns"]
    assert listed == uploaded == sorted(RELEASE_FILES)


def test_a_trained_run_is_released_without_paths_of_this_machine(assets, tmp_path):
    from llava.train.train import main as train
    from tests.train.conftest import train_argv

    out = tmp_path / "run"
    train(train_argv(assets, out, max_steps=2, save_steps=2))
    assert json.loads((out / "llava_training_args.json").read_text())["local_paths"] == ["model_name_or_path",
                                                                                          "vision_tower"]
    folder = build_upload_folder(out, "org/name")
    roots = {str(tmp_path), str(assets["llm"].parent)}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":
            text = path.read_text()
            assert not [root for root in roots if root in text], path.name
    card = (folder / "README.md").read_text()
    assert "| optimizer steps | 2 (max_steps=2) |" in card and "| Base language model | `llm` (llama" in card
