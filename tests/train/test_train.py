"""Training in one CPU process: stages, what trains, saves, resume, LoRA, bad arguments."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoProcessor, LlavaForConditionalGeneration

from llava.model import PDropLlavaForConditionalGeneration
from llava.model.assemble import projector_key
from llava.train.train import main, parse_args
from tests.train.conftest import StopAt, train_argv


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_pretrain_trains_the_projector_only_and_saves_it_alone(assets, tmp_path):
    out = tmp_path / "pretrain"
    trainer = main(train_argv(assets, out, version="plain", data_path=assets["data"] / "pretrain.json",
                              tune_mm_mlp_adapter=True, learning_rate=1e-2, max_steps=6, save_steps=3))
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("multi_modal_projector" in n for n in trained)
    saved = PDropLlavaForConditionalGeneration.from_pretrained(out)
    start = AutoModelForCausalLM.from_pretrained(assets["llm"])
    # the language model is unchanged, the projector is the one saved alone (LLaVA's key names)
    assert torch.equal(saved.model.language_model.layers[0].self_attn.q_proj.weight,
                       start.model.layers[0].self_attn.q_proj.weight)
    projector = torch.load(out / "mm_projector.bin", weights_only=True)
    assert sorted(projector) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                                 "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    trained = dict(saved.model.multi_modal_projector.named_parameters())
    for name, tensor in projector.items():
        assert torch.equal(tensor, trained[projector_key(name)])
    assert (out / "checkpoint-6" / "mm_projector.bin").is_file()
    assert not (out / ".staging").exists()
    assert json.loads((out / "config.json").read_text())["pdrop"]["layer_list"] == [1, 2, 3]


def test_finetune_from_pretrained_projector_loss_goes_down_and_reloads(assets, tmp_path):
    pre = tmp_path / "pre"
    main(train_argv(assets, pre, version="plain", data_path=assets["data"] / "pretrain.json",
                    tune_mm_mlp_adapter=True, learning_rate=1e-2, max_steps=3, save_steps=10))
    out = tmp_path / "ft"
    trainer = main(train_argv(assets, out, pretrain_mm_mlp_adapter=pre / "mm_projector.bin", max_steps=12,
                              save_steps=100, group_by_modality_length=True))
    history = losses(trainer)
    assert sum(history[-3:]) / 3 < sum(history[:3]) / 3
    model = PDropLlavaForConditionalGeneration.from_pretrained(out)
    assert model.pdrop_config.layer_list == (1, 2, 3)
    stock = LlavaForConditionalGeneration.from_pretrained(out)
    for name, tensor in stock.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    args = json.loads((out / "llava_training_args.json").read_text())
    assert args["model_args"]["layer_list"] == "[1,2,3]" and args["data_args"]["version"] == "vicuna_v1"


def test_resume_continues_the_same_run(assets, tmp_path):
    straight = tmp_path / "straight"
    main(train_argv(assets, straight, max_steps=4, save_steps=2))
    resumed = tmp_path / "resumed"
    main(train_argv(assets, resumed, max_steps=4, save_steps=2), callbacks=[StopAt(2)])
    assert (resumed / "checkpoint-2").is_dir() and not (resumed / "checkpoint-4").exists()
    (resumed / ".staging" / "checkpoint-3").mkdir(parents=True)  # what a save killed midway leaves
    trainer = main(train_argv(assets, resumed, max_steps=4, save_steps=2))  # resumes automatically
    assert trainer.state.global_step == 4
    assert not (resumed / ".staging").exists()
    a, b = weights(straight), weights(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_saved_processors_pad_on_the_left_and_training_pads_on_the_right(assets, tmp_path):
    """The saved tokenizer serves generation (left padding); the training collator pads on the right itself."""
    first = tmp_path / "first"
    trainer = main(train_argv(assets, first, max_steps=2, save_steps=2))
    right = AutoProcessor.from_pretrained(first)
    right.tokenizer.padding_side = "right"  # a LLaVA checkpoint saved by other code
    right.save_pretrained(first)
    second = tmp_path / "second"
    main(train_argv(assets, second, model_name_or_path=first, vision_tower=None, max_steps=2, save_steps=2))
    for folder in (first / "checkpoint-2", second, second / "checkpoint-2"):
        tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
        batch = tokenizer(["red", "What color is the big square?"], padding=True, return_tensors="pt")
        assert tokenizer.padding_side == "left" and batch.attention_mask[0].tolist()[0] == 0, folder
    dataset = trainer.train_dataset
    short, long = sorted((dataset[i] for i in range(4)), key=lambda sample: len(sample["input_ids"]))[::3]
    collated = trainer.data_collator([short, long])
    assert collated["attention_mask"][:, 0].tolist() == [1, 1] and collated["attention_mask"][0, -1] == 0


def test_lora_saves_adapters_and_a_merged_standard_checkpoint(assets, tmp_path):
    out = tmp_path / "lora"
    main(train_argv(assets, out, lora_enable=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_steps=3,
                    save_steps=100))
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")  # what was trained
    assert any("language_model" in n and "lora_A" in n for n in adapter)
    assert any("multi_modal_projector" in n for n in adapter)
    assert not any("vision_tower" in n for n in adapter)
    merged = LlavaForConditionalGeneration.from_pretrained(out)
    assert not any("lora" in n for n in merged.state_dict())


@pytest.mark.parametrize(("overrides", "message"), [
    ({"vision_tower": None}, "pass --vision_tower"),
    ({"image_aspect_ratio": "anyres"}, "needs a LLaVA-NeXT model"),
    ({"bits": 4, "lora_enable": True}, "needs a CUDA GPU"),
    ({"bits": 4}, "add --lora_enable"),
    ({"layer_list": "[1,2,9]"}, "layer_list"),
    ({"pdrop_lambda": 0.5, "layer_list": "[1,2,3]"}, "not both"),
])
def test_bad_arguments_are_refused(assets, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        main(train_argv(assets, tmp_path / "x", **overrides))


def test_config_file_gives_defaults_and_flags_override(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"description": "d", "model_name_or_path": "m", "data_path": "d.json",
                                  "output_dir": str(tmp_path), "learning_rate": 1e-3, "use_cpu": True,
                                  "per_device_train_batch_size": 2, "global_batch_size": 8}))
    model_args, data_args, args = parse_args(["--config", str(config), "--learning_rate", "5e-4"])
    assert (model_args.model_name_or_path, data_args.data_path, args.learning_rate) == ("m", "d.json", 5e-4)
    assert args.gradient_accumulation_steps == 4
    config.write_text(json.dumps({"lerning_rate": 1}))
    with pytest.raises(ValueError, match="lerning_rate"):
        parse_args(["--config", str(config)])
    config.write_text(json.dumps({"model_name_or_path": "m", "data_path": "d", "output_dir": str(tmp_path),
                                  "per_device_train_batch_size": 3, "global_batch_size": 8}))
    with pytest.raises(ValueError, match="not a multiple"):
        parse_args(["--config", str(config)])
