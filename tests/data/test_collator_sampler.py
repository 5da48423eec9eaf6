"""Collator and modality-grouped sampler; end to end: dataset + collator batches train the PyramidDrop model."""

from __future__ import annotations

import math
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, LlavaConfig, LlavaNextConfig

from llava.data import DataCollatorForSupervisedDataset, LazySupervisedDataset, ModalityLengthGroupedSampler
from llava.model import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration
from llava.pdrop import PDropConfig

from .conftest import PINPOINTS, turns, write_records

PAD = 3


def sample(n: int, images: torch.Tensor | None = None, sizes: torch.Tensor | None = None, sample_id="s") -> dict:
    out = {"input_ids": torch.arange(10, 10 + n), "labels": torch.arange(10, 10 + n), "id": sample_id}
    if images is not None:
        out["pixel_values"] = images
    if sizes is not None:
        out["image_sizes"] = sizes
    return out


# ------------------------------------------------------------------------------------------- collator
def test_collator_pads_right_and_concatenates_images():
    first, second = torch.randn(1, 3, 28, 28), torch.randn(2, 3, 28, 28)
    batch = DataCollatorForSupervisedDataset(PAD)([sample(4, first, sample_id="a"), sample(2, sample_id="b"),
                                                  sample(6, second, sample_id="c")])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "ids", "pixel_values"}
    assert batch["ids"] == ["a", "b", "c"]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, 6)
    assert batch["input_ids"][1].tolist() == [10, 11] + [PAD] * 4
    assert batch["labels"][0].tolist() == [10, 11, 12, 13, -100, -100]
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 6]
    assert torch.equal(batch["pixel_values"], torch.cat([first, second]))


def test_collator_text_only_batch_has_no_pixels():
    batch = DataCollatorForSupervisedDataset(PAD)([sample(3), sample(5)])
    assert "pixel_values" not in batch and "image_sizes" not in batch


def test_collator_anyres_pads_the_crop_dimension(tokenizer, next_processor, tmp_path):
    """Two images of different aspect ratio get different crop counts; the batch pads them to the largest."""
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "square.png")
    Image.new("RGB", (56, 28), (9, 9, 9)).save(tmp_path / "wide.png")
    records = [{"id": n, "image": f"{n}.png", "conversations": turns("<image>\nWhat?", "that")}
               for n in ("wide", "square")]
    dataset = LazySupervisedDataset(write_records(tmp_path, records), tokenizer, next_processor,
                                    image_folder=str(tmp_path), image_aspect_ratio="anyres")
    wide, square = dataset[0], dataset[1]
    assert wide["pixel_values"].shape[1] == 3 and square["pixel_values"].shape[1] == 5  # base + 2 vs base + 4
    batch = DataCollatorForSupervisedDataset(tokenizer.pad_token_id)([wide, square])
    assert batch["pixel_values"].shape == (2, 5, 3, 28, 28)
    assert torch.equal(batch["pixel_values"][0, :3], wide["pixel_values"][0])
    assert not batch["pixel_values"][0, 3:].any()
    assert batch["image_sizes"].tolist() == [[28, 56], [40, 40]]


# -------------------------------------------------------------------------------------------- sampler
def modality_lengths(n_image: int, n_text: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 500, (n_image + n_text,), generator=gen).tolist()
    signs = [1] * n_image + [-1] * n_text
    order = torch.randperm(len(signs), generator=gen).tolist()
    return [lengths[i] * signs[order[i]] for i in range(len(signs))]


@pytest.mark.parametrize("batch_size,world_size,n_image,n_text", [(4, 1, 37, 22), (2, 3, 50, 13), (3, 2, 30, 0),
                                                                  (2, 2, 0, 9), (4, 2, 16, 8)])
