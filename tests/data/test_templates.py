"""Conversation templates: what is trained on, where images go, and prompts that match training."""

from __future__ import annotations

import copy

import pytest

from llava.data import TEMPLATES, build_prompt, tokenize_conversation
from llava.data.templates import IGNORE_INDEX, VICUNA_SYSTEM

from .conftest import load_tokenizer, turns

MULTI_TURN = turns("<image>\nWhat color is the square?", "red", "Where is the square?", "top left")
END_TOKENS = {"plain": "\n", "vicuna_v1": "</s>", "llama_3": "<|eot_id|>", "chatml": "<|im_end|>",
              "chat_template": "<|im_end|>"}
# a Qwen-like Jinja template for the tokenizer (the tiny tokenizer has none of its own)
CHATML_JINJA = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def chat_tokenizer(tokenizer):
    """The tiny tokenizer (with ``<image>``) given a Jinja chat template."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHATML_JINJA
    return tok


def labelled_runs(tokenizer, tokens) -> list[str]:
    """The decoded text of each run of consecutive labelled tokens."""
    runs, current = [], []
    for label in tokens.labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("template", ["plain", "vicuna_v1", "llama_3", "chatml", "chat_template"])
def test_labels_are_the_answers_and_end_tokens(template, tokenizer, chat_tokenizer):
    tok = chat_tokenizer if template == "chat_template" else tokenizer
    tokens = tokenize_conversation(MULTI_TURN, template, tok, image_token_counts=[5])
    assert len(tokens.input_ids) == len(tokens.labels)
    end = END_TOKENS[template]
    runs = labelled_runs(tok, tokens)
    if template == "plain":  # the second question holds no image: nothing separates the two captions
        assert runs == ["red\ntop left\n"]
    else:  # vicuna trains on the space after "ASSISTANT:" too (the prompt ends before it)
        assert [run.removeprefix(" ") for run in runs] == ["red" + end, "top left" + end]
    for label, token in zip(tokens.labels, tokens.input_ids):
        assert label in (IGNORE_INDEX, token)


def test_templates_are_spelled_as_the_released_models(tokenizer):
    text = {name: decode(tokenizer, tokenize_conversation(MULTI_TURN, name, tokenizer, [1]).input_ids)
            for name in ("vicuna_v1", "llama_3", "chatml")}
    assert text["vicuna_v1"] == (f"<s>{VICUNA_SYSTEM} USER: <image>\nWhat color is the square? ASSISTANT: red</s>"
                                 "USER: Where is the square? ASSISTANT: top left</s>")
    assert text["llama_3"].startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text["llama_3"].endswith("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhere is the square?"
                                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\ntop left<|eot_id|>")
    assert text["chatml"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nWhat color is the "
        "square?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\nWhere is the square?<|im_end|>\n"
        "<|im_start|>assistant\ntop left<|im_end|>\n")


def test_image_placeholders_expand_in_place(tokenizer):
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    conversation = turns("<image>\nfirst <image>\nAre they the same?", "no")
    plain = tokenize_conversation(turns("Are they the same?", "no"), "vicuna_v1", tokenizer)
    tokens = tokenize_conversation(conversation, "vicuna_v1", tokenizer, image_token_counts=[4, 7])
    assert [end - start for start, end in tokens.image_spans] == [4, 7]
    (s0, e0), (s1, e1) = tokens.image_spans
    assert e0 < s1
    assert tokens.input_ids.count(image_id) == 11
    assert all(t == image_id for t in tokens.input_ids[s0:e0] + tokens.input_ids[s1:e1])
    assert all(label == IGNORE_INDEX for label in tokens.labels[s0:e0] + tokens.labels[s1:e1])
    # the text around the images is unchanged: drop the image tokens and "first" and it is the text-only prompt
    assert decode(tokenizer, tokens.input_ids[:s0]) == decode(tokenizer, plain.input_ids).split("Are")[0]
    assert labelled_runs(tokenizer, tokens) == [" no</s>"]


def test_plain_keeps_only_the_images_and_the_caption(tokenizer):
    conversation = turns("<image>\nDescribe the picture.", "a red square in the top left")
    tokens = tokenize_conversation(conversation, "plain", tokenizer, image_token_counts=[3])
    assert decode(tokenizer, tokens.input_ids) == "<s>" + "<image>" * 3 + "a red square in the top left\n"
    assert tokens.image_spans == [(1, 4)]
    assert labelled_runs(tokenizer, tokens) == ["a red square in the top left\n"]


@pytest.mark.parametrize("template", ["plain", "vicuna_v1", "llama_3", "chatml", "chat_template"])
def test_prompt_is_a_prefix_of_the_training_text(template, tokenizer, chat_tokenizer):
    tok = chat_tokenizer if template == "chat_template" else tokenizer
    training = decode(tok, tokenize_conversation(MULTI_TURN, template, tok, image_token_counts=[1]).input_ids)
    for upto in (1, 3):  # first question; second question after a full round
        prompt = build_prompt(MULTI_TURN[:upto], template, tok)
        assert training.startswith(prompt)
        assert training[len(prompt):].lstrip().startswith(MULTI_TURN[upto]["value"])


def test_build_prompt_needs_a_final_question(tokenizer):
    with pytest.raises(ValueError, match="last turn"):
        build_prompt(MULTI_TURN, "vicuna_v1")


def test_system_turn_replaces_the_default_system_prompt(tokenizer, chat_tokenizer):
    conversation = [{"from": "system", "value": "Answer in one word."}] + MULTI_TURN[:2]
    vicuna = build_prompt(conversation[:2], "vicuna_v1")
    assert vicuna == "<s>Answer in one word. USER: <image>\nWhat color is the square? ASSISTANT:"
    assert build_prompt(conversation[:2], "chatml").startswith("<|im_start|>system\nAnswer in one word.<|im_end|>")
    assert "Answer in one word.<|eot_id|>" in build_prompt(conversation[:2], "llama_3")
    chat = build_prompt(conversation[:2], "chat_template", chat_tokenizer)
    assert chat.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n")
    tokens = tokenize_conversation(conversation, "vicuna_v1", tokenizer, [2])
    assert labelled_runs(tokenizer, tokens) == [" red</s>"]


def test_chat_template_without_one_is_a_clear_error(tokenizer):
    assert not tokenizer.chat_template
    with pytest.raises(ValueError, match="chat template"):
        tokenize_conversation(MULTI_TURN, "chat_template", tokenizer, [1])
    with pytest.raises(ValueError, match="chat template"):
        build_prompt(MULTI_TURN[:1], "chat_template")


def test_unknown_template_lists_the_known_ones(tokenizer):
    with pytest.raises(ValueError, match="vicuna_v2.*plain, vicuna_v1, llama_3, chatml, chat_template"):
        tokenize_conversation(MULTI_TURN, "vicuna_v2", tokenizer, [1])
    assert set(TEMPLATES) == {"plain", "vicuna_v1", "llama_3", "chatml", "chat_template"}


def test_placeholder_count_must_match_the_images(tokenizer):
    with pytest.raises(ValueError, match="1 <image> placeholder.*2 image token count"):
        tokenize_conversation(MULTI_TURN, "vicuna_v1", tokenizer, image_token_counts=[16, 16])
    with pytest.raises(ValueError, match="1 <image> placeholder.*0 image token count"):
        tokenize_conversation(MULTI_TURN, "vicuna_v1", tokenizer)


def test_roles_must_alternate(tokenizer):
    bad = [MULTI_TURN[0], MULTI_TURN[0], MULTI_TURN[1]]
    with pytest.raises(ValueError, match="turn 1 is from 'human' but 'gpt' was expected"):
        tokenize_conversation(bad, "vicuna_v1", tokenizer, [1])
    with pytest.raises(ValueError, match="turn 0 is from 'gpt'"):
        tokenize_conversation(MULTI_TURN[1:2], "vicuna_v1", tokenizer)


def test_tokenizer_needs_the_image_token_and_a_fast_tokenizer(assets, tokenizer):
    with pytest.raises(ValueError, match="add_image_token"):
        tokenize_conversation(MULTI_TURN, "vicuna_v1", load_tokenizer(assets), [1])

    class SlowTokenizer:
        is_fast = False
        get_added_vocab = tokenizer.get_added_vocab
        convert_tokens_to_ids = tokenizer.convert_tokens_to_ids

    with pytest.raises(ValueError, match="fast tokenizer"):
        tokenize_conversation(MULTI_TURN, "vicuna_v1", SlowTokenizer(), [1])
