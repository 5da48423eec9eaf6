"""``--train_focus_module``: a short CPU run on the tiny assets lowers the KL; what is saved; resume; refusals."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlavaNextForConditionalGeneration

from llava.model import PDropLlavaNextForConditionalGeneration
from llava.pyramid.focus_module import FOCUS_MODULE_FILE, focus_module_of, read_metadata
from llava.train.train import main
from tests.pyramid.checkpoint import save_tiny_next
from tests.train.conftest import StopAt, train_argv


@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory):
    """A tiny LLaVA-NeXT with the tiny assets' tokenizer (the teacher: random, but its attention is a target)."""
    return save_tiny_next(tmp_path_factory.mktemp("next") / "ckpt")


def focus_argv(assets, checkpoint, out, **overrides):
    flags = dict(model_name_or_path=checkpoint, vision_tower=None, image_aspect_ratio="anyres", layer_list=None,
                 image_token_ratio_list=None, no_pdrop=True, train_focus_module=True, focus_module_layers=1,
                 focus_distill_layers="[2,3]", max_steps=24, save_steps=12, learning_rate=3e-3)
    flags.update(overrides)
    return train_argv(assets, out, **flags)


def kl_history(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_training_lowers_the_kl_trains_the_module_only_and_saves_it_beside_a_stock_checkpoint(
        assets, next_checkpoint, tmp_path):
    out = tmp_path / "rfm"
    trainer = main(focus_argv(assets, next_checkpoint, out))
    history = kl_history(trainer)
    assert sum(history[-4:]) / 4 < 0.8 * sum(history[:4]) / 4, history
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all(name.startswith("focus_module.") for name in trained)
    # the LLaVA weights are the input checkpoint's, untouched, and stock transformers loads the folder
    stock = LlavaNextForConditionalGeneration.from_pretrained(out)
    start = LlavaNextForConditionalGeneration.from_pretrained(next_checkpoint)
    for name, tensor in start.state_dict().items():
        assert torch.equal(tensor, stock.state_dict()[name]), name
    assert not any("focus_module" in key for key in load_file(out / "model.safetensors"))
    assert read_metadata(out) == {"focus_layer": 1, "distill_layers": [2, 3], "num_hidden_layers": 4,
                                  "hidden_size": 64}
    assert (out / "checkpoint-12" / FOCUS_MODULE_FILE).is_file()
    # the driver's loader finds it next to the checkpoint: the trained weights, not the LLM's copies
    model = PDropLlavaNextForConditionalGeneration.from_pretrained(out)
    module = focus_module_of(model)
    saved = load_file(out / FOCUS_MODULE_FILE)
    assert torch.equal(module.layers[0].self_attn.q_proj.weight, saved["layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(saved["layers.0.self_attn.q_proj.weight"],
                           start.model.language_model.layers[0].self_attn.q_proj.weight)


def test_resume_continues_the_focus_module_run(assets, next_checkpoint, tmp_path):
    straight = tmp_path / "straight"
    main(focus_argv(assets, next_checkpoint, straight, max_steps=8, save_steps=4))
    resumed = tmp_path / "resumed"
    main(focus_argv(assets, next_checkpoint, resumed, max_steps=8, save_steps=4), callbacks=[StopAt(4)])
    assert (resumed / "checkpoint-4" / FOCUS_MODULE_FILE).is_file()
    main(focus_argv(assets, next_checkpoint, resumed, max_steps=8, save_steps=4))
    a, b = load_file(straight / FOCUS_MODULE_FILE), load_file(resumed / FOCUS_MODULE_FILE)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    ({"lora_enable": True}, "trains the focus module alone: drop --lora_enable"),
    ({"focus_distill_layers": "[4]"}, r"layers are 0 \.\. 3"),
    ({"focus_module_layers": 4}, r"runs 1 \.\. 3 layers"),
])
def test_bad_focus_module_arguments_are_refused(assets, next_checkpoint, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        main(focus_argv(assets, next_checkpoint, tmp_path / "bad", **overrides))


def test_a_llava_1_5_model_is_refused(assets, tmp_path):
    with pytest.raises(ValueError, match="focus of a LLaVA-NeXT checkpoint, not of a 'llava' model"):
        main(train_argv(assets, tmp_path / "bad", train_focus_module=True, layer_list=None,
                        image_token_ratio_list=None, no_pdrop=True))
