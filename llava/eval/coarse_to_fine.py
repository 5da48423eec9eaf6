"""Answering questions about huge images coarse to fine (``--coarse_to_fine`` of ``llava.eval.run`` / ``infer``).

:class:`CoarseToFineAnswerer` has the plain :class:`~llava.eval.run.Answerer`'s interface (``prompt_text``,
``prompt``, ``answer``, ``num_skipped``) and wraps one:

* A question with an image becomes a :class:`PyramidPrompt`: the image opened lazily
  (:class:`~llava.pyramid.LargeImage`: header only, pixel count checked against ``max_image_pixels``)
  and the prompt tokenized by the training code with one image slot, split there into ``prefix_ids``
  and ``question_ids``. The question must follow the image (its last token guides the focus).
* A batch walks every sample's own pyramid (:func:`~llava.pyramid.coarse_to_fine_batch`: each its own
  levels and tile count), then one batched ``model.generate`` with the KV cache takes the results as
  pre-encoded image features (:func:`~llava.pyramid.pack_input_ids`); PyramidDrop, when the model has a
  schedule, cuts the image slots further. Answers equal answering one by one.
* Images that fit one tile have no pyramid: they get the model's own any-resolution features (the
  plain path's tokens, in the same prompt). Questions without an image go to the plain answerer.

Errors name the question: a missing or unreadable image, one above ``--max_image_pixels``, no text
after ``<image>``, several images. ``--skip_missing`` skips (and counts) questions whose image is
missing or cannot be opened; a file whose pixel data turn out corrupt while it is decoded stops the
run, naming the question (a rerun resumes after it is fixed or removed from the question file).

Launch::

    python -m llava.eval.run --model_path CKPT --question_file LRS_VQA_merged.jsonl --image_folder image \\
        --answers_file answers.jsonl --coarse_to_fine --batch_size 1
    python -m llava.eval.infer --model_path CKPT --image scene.tif --question "How many ships?" --coarse_to_fine
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.templates import tokenize_conversation
from ..pyramid import (CoarseToFineConfig, CoarseToFineResult, ImageReadError, LargeImage, PixelNorm,
                       coarse_to_fine_batch, pack_input_ids)
from ..pyramid.args import CoarseToFineRequest

LOG = logging.getLogger(__name__)
IMAGE = "<image>"


@dataclass
class PyramidPrompt:
    """One question about one image, ready for the walk: ids before / after the image, the image opened lazily."""

    question: dict
    text: str
    image: LargeImage
    prefix_ids: list[int]
    question_ids: list[int]


class CoarseToFineAnswerer:
    """The plain answerer's interface, answering image questions coarse to fine (module docstring)."""

    def __init__(self, plain, config: CoarseToFineConfig):
        self.plain, self.config = plain, config
        self.model, self.processor = plain.model, plain.processor
        self.norm = PixelNorm.from_processor(plain.processor)
        self.last_results: list[CoarseToFineResult] = []  # the last batch's walks (infer prints them)

    @classmethod
    def from_request(cls, plain, request: CoarseToFineRequest) -> "CoarseToFineAnswerer":
        """The config the flags resolve to on ``plain.model`` (checked, and written to ``model.config``)."""
        return cls(plain, request.resolve(plain.model))

    @property
    def num_skipped(self) -> int:
        return self.plain.num_skipped

    def prompt_text(self, question: dict) -> str:
        return self.plain.prompt_text(question)

    def prompt(self, question: dict):
        """A :class:`PyramidPrompt`, the plain prompt of a text-only question, or None (skipped image)."""
        if question.get("image") is None:
            return self.plain.prompt(question)
        qid = question["question_id"]
        images = question["image"] if isinstance(question["image"], (list, tuple)) else [question["image"]]
        if len(images) != 1:
            raise ValueError(f"question {qid}: coarse-to-fine takes one image per question, this one has {len(images)}")
        text = self.prompt_text(question)
        check_text_after_image(text, qid)
        image = self._open(qid, images[0])
        if image is None:
            return None
        prefix, after = split_at_image(text, self.plain.conv_mode, self.processor.tokenizer)
        return PyramidPrompt(question, text, image, prefix, after)

    def _open(self, qid, image) -> LargeImage | None:
        if not isinstance(image, (str, Path)):  # already decoded (MMBench rows, lmms-eval)
            return LargeImage(image, self.config.max_image_pixels, name=f"question {qid}")
        folder = self.plain.image_folder
        path = Path(image) if folder is None else folder / image
        try:
            return LargeImage(path, self.config.max_image_pixels, name=f"question {qid}: {path}")
        except ImageReadError:
            if not self.plain.skip_missing:
                raise
            self.plain.num_skipped += 1
            LOG.warning("question %s: image %s missing or unreadable, skipped", qid, path)
            return None

    @torch.no_grad()
    def answer(self, prompts: list, **generate_kwargs) -> list[str]:
        """Answers in the order of ``prompts``; image prompts coarse to fine, text-only ones the plain way."""
        texts: list[str | None] = [None] * len(prompts)
        groups = {True: [], False: []}
        for index, prompt in enumerate(prompts):
            groups[isinstance(prompt, PyramidPrompt)].append(index)
        if groups[False]:
            for index, text in zip(groups[False], self.plain.answer([prompts[i] for i in groups[False]],
                                                                    **generate_kwargs)):
                texts[index] = text
        if groups[True]:
            for index, text in zip(groups[True], self._answer_images([prompts[i] for i in groups[True]],
                                                                     **generate_kwargs)):
                texts[index] = text
        return texts

    def _answer_images(self, prompts: list[PyramidPrompt], **generate_kwargs) -> list[str]:
        tokenizer = self.processor.tokenizer
        prefixes, questions = [p.prefix_ids for p in prompts], [p.question_ids for p in prompts]
        results = coarse_to_fine_batch(self.model, [p.image for p in prompts], prefixes, questions, self.config,
                                       self.norm, image_processor=self.processor.image_processor)
        self.last_results = results
        pad = generate_kwargs.get("pad_token_id", tokenizer.pad_token_id)
        batch = pack_input_ids(self.model, results, prefixes, questions, pad_token_id=pad)
        out = self.model.generate(**batch, **generate_kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def check_text_after_image(text: str, question_id) -> None:
    """Refuse a prompt whose question does not follow its (single) ``<image>``: nothing would guide the focus."""
    count = text.count(IMAGE)
    if count != 1:
        raise ValueError(f"question {question_id}: coarse-to-fine needs exactly one {IMAGE} in the question, "
                         f"found {count}")
    if not text.split(IMAGE, 1)[1].strip():
        raise ValueError(f"question {question_id}: no text after {IMAGE}: coarse-to-fine selects tiles guided by "
                         f"the question, which must follow the image (write '{IMAGE}\\n' + the question)")


def split_at_image(text: str, conv_mode: str, tokenizer) -> tuple[list[int], list[int]]:
    """``(prefix_ids, question_ids)``: the training code's prompt ids with one image slot, split at that slot."""
    ids = tokenize_conversation([{"from": "human", "value": text}], conv_mode, tokenizer, [1]).input_ids
    slot = ids.index(tokenizer.convert_tokens_to_ids(IMAGE))
    return list(ids[:slot]), list(ids[slot + 1:])


def describe(result: CoarseToFineResult) -> str:
    """One line on what the walk did, for ``llava.eval.infer``."""
    if result.stop_reason == "no_pyramid":
        return (f"coarse-to-fine: {result.image_size[0]} x {result.image_size[1]} px fits one tile, plain "
                f"any-resolution path: {result.num_image_tokens} image tokens, "
                f"{result.num_vision_images} crops encoded")
    factors = " ".join(f"x{trace.level.factor}" for trace in result.traces)
    return (f"coarse-to-fine: {result.image_size[0]} x {result.image_size[1]} px, levels visited {factors} of "
            f"{len(result.levels)}, tiles per level {result.tiles_per_level}, {result.num_vision_images} crops "
            f"encoded; {result.num_image_tokens} image tokens ({result.num_thumbnail_tokens} thumbnail + "
            f"{result.num_local_tokens} kept + {result.num_newline_tokens} newlines); stop: {result.stop_reason}")


def with_coarse_to_fine(plain, request: CoarseToFineRequest | None):
    """``plain`` itself without ``--coarse_to_fine``, else a :class:`CoarseToFineAnswerer` around it."""
    return plain if request is None else CoarseToFineAnswerer.from_request(plain, request)


def results_metadata(answerer) -> dict | None:
    """The coarse-to-fine config an answerer uses, as saved with its answers (None: the plain path)."""
    config = getattr(answerer, "config", None)
    return None if config is None else config.to_dict()
