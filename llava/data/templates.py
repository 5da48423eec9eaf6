"""Conversation templates: a LLaVA record's turns -> one text, token ids and training labels.

A template renders the turns of a record to a single string and marks the character spans the
model is trained on (the targets: each answer and its end-of-turn token). Training then

1. renders the whole text once and tokenizes it once (``return_offsets_mapping=True``);
2. labels a token when it ends inside a target span (so a first answer token that carries the
   separating space, like ``▁five``, is trained on; every other token is ``-100``);
3. replaces the i-th ``<image>`` token by ``image_token_counts[i]`` copies of its id (labels -100).

Inference (:func:`build_prompt`) renders the same turns the same way and ends with the assistant
prefix, so a prompt is always a prefix of the training text of the same conversation.

Templates (``TEMPLATES``):

- ``plain`` (LLaVA pretraining): bos + the human turn reduced to its ``<image>`` placeholders;
  target = caption + ``"\\n"``.
- ``vicuna_v1`` (LLaVA-1.5): ``<s>{system} USER: {q} ASSISTANT: {a}</s>USER: ...``; target
  ``" {a}</s>"``. As LLaVA's ``conv_vicuna_v1``, a later round follows ``</s>`` without a space.
- ``llama_3`` (LLaVA-NeXT Llama-3): header/eot markers; target ``{a}<|eot_id|>``.
- ``chatml`` (LLaVA-NeXT Qwen): ``<|im_start|>``/``<|im_end|>``; target ``{a}<|im_end|>``.
- ``chat_template``: the tokenizer's own Jinja chat template (roles user/assistant); answer spans
  are found by rendering the conversation prefixes.

A record's ``system`` turn replaces the template's default system prompt.

Example::

    tokens = tokenize_conversation(record["conversations"], "vicuna_v1", tokenizer, image_token_counts=[576])
    prompt = build_prompt([{"from": "human", "value": "<image>\\nWhat is it?"}], "vicuna_v1")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

IGNORE_INDEX = -100
ROLES = ("human", "gpt", "system")

Round = tuple[str, "str | None"]
"""(question, answer) of one round; the answer is None for a final question awaiting its answer."""

VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the human's questions.")
LLAMA_3_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                  "that the user provides, and assist the user with a variety of tasks using natural language.")
CHATML_SYSTEM = "You are a helpful assistant."


@dataclass
class Rendered:
    """A rendered conversation: ``text`` and the [start, end) character spans trained on."""

    text: str = ""
    targets: list[tuple[int, int]] = field(default_factory=list)

    def add(self, text: str, target: bool = False) -> None:
        if target:
            self.targets.append((len(self.text), len(self.text) + len(text)))
        self.text += text


@dataclass
class TokenizedConversation:
    """Token ids of one conversation with its images expanded.

    Invariants: ``len(input_ids) == len(labels)``; ``labels[j]`` is ``input_ids[j]`` on answer
    tokens and ``-100`` elsewhere (always on image tokens); ``image_spans[i] = (start, end)`` is the
    [start, end) range of the i-th image's tokens, ``end - start == image_token_counts[i]``.
    """

    input_ids: list[int]
    labels: list[int]
    image_spans: list[tuple[int, int]]


@dataclass(frozen=True)
class FixedTemplate:
    """A template spelled out as literal pieces (every piece is plain text, no format strings).

    Text: ``start + [system_prefix + system + system_suffix]`` then per round
    ``user_prefix + q + user_suffix`` (the suffix ends with the assistant prefix), and the target
    ``answer_prefix + a + answer_suffix`` followed by the untrained ``after_answer``.
    """

    name: str
    start: str = ""
    system_prefix: str | None = None  # None: the template has no system prompt
    default_system: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    answer_prefix: str = ""
    answer_suffix: str = ""
    after_answer: str = ""
    images_only: bool = False  # plain: the human turn is reduced to its <image> placeholders
    starts_with_bos: bool = False  # plain: the tokenizer's bos token (if any) comes first

    def render(self, system: str | None, rounds: list[Round], tokenizer=None, image_token: str = "<image>") -> Rendered:
        out = Rendered()
        bos = getattr(tokenizer, "bos_token", None) if self.starts_with_bos else None
        out.add((bos or "") + self.start)
        if self.system_prefix is not None:
            out.add(self.system_prefix + (self.default_system if system is None else system) + self.system_suffix)
        for question, answer in rounds:
            if self.images_only:
                question = image_token * question.count(image_token)
            out.add(self.user_prefix + question + self.user_suffix)
            if answer is not None:
                out.add(self.answer_prefix + answer + self.answer_suffix, target=True)
                out.add(self.after_answer)
        return out


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's own chat template (``tokenizer.apply_chat_template``), roles user/assistant.

    Each answer's span is found by rendering the conversation up to the question (with the
    generation prompt) and up to the answer: the answer is what lies between, trailing whitespace
    excluded. Templates that render earlier turns differently once more turns follow are refused.
    """

    name: str = "chat_template"

    def render(self, system: str | None, rounds: list[Round], tokenizer=None, image_token: str = "<image>") -> Rendered:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat_template' needs a tokenizer with a chat template (tokenizer.chat_template "
                             "is not set); pick another --version, e.g. vicuna_v1, llama_3 or chatml")
        messages = [] if system is None else [{"role": "system", "content": system}]
        prefixes = []  # (rendered up to the question, rendered up to the answer) of each answered round
        for question, answer in rounds:
            messages.append({"role": "user", "content": question})
            if answer is None:
                break
            prompt = self._apply(tokenizer, messages, generation_prompt=True)
            messages.append({"role": "assistant", "content": answer})
            prefixes.append((prompt, self._apply(tokenizer, messages, generation_prompt=False)))
        text = self._apply(tokenizer, messages, generation_prompt=bool(rounds) and rounds[-1][1] is None)
        targets = []
        for prompt, upto_answer in prefixes:
            self._check_prefix(prompt, upto_answer)
            self._check_prefix(upto_answer, text)
            targets.append((len(prompt), len(upto_answer.rstrip())))
        return Rendered(text, targets)

    @staticmethod
    def _apply(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    @staticmethod
    def _check_prefix(shorter: str, longer: str) -> None:
        if not longer.startswith(shorter):
            raise ValueError(
                "the tokenizer's chat template renders a conversation's beginning differently once more turns follow "
                f"({shorter[-40:]!r} becomes {longer[max(0, len(shorter) - 40):len(shorter)]!r}), so answer spans "
                "cannot be found: use a fixed template (vicuna_v1, llama_3, chatml) instead")


TEMPLATES: dict[str, FixedTemplate | ChatTemplate] = {
    "plain": FixedTemplate("plain", answer_suffix="\n", images_only=True, starts_with_bos=True),
    "vicuna_v1": FixedTemplate(
        "vicuna_v1", start="<s>", system_prefix="", default_system=VICUNA_SYSTEM, system_suffix=" ",
        user_prefix="USER: ", user_suffix=" ASSISTANT:", answer_prefix=" ", answer_suffix="</s>"),
    "llama_3": FixedTemplate(
        "llama_3", start="<|begin_of_text|>", system_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
        default_system=LLAMA_3_SYSTEM, system_suffix="<|eot_id|>",
        user_prefix="<|start_header_id|>user<|end_header_id|>\n\n",
        user_suffix="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", answer_suffix="<|eot_id|>"),
    "chatml": FixedTemplate(
        "chatml", system_prefix="<|im_start|>system\n", default_system=CHATML_SYSTEM, system_suffix="<|im_end|>\n",
        user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n<|im_start|>assistant\n",
        answer_suffix="<|im_end|>", after_answer="\n"),
    "chat_template": ChatTemplate(),
}


def get_template(name: str) -> FixedTemplate | ChatTemplate:
    """The template called ``name``; ValueError listing the known names otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known templates: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def split_turns(conversations: list[dict]) -> tuple[str | None, list[Round]]:
    """(system prompt or None, rounds) of LLaVA turns ``[{"from": ..., "value": ...}, ...]``.

    An optional first ``system`` turn, then ``human`` / ``gpt`` alternating from ``human``; a final
    ``human`` turn without answer gives a round whose answer is None. ValueError names a bad turn.
    """
    system = None
    turns = list(conversations)
    if turns and turns[0].get("from") == "system":
        system = str(turns.pop(0).get("value", ""))
    rounds: list[Round] = []
    for j, turn in enumerate(turns):
        index = j + (system is not None)
        role = turn.get("from") if isinstance(turn, dict) else None
        expected = "human" if j % 2 == 0 else "gpt"
        if role != expected:
            raise ValueError(f"turn {index} is from {role!r} but {expected!r} was expected: roles must alternate "
                             "human/gpt starting with human (a system turn may only come first)")
        value = turn.get("value")
        if not isinstance(value, str):
            raise ValueError(f"turn {index} ({role}) has a value of type {type(value).__name__}, expected a string")
        if role == "human":
            rounds.append((value, None))
        else:
            rounds[-1] = (rounds[-1][0], value)
    return system, rounds


def tokenize_conversation(
    conversations: list[dict],
    template: str,
    tokenizer,
    image_token_counts: Sequence[int] = (),
    image_token: str = "<image>",
) -> TokenizedConversation:
    """Token ids, labels and image spans of one conversation (see the module docstring for the method).

    ``image_token_counts[i]`` is the number of tokens of the i-th image
    (:func:`~llava.model.processor.num_image_tokens`).
    Raises ValueError when the number of ``<image>`` placeholders differs from ``len(image_token_counts)``.
    """
    system, rounds = split_turns(conversations)
    rendered = get_template(template).render(system, rounds, tokenizer, image_token)
    image_id = _image_token_id(tokenizer, image_token)
    input_ids, offsets = _encode_with_offsets(tokenizer, rendered.text)
    labels = _label_targets(input_ids, offsets, rendered.targets)
    return _expand_images(input_ids, labels, image_id, list(image_token_counts), image_token)


def build_prompt(conversations: list[dict], template: str, tokenizer=None, image_token: str = "<image>") -> str:
    """The inference text: all turns rendered as in training, ending with the assistant prefix.

    The last turn must be ``human``. ``plain`` starts with the tokenizer's bos token and
    ``chat_template`` needs the tokenizer; the other templates render without one.
    """
    system, rounds = split_turns(conversations)
    if not rounds or rounds[-1][1] is not None:
        raise ValueError("build_prompt needs a conversation whose last turn is from 'human' (the question to answer)")
    return get_template(template).render(system, rounds, tokenizer, image_token).text


def _image_token_id(tokenizer, image_token: str) -> int:
    if image_token not in tokenizer.get_added_vocab():
        raise ValueError(f"the tokenizer has no special token {image_token!r}: call "
                         "llava.model.processor.add_image_token(tokenizer) first")
    return tokenizer.convert_tokens_to_ids(image_token)


def _encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"conversation templates need a fast tokenizer (offset mappings); {type(tokenizer).__name__} "
                         "is not one: load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]


def _label_targets(input_ids: list[int], offsets: list[tuple[int, int]], targets: list[tuple[int, int]]) -> list[int]:
    """``input_ids[j]`` where token j ends inside a target span (start, end], ``-100`` elsewhere."""
    labels = [IGNORE_INDEX] * len(input_ids)
    spans = sorted(targets)
    k = 0
    for j, (_, token_end) in enumerate(offsets):
        while k < len(spans) and spans[k][1] < token_end:
            k += 1
        if k < len(spans) and spans[k][0] < token_end <= spans[k][1]:
            labels[j] = input_ids[j]
    return labels


def _expand_images(
    input_ids: list[int], labels: list[int], image_id: int, counts: list[int], image_token: str
) -> TokenizedConversation:
    positions = [j for j, token in enumerate(input_ids) if token == image_id]
    if len(positions) != len(counts):
        raise ValueError(f"the conversation has {len(positions)} {image_token} placeholder(s) but "
                         f"{len(counts)} image token count(s) were given (one per image)")
    ids_out: list[int] = []
    labels_out: list[int] = []
    spans: list[tuple[int, int]] = []
    previous = 0
    for position, count in zip(positions, counts):
        ids_out += input_ids[previous:position]
        labels_out += labels[previous:position]
        spans.append((len(ids_out), len(ids_out) + count))
        ids_out += [image_id] * count
        labels_out += [IGNORE_INDEX] * count
        previous = position + 1
    ids_out += input_ids[previous:]
    labels_out += labels[previous:]
    return TokenizedConversation(ids_out, labels_out, spans)
