"""Assembling a LLaVA from an LLM and a CLIP tower (the command and what it writes)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor, CLIPVisionModel

from llava.model.assemble import main, projector_key
from llava.model.builder import load_llava


@pytest.mark.parametrize(("merge", "model_type"), [("flat", "llava"), ("spatial_unpad", "llava_next")])
def test_assemble_command_reuses_the_llm_and_tower_and_loads_back(assets, tmp_path, merge, model_type):
    out = tmp_path / merge
    main(["--llm", str(assets["llm"]), "--vision_tower", str(assets["vision"]), "--out", str(out),
          "--mm_patch_merge_type", merge])
    model, processor = load_llava(str(out), attn_implementation="eager")
    assert model.config.model_type == model_type and model.pdrop_config is None
    llm = AutoModelForCausalLM.from_pretrained(assets["llm"])
    assert torch.equal(model.model.language_model.layers[1].mlp.up_proj.weight, llm.model.layers[1].mlp.up_proj.weight)
    tower = CLIPVisionModel.from_pretrained(assets["vision"])
    reloaded = dict(model.model.vision_tower.named_parameters())
    assert all(torch.equal(reloaded[name], param) for name, param in tower.named_parameters())
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == model.config.image_token_id == len(llm.get_input_embeddings().weight)
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    saved = AutoProcessor.from_pretrained(out).tokenizer  # saved for generation: batches pad on the left
    batch = saved(["What color?", "What color is the big square?"], padding=True, return_tensors="pt")
    assert saved.padding_side == "left" and batch.attention_mask[:, -1].tolist() == [1, 1]
    assert batch.attention_mask[0, 0] == 0


def test_projector_names_of_llava_and_ours_map_to_one_layout():
    for name in ("model.mm_projector.0.weight", "mm_projector.0.weight", "model.multi_modal_projector.linear_1.weight",
                 "linear_1.weight"):
        assert projector_key(name) == "linear_1.weight"
    assert projector_key("model.mm_projector.2.bias") == "linear_2.bias"
