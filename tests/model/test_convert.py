"""The converter, on a tiny checkpoint this test writes in the original LLaVA layout."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModel, LlavaForConditionalGeneration

from llava.model import PDropLlavaForConditionalGeneration
from llava.model.convert import main as convert_main

from ..conftest import Sample, make_batch, position_ids_for, tiny_model

VOCAB = 127  # the original vocabulary; <image> becomes id 127 and the vocab is padded to 128


def write_original_checkpoint(model, path, with_schedule=True, embed_vision=False):
    """Reverse of the converter's mapping, written as haotian-liu/LLaVA saves a checkpoint."""
    text = model.config.text_config
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.language_model."):
            tensor = tensor[:VOCAB] if name.endswith("embed_tokens.weight") else tensor
            state["model." + name.removeprefix("model.language_model.")] = tensor.clone()
        elif name == "model.image_newline":
            state[name] = tensor.clone()
        elif name.startswith("model.multi_modal_projector.linear_"):
            index, param = name.removeprefix("model.multi_modal_projector.linear_").split(".")
            state[f"model.mm_projector.{0 if index == '1' else 2}.{param}"] = tensor.clone()
    state["lm_head.weight"] = model.lm_head.weight[:VOCAB].clone()
    vision_dir = path / "clip"
    CLIPVisionModel(model.config.vision_config).save_pretrained(vision_dir)
    tower = CLIPVisionModel.from_pretrained(vision_dir)
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(vision_dir)
    if embed_vision:
        for name, tensor in tower.state_dict().items():
            state["model.vision_tower.vision_tower.vision_model." + name] = tensor.clone()
    src = path / "original"
    src.mkdir()
    save_file(state, src / "model.safetensors")
    config = {"model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"], "hidden_size": text.hidden_size,
              "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
              "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
              "vocab_size": VOCAB, "max_position_embeddings": 512, "pad_token_id": 0, "mm_vision_tower": str(vision_dir),
              "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
              "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "tie_word_embeddings": False}
    if with_schedule:
        config.update(layer_list=[1, 2, 3], image_token_ratio_list=[0.5, 0.25, 0.125])
    if hasattr(model.config, "image_grid_pinpoints"):  # LLaVA-NeXT
        config.update(image_aspect_ratio="anyres", mm_patch_merge_type="spatial_unpad",
                      image_grid_pinpoints=model.config.image_grid_pinpoints)
    (src / "config.json").write_text(json.dumps(config))
    return src, vision_dir


@pytest.mark.parametrize("embed_vision", [False, True])
def test_round_trip_gives_the_same_model(tmp_path, embed_vision):
    model = tiny_model()
    src, vision_dir = write_original_checkpoint(model, tmp_path, embed_vision=embed_vision)
    dst = tmp_path / "hf"
    convert_main(["--src", str(src), "--dst", str(dst)] + ([] if embed_vision else ["--vision_tower", str(vision_dir)]))
    converted = PDropLlavaForConditionalGeneration.from_pretrained(dst, attn_implementation="eager")
    assert converted.pdrop_config == model.pdrop_config and converted.config.image_token_id == VOCAB
    batch = make_batch([Sample([5, 6], [7, 8])])
    with torch.no_grad():
        ours = converted(**batch, position_ids=position_ids_for(batch["attention_mask"])).logits[..., :VOCAB]
        theirs = model(**batch, position_ids=position_ids_for(batch["attention_mask"])).logits[..., :VOCAB]
    torch.testing.assert_close(ours, theirs)
    LlavaForConditionalGeneration.from_pretrained(dst)  # stock transformers loads it


def test_anyres_checkpoint_becomes_llava_next(tmp_path):
    from llava.model import PDropLlavaNextForConditionalGeneration

    from .test_llava_next import next_batch, next_model

    model = next_model()
    src, vision_dir = write_original_checkpoint(model, tmp_path)
    convert_main(["--src", str(src), "--dst", str(tmp_path / "hf"), "--vision_tower", str(vision_dir)])
    converted = PDropLlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    batch, _ = next_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(converted(**batch).logits[..., :VOCAB], model(**batch).logits[..., :VOCAB])


def test_bad_source_is_refused(tmp_path):
    src, _ = write_original_checkpoint(tiny_model(), tmp_path)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "mm_projector_type": "linear"}))
    with pytest.raises(ValueError, match="mm_projector_type='linear'"):
        convert_main(["--src", str(src), "--dst", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert_main(["--src", str(tmp_path), "--dst", str(tmp_path / "out2")])
    (src / "model.safetensors").unlink()
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"no \*.safetensors or pytorch_model\*.bin"):
        convert_main(["--src", str(src), "--dst", str(tmp_path / "out3")])


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_weights_load_as_tensors_only(tmp_path, monkeypatch):
    """torch < 2.6 loads with weights_only=False unless told; the environment variable makes 2.13 behave the same."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model = tiny_model()
    src, vision_dir = write_original_checkpoint(model, tmp_path)
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    convert_main(["--src", str(src), "--dst", str(tmp_path / "hf"), "--vision_tower", str(vision_dir)])
    assert PDropLlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").pdrop_config == model.pdrop_config
    marker = tmp_path / "code-ran"
    torch.save({"model.embed_tokens.weight": Payload(marker)}, src / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin holds more than tensors and loading it could run code"):
        convert_main(["--src", str(src), "--dst", str(tmp_path / "hf2"), "--vision_tower", str(vision_dir)])
    assert not marker.exists()