def test_sampler_groups_by_modality_and_length(batch_size, world_size, n_image, n_text):
    lengths = modality_lengths(n_image, n_text)
    sampler = ModalityLengthGroupedSampler(batch_size, world_size, lengths, seed=3)
    order = list(sampler)
    assert len(sampler) == len(order) and sorted(order) == list(range(len(lengths)))  # each index exactly once
    assert order == list(sampler)  # deterministic
    megabatch = batch_size * world_size
    full = (n_image // megabatch + n_text // megabatch) * megabatch
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    mixed = [b for b in batches if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1 and all(batches.index(b) * batch_size >= full for b in mixed)  # only in the leftovers
    for start in range(0, full, megabatch):  # inside a megabatch: one modality, ranks get the longest first
        group = order[start:start + megabatch]
        assert len({lengths[i] > 0 for i in group}) == 1
        per_rank = [group[r * batch_size:(r + 1) * batch_size] for r in range(world_size)]
        firsts = sorted(abs(lengths[b[0]]) for b in per_rank)
        assert firsts[-1] == max(abs(lengths[i]) for i in group)
        for batch in per_rank:
            assert [abs(lengths[i]) for i in batch] == sorted((abs(lengths[i]) for i in batch), reverse=True)


def test_sampler_epochs_and_seeds_change_the_order():
    lengths = modality_lengths(40, 20)
    sampler = ModalityLengthGroupedSampler(4, 2, lengths, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second and sorted(first) == sorted(second)
    again = ModalityLengthGroupedSampler(4, 2, lengths, seed=0)
    again.set_epoch(1)
    assert list(again) == second
    assert list(ModalityLengthGroupedSampler(4, 2, lengths, seed=1)) != first


def test_sampler_balances_the_ranks_of_a_megabatch():
    """Each rank's batch of a megabatch carries about the same number of tokens (no rank waits for the others)."""
    lengths = [1000, 900, 800, 700, 60, 50, 40, 30]
    order = list(ModalityLengthGroupedSampler(2, 4, lengths, seed=0))
    rank_batches = [order[r * 2:(r + 1) * 2] for r in range(4)]
    assert sorted(sorted(b) for b in rank_batches) == [[0, 7], [1, 6], [2, 5], [3, 4]]


# -------------------------------------------------------------------------------------------- end to end
def tiny_model_config(assets, tokenizer, image_token_id: int, anyres: bool):
    text = AutoConfig.from_pretrained(assets["llm"])
    text.vocab_size = len(tokenizer)  # the tiny vocabulary + <image>
    vision = AutoConfig.from_pretrained(assets["vision"])
    kwargs = dict(text_config=text, vision_config=vision, image_token_id=image_token_id, vision_feature_layer=-2,
                  vision_feature_select_strategy="default")
    if anyres:
        return LlavaNextConfig(image_grid_pinpoints=PINPOINTS, **kwargs)
    return LlavaConfig(**kwargs)


@pytest.mark.parametrize("anyres", [False, True], ids=["llava-pad", "llava-next-anyres"])
def test_dataset_batches_train_the_model(anyres, assets, tokenizer, processor, next_processor):
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = tiny_model_config(assets, tokenizer, image_token_id, anyres)
    model_class = PDropLlavaNextForConditionalGeneration if anyres else PDropLlavaForConditionalGeneration
    torch.manual_seed(0)
    model = model_class(config)
    model.set_pdrop_config(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]))
    dataset = LazySupervisedDataset(str(assets["data"] / "finetune.json"), tokenizer,
                                    next_processor if anyres else processor, template="vicuna_v1",
                                    image_folder=str(assets["data"] / "images"),
                                    image_aspect_ratio="anyres" if anyres else "pad")
    ids = dataset.records["id"][:]
    picks = [next(i for i, name in enumerate(ids) if name.startswith(kind)) for kind in ("vqa", "pair", "text")]
    batch = DataCollatorForSupervisedDataset(tokenizer.pad_token_id)([dataset[i] for i in picks])
    batch.pop("ids")
    assert batch["pixel_values"].shape[0] == 3  # one image, two images, none
    out = model(**batch)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
