"""The LLaVA JSON dataset: the records index, its validation errors, samples, bad images and length limits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.data import ImageError, ImagePreprocessor, LazySupervisedDataset, load_image, load_llava_records
from llava.data.images import expand_to_square
from llava.data.templates import IGNORE_INDEX

from .conftest import turns, write_records

RECORDS = [
    {"id": "one", "image": "a.png", "conversations": turns("<image>\nWhat color?", "red")},
    {"id": 7, "image": ["a.png", "b.png"], "conversations": turns("<image> and <image>: same?", "no", "Sure?", "yes")},
    {"conversations": turns("What is one plus one?", "two"), "model": "extra fields are dropped"},
]


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 20), (200, 40, 40)).save(folder / "a.png")
    Image.new("RGB", (20, 48), (40, 40, 200)).save(folder / "b.png")
    return folder


def make_dataset(tmp_path, tokenizer, processor, records, image_dir=None, **kwargs):
    path = write_records(tmp_path, records, kwargs.pop("name", "data.json"))
    return LazySupervisedDataset(path, tokenizer, processor, image_folder=str(image_dir) if image_dir else None,
                                 **kwargs)


# ---------------------------------------------------------------------------------------------- index
@pytest.mark.parametrize("name", ["data.json", "data.jsonl"])
def test_records_are_normalised(tmp_path, name):
    records = load_llava_records(write_records(tmp_path, RECORDS, name))
    assert records.column_names == ["id", "images", "conversations", "num_words", "has_answer"]
    assert records["id"][:] == ["one", "7", "2"]  # a missing id is the record's index
    assert records["images"][:] == [["a.png"], ["a.png", "b.png"], []]  # str, list or absent
    assert records[1]["conversations"][2] == {"from": "human", "value": "Sure?"}
    assert records["num_words"][:] == [4, 7, 6]  # "<image>" counts as a word
    assert all(records["has_answer"][:])


def test_several_files_and_reindex_after_an_edit(tmp_path):
    first = write_records(tmp_path, RECORDS[:1], "a.json")
    second = write_records(tmp_path, RECORDS[2:], "b.jsonl")
    records = load_llava_records(f"{first}, {second}")
    assert records["id"][:] == ["one", "b.jsonl:0"]
    edited = dict(RECORDS[0], id="edited")
    write_records(tmp_path, [edited, edited], "a.json")
    assert load_llava_records(f"{first},{second}")["id"][:] == ["edited", "edited", "b.jsonl:0"]
    assert load_llava_records(f"{first},{second}", num_proc=2)["id"][:] == ["edited", "edited", "b.jsonl:0"]


def test_bad_record_is_named_with_several_processes(tmp_path):
    good = write_records(tmp_path, RECORDS, "good.json")
    bad = write_records(tmp_path, [RECORDS[0], {"id": "x", "conversations": "hi"}], "bad.jsonl")
    with pytest.raises(ValueError, match="bad.jsonl: record 1 \\(id x\\) has no 'conversations' list"):
        load_llava_records(f"{good},{bad}", num_proc=2)


@pytest.mark.parametrize("bad,message", [
    ("not a record", "is a str, not a dict"),
    ({"id": "x", "image": "a.png"}, "no 'conversations' list"),
    ({"id": "x", "conversations": [{"value": "hi"}]}, "turn 0 needs 'from' and 'value'"),
    ({"id": "x", "conversations": [{"from": "bot", "value": "hi"}]}, "turn 0 is from 'bot'"),
    ({"id": "x", "image": 3, "conversations": turns("<image>", "a")}, "'image' must be a path string or a list"),
    ({"id": "x", "conversations": turns("hi", "a") + [{"from": "gpt", "value": "b"}]}, "turn 2 is from 'gpt'"),
])
def test_first_bad_record_is_named(tmp_path, bad, message):
    path = write_records(tmp_path, [RECORDS[0], bad, {"id": "later", "conversations": "also bad"}])
    with pytest.raises(ValueError, match=message) as error:
        load_llava_records(path)
    assert "data.json: record 1" in str(error.value) and "later" not in str(error.value)


@pytest.mark.parametrize("name,content,message", [
    ("data.json", "[]", "holds no records \\(it is empty or \\[\\]\\)"),
    ("data.json", "", "holds no records"),
    ("data.jsonl", "\n\n", "holds no records \\(it is empty\\)"),
])
def test_a_file_without_records_is_named(tmp_path, name, content, message):
    good = write_records(tmp_path, RECORDS, "good.json")
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=f"data file {path} {message}"):
        load_llava_records(f"{good},{path}")


@pytest.mark.parametrize("name", ["data.json", "data.jsonl"])
def test_a_file_that_is_not_utf8_names_the_line(tmp_path, name):
    records = [dict(RECORDS[0], id=f"r{i}") for i in range(3)]
    path = Path(write_records(tmp_path, records, name))
    text = path.read_bytes() if name.endswith(".jsonl") else path.read_bytes().replace(b"}, ", b"},\n")
    lines = text.split(b"\n")
    lines[1] = lines[1].replace(b"red", "r\u00e9d".encode("latin-1"))  # a Latin-1 byte inside record 1
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=f"{path}:2: not UTF-8 text"):
        load_llava_records(str(path))


def test_json_that_is_not_a_list_is_refused(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"id": "x"}')
    with pytest.raises(ValueError, match="must hold a list of records"):
        load_llava_records(str(path))


@pytest.mark.parametrize("record,counts", [
    ({"id": "no-placeholder", "image": "a.png", "conversations": turns("What color?", "red")}, "1 image.*but 0"),
    ({"id": "extra", "image": "a.png", "conversations": turns("<image><image>", "red")}, "1 image.*but 2"),
    ({"id": "missing", "conversations": turns("<image> What color?", "red")}, "0 image.*but 1"),
])
def test_placeholder_count_mismatch_names_the_id(tmp_path, record, counts):
    with pytest.raises(ValueError, match=counts) as error:
        load_llava_records(write_records(tmp_path, [record]))
    assert f"id {record['id']}" in str(error.value)
    if record["id"] == "no-placeholder":
        assert "single-image records included" in str(error.value)


def test_no_answer_is_kept_and_warned_once(tmp_path, caplog):
    records = RECORDS + [{"id": f"empty-{i}", "conversations": turns("Hello?", " ")} for i in range(7)]
    with caplog.at_level(logging.WARNING, logger="llava.data.dataset"):
        loaded = load_llava_records(write_records(tmp_path, records))
    assert loaded["has_answer"][:] == [True] * 3 + [False] * 7
    warnings = [r.getMessage() for r in caplog.records if "no non-empty gpt answer" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("7 conversation(s)") and "empty-0" in warnings[0] and "empty-6" not in warnings[0]


# -------------------------------------------------------------------------------------------- samples
def test_samples_with_and_without_images(tmp_path, tokenizer, processor, image_dir):
    dataset = make_dataset(tmp_path, tokenizer, processor, RECORDS, image_dir, template="vicuna_v1")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    one, two, text = dataset[0], dataset[1], dataset[2]
    assert one["id"] == "one" and one["pixel_values"].shape == (1, 3, 28, 28) and "image_sizes" not in one
    assert two["pixel_values"].shape == (2, 3, 28, 28)
    assert (two["input_ids"] == image_id).sum() == 32
    assert set(text) == {"input_ids", "labels", "id"}
    for sample in (one, two, text):
        assert sample["input_ids"].dtype == sample["labels"].dtype == torch.long
        assert sample["input_ids"].shape == sample["labels"].shape
    answer = tokenizer.decode(one["labels"][one["labels"] != IGNORE_INDEX])
    assert answer == " red</s>"
    per_image = 16
    assert dataset.lengths == [4 + per_image, 7 + 2 * per_image, 6]
    assert dataset.modality_lengths == [4 + per_image, 7 + 2 * per_image, -6]


def test_anyres_samples(tmp_path, tokenizer, next_processor, image_dir):
    dataset = make_dataset(tmp_path, tokenizer, next_processor, RECORDS, image_dir, image_aspect_ratio="anyres")
    two = dataset[1]
    assert two["image_sizes"].tolist() == [[20, 40], [48, 20]]
    assert two["pixel_values"].dim() == 5 and two["pixel_values"].shape[0] == 2
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    from llava.data import num_image_tokens
    expected = num_image_tokens(next_processor, (20, 40)) + num_image_tokens(next_processor, (48, 20))
    assert (two["input_ids"] == image_id).sum() == expected


def test_pad_is_centred_on_the_mean_colour(processor):
    image = Image.new("RGB", (10, 4), (255, 0, 0))
    square = expand_to_square(image, (1, 2, 3))
    assert square.size == (10, 10)
    assert square.getpixel((5, 0)) == (1, 2, 3) and square.getpixel((5, 5)) == (255, 0, 0)
    assert square.getpixel((5, 3)) == (255, 0, 0) and square.getpixel((5, 7)) == (1, 2, 3)
    assert ImagePreprocessor(processor, "pad").background == (123, 117, 104)  # CLIP mean x 255


def test_image_folder_and_absolute_paths(tmp_path, tokenizer, processor, image_dir):
    records = [dict(RECORDS[0], image=str(image_dir / "b.png"))]
    dataset = make_dataset(tmp_path, tokenizer, processor, records, tmp_path / "elsewhere")
    assert dataset[0]["pixel_values"].shape == (1, 3, 28, 28)


@pytest.mark.parametrize("aspect_ratio,use_next,message", [
    ("crop", False, "'crop' is not one of pad, square, anyres"),
    ("anyres", False, "anyres needs a LLaVA-NeXT processor"),
    ("pad", True, "LLaVA-NeXT processor needs anyres"),
])
def test_wrong_aspect_ratio(tmp_path, tokenizer, processor, next_processor, aspect_ratio, use_next, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(tmp_path, tokenizer, next_processor if use_next else processor, RECORDS,
                     image_aspect_ratio=aspect_ratio)


def test_wrong_template_name(tmp_path, tokenizer, processor):
    with pytest.raises(ValueError, match="unknown conversation template 'llava'.*vicuna_v1"):
        make_dataset(tmp_path, tokenizer, processor, RECORDS, template="llava")


# ------------------------------------------------------------------------------------------ bad images
def test_missing_and_corrupt_images(tmp_path, tokenizer, processor, image_dir):
    (image_dir / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    whole = (image_dir / "a.png").read_bytes()
    (image_dir / "truncated.png").write_bytes(whole[: len(whole) // 2])
    records = [dict(RECORDS[0], id=name, image=name) for name in ("gone.png", "garbage.png", "truncated.png")]
    dataset = make_dataset(tmp_path, tokenizer, processor, records, image_dir)
    with pytest.raises(ImageError, match=f"sample gone.png: image file {image_dir / 'gone.png'} does not exist"):
        dataset[0]
    for i, name in ((1, "garbage.png"), (2, "truncated.png")):
        with pytest.raises(ImageError, match=f"sample {name}: image {image_dir / name} cannot be read"):
            dataset[i]
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ImageError, match="sample s: image file"):
        load_image(tmp_path / "nothing.png", "s")


def test_bad_images_are_found_once_and_removed_from_the_index(tmp_path, tokenizer, processor, image_dir):
    """No substitution: what remains is exactly the good records, each once; a bad one named once."""
    (image_dir / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    records = [dict(RECORDS[0], id="bad-1", image="gone.png"), RECORDS[0],
               dict(RECORDS[0], id="bad-2", image="gone.png"), RECORDS[2],
               dict(RECORDS[1], id="bad-3", image=["a.png", "garbage.png"]), dict(RECORDS[0], id="good")]
    dataset = make_dataset(tmp_path, tokenizer, processor, records, image_dir)
    shards = [dataset.find_bad_images(range(r, len(dataset), 2), num_threads=2) for r in (0, 1)]  # two ranks' shares
    bad = sorted(shards[0] + shards[1], key=lambda b: b["index"])
    assert [(b["index"], b["id"]) for b in bad] == [(0, "bad-1"), (2, "bad-2"), (4, "bad-3")]
    assert "garbage.png cannot be read" in bad[2]["reason"]
    dataset.drop_records([b["index"] for b in bad])
    assert dataset.num_skipped == 3 and len(dataset) == 3
    assert [dataset[i]["id"] for i in range(len(dataset))] == ["one", "3", "good"]
    assert dataset.lengths == [4 + 16, 6, 4 + 16]
    with pytest.raises(ImageError, match="sample bad-1: image file"):  # without the scan a bad image stops the run
        make_dataset(tmp_path, tokenizer, processor, records, image_dir, name="again.json")[0]


def test_answer_tokens_left_after_the_cut_without_decoding_images(tmp_path, tokenizer, processor, next_processor,
                                                                   image_dir):
    records = [RECORDS[0], RECORDS[2], {"id": "blank", "conversations": turns("Hello?", " ")}]  # trains on </s>
    full = make_dataset(tmp_path, tokenizer, processor, records, image_dir)
    answers = [int((full[i]["labels"] != IGNORE_INDEX).sum()) for i in range(3)]
    assert [full.answer_tokens(i) for i in range(3)] == [(n, n) for n in answers]
    prompt = full[0]["labels"].tolist().index(next(label for label in full[0]["labels"].tolist() if label >= 0))
    cut = make_dataset(tmp_path, tokenizer, processor, records, image_dir, model_max_length=prompt + 1, name="cut.json")
    assert cut.answer_tokens(0) == (answers[0], 1)
    (image_dir / "a.png").rename(image_dir / "moved.png")  # pad: the count needs no image file
    assert cut.answer_tokens(0) == (answers[0], 1)
    anyres = make_dataset(tmp_path, tokenizer, next_processor, records, image_dir, image_aspect_ratio="anyres",
                          name="next.json")
    assert anyres.answer_tokens(0) is None  # anyres reads the image's size; the missing file is named at build time
    (image_dir / "moved.png").rename(image_dir / "a.png")
    sample = anyres[0]
    assert anyres.answer_tokens(0) == (int((sample["labels"] != IGNORE_INDEX).sum()),) * 2


# -------------------------------------------------------------------------------------------- lengths
def test_too_long_text_is_cut_but_never_inside_an_image(tmp_path, tokenizer, processor, image_dir, caplog):
    long_answer = " ".join(["red square"] * 40)
    records = [{"id": "image-first", "image": "a.png", "conversations": turns("<image>\nDescribe.", long_answer)},
               {"id": "image-last", "image": "a.png", "conversations": turns(long_answer + "\n<image>", "red")}]
    full = make_dataset(tmp_path, tokenizer, processor, records[:1], image_dir)[0]
    limit = 80  # the image span ends before (the vicuna system prompt is ~25 tiny tokens)
    assert full["input_ids"].tolist().index(tokenizer.convert_tokens_to_ids("<image>")) + 16 < limit
    assert len(full["input_ids"]) > limit
    dataset = make_dataset(tmp_path, tokenizer, processor, records, image_dir, model_max_length=limit,
                           name="long.json")
    with caplog.at_level(logging.WARNING, logger="llava.data.dataset"):
        cut = dataset[0]
    assert len(cut["input_ids"]) == len(cut["labels"]) == limit
    assert torch.equal(cut["input_ids"], full["input_ids"][:limit])
    assert torch.equal(cut["labels"], full["labels"][:limit])
    assert dataset.num_truncated == 1 and "image-first" in caplog.text
    with pytest.raises(ValueError, match=r"sample image-last has \d+ tokens, more than model_max_length=80.*inside "
                                         "an image span"):
        dataset[1]


def test_a_leading_answer_turn_is_dropped_as_llava_does(tmp_path):
    record = {"id": "g", "conversations": [{"from": "gpt", "value": "Hello!"}, *turns("What is 2+3?", "five")]}
    index = load_llava_records(write_records(tmp_path, [record]))
    assert [t["from"] for t in index[0]["conversations"]] == ["human", "gpt"]
