"""Answer a benchmark's questions with a LLaVA model, batched, shardable and resumable.

Reads LLaVA's question JSONL (``{"question_id", "image"?, "text", ...}``) and appends one record per
question to the answers JSONL: ``{"question_id", "prompt", "text", "answer_id", "model_id",
"metadata"}``. Prompts are built and tokenized by the same code as training (template, image
padding, ``<image>`` expansion) and batched with left padding. ``--num_chunks/--chunk_idx`` take
one contiguous shard (``scripts/eval/lib/generate.sh`` runs one per GPU and merges); questions
already in the answers file are skipped, so a killed run continues where it stopped. The answers
file is locked while a run writes it (a second process on the same file stops with a message),
and a last line torn by a kill is dropped with a warning and its question answered again.

Launch::

    python -m llava.eval.run --model_path checkpoints/llava-v1.5-7b-pdrop \\
        --question_file playground/data/eval/pope/llava_pope_test.jsonl --image_folder playground/data/eval/pope/val2014 \\
        --answers_file answers.jsonl --batch_size 8 --max_new_tokens 16
    python -m llava.eval.run ... --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]' --drop_method fastv
    python -m llava.eval.run ... --coarse_to_fine --batch_size 1    # huge images: llava/eval/coarse_to_fine.py
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.collator import concat_pixel_values
from ..data.images import ImageError, ImagePreprocessor, load_image
from ..data.templates import tokenize_conversation
from ..cli import ArgumentParser, check_model_source, cli_main
from ..compat import template_name
from ..pyramid.args import CoarseToFineRequest, add_coarse_to_fine_args
from .chunks import answer_key, chunk_of, read_jsonl
from .coarse_to_fine import results_metadata, with_coarse_to_fine
from .loading import add_model_args, default_aspect_ratio, load_for_eval
from .questions import read_questions

LOG = logging.getLogger(__name__)
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
SINGLE_PRED_PROMPTS = {"en": SINGLE_PRED_PROMPT, "cn": "请直接回答选项字母。"}  # LLaVA's, per --lang


@dataclass
class Prompt:
    """One question ready for the model: its ids, the pixel values of its image (if any)."""

    question: dict
    text: str
    input_ids: list[int]
    pixel_values: torch.Tensor | None
    image_sizes: torch.Tensor | None


class Answerer:
    """Turns questions into prompts the way training does, and batches of prompts into answers."""

    def __init__(self, model, processor, conv_mode: str, image_folder: str | None, aspect_ratio: str,
                 single_pred_prompt: bool = False, skip_missing: bool = False, lang: str = "en"):
        self.model, self.processor, self.conv_mode = model, processor, conv_mode
        self.image_folder = Path(image_folder) if image_folder else None
        self.images = ImagePreprocessor(processor, aspect_ratio)
        self.single_pred_prompt, self.skip_missing = single_pred_prompt, skip_missing
        self.instruction = SINGLE_PRED_PROMPTS[lang]
        self.num_skipped = 0

    def prompt_text(self, question: dict) -> str:
        """The user turn as asked: the question, the letter instruction, ``<image>`` first if not placed."""
        text = question["text"]
        if self.single_pred_prompt:
            text = f"{text}\n{self.instruction}"
        if question.get("image") is not None and "<image>" not in text:
            text = "<image>\n" * len(_as_list(question["image"])) + text
        return text

    def prompt(self, question: dict) -> Prompt | None:
        """None when the image is missing and ``skip_missing`` is set (counted in ``num_skipped``)."""
        text = self.prompt_text(question)
        batch, counts = None, []
        if question.get("image") is not None:
            images = [self._image(question, image) for image in _as_list(question["image"])]
            if any(image is None for image in images):
                return None
            batch = self.images(images)
            counts = batch.num_image_tokens
        turns = [{"from": "human", "value": text}]
        ids = tokenize_conversation(turns, self.conv_mode, self.processor.tokenizer, counts).input_ids
        return Prompt(question, text, ids, None if batch is None else batch.pixel_values,
                      None if batch is None else batch.image_sizes)

    def _image(self, question: dict, image):
        if not isinstance(image, (str, Path)):
            return image  # already decoded (MMBench, lmms-eval)
        path = Path(image) if self.image_folder is None else self.image_folder / image
        try:
            return load_image(path, str(question["question_id"]))
        except ImageError:
            if not self.skip_missing:
                raise
            self.num_skipped += 1
            LOG.warning("question %s: image %s missing or unreadable, skipped", question["question_id"], path)
            return None

    @torch.no_grad()
    def answer(self, prompts: list[Prompt], **generate_kwargs) -> list[str]:
        """Greedy (or sampled) answers of a batch, decoded without the prompt."""
        inputs = left_padded(prompts, self.processor.tokenizer.pad_token_id, self.model.device)
        out = self.model.generate(**inputs, **generate_kwargs)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _as_list(images) -> list:
    return list(images) if isinstance(images, (list, tuple)) else [images]


def left_padded(prompts: list[Prompt], pad_token_id: int, device) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` ``(B, n)`` padded on the left, plus the images of the batch."""
    width = max(len(p.input_ids) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt.input_ids):] = torch.tensor(prompt.input_ids)
        attention_mask[row, width - len(prompt.input_ids):] = 1
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    pixels = [p.pixel_values for p in prompts if p.pixel_values is not None]
    if pixels:
        batch["pixel_values"] = concat_pixel_values(pixels).to(device)
        sizes = [p.image_sizes for p in prompts if p.image_sizes is not None]
        if sizes:
            batch["image_sizes"] = torch.cat(sizes).to(device)
    return batch


def answered(path: Path) -> set[tuple]:
    """Keys (:func:`~llava.eval.chunks.answer_key`) of the answers already written."""
    return {answer_key(record) for record in read_jsonl(path)} if path.is_file() else set()


@contextlib.contextmanager
def locked_answers(path: Path):
    """``path`` opened for appending, exclusively: RuntimeError when another process has it open this way.

    The lock (``flock``) lasts while the file is open and is released by the kernel when the
    holder dies, so a killed run never leaves a stale lock. A torn last line is removed on entry
    (:func:`drop_torn_last_line`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink:
        try:
            fcntl.flock(sink.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"answers file {path} is being written by another evaluation process: wait for it to "
                               "finish, or give this run its own --answers_file (answers of one file are merged "
                               "with python -m llava.eval.chunks)") from None
        drop_torn_last_line(path, sink.fileno())
        yield sink


def drop_torn_last_line(path: Path, fd: int) -> None:
    """Cut the file at ``fd`` after its last newline when text follows it (a write interrupted by a kill).

    Every answer is written as one line ending in a newline, so text after the last newline is
    an answer that was never completely written: it is removed (with a warning naming its
    question when readable) and that question counts as unanswered.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return
    os.ftruncate(fd, end)
    question = re.search(rb'"question_id":\s*("[^"]*"|[^,}\s]+)', data[end:])
    which = f" (question {question.group(1).decode(errors='replace')})" if question else ""
    LOG.warning("answers file %s: its last line%s is incomplete, written by a run that was stopped; it is dropped and "
                "its question answered again", path, which)


def run(args: argparse.Namespace, model=None, processor=None) -> Path:
    """Answer the chunk's unanswered questions; returns the answers file."""
    coarse_to_fine = CoarseToFineRequest.from_args(args)  # None without --coarse_to_fine; flags checked before loading
    args.conv_mode = template_name(args.conv_mode)  # LLaVA's names too; an unknown one is refused before loading
    questions = chunk_of(read_questions(args.question_file), args.num_chunks, args.chunk_idx)
    if args.image_folder and not Path(args.image_folder).is_dir():
        raise FileNotFoundError(f"image folder {args.image_folder} does not exist")
    if model is None:
        check_model_source(args.model_path, "--model_path")
        model, processor = load_for_eval(args)
    aspect = args.image_aspect_ratio or default_aspect_ratio(model.config)
    answerer = Answerer(model, processor, args.conv_mode, args.image_folder, aspect, args.single_pred_prompt,
                        args.skip_missing, args.lang)
    answerer = with_coarse_to_fine(answerer, coarse_to_fine)  # llava/eval/coarse_to_fine.py
    out = Path(args.answers_file)
    model_id = args.model_id or Path(str(args.model_path)).name
    metadata = {"pdrop": None if model.pdrop_config is None else model.pdrop_config.to_dict(),
                "coarse_to_fine": results_metadata(answerer)}
    generate_kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0, num_beams=args.num_beams,
                           pad_token_id=processor.tokenizer.pad_token_id)
    if args.temperature > 0:
        generate_kwargs.update(temperature=args.temperature, top_p=args.top_p)
    with locked_answers(out) as sink:
        done = answered(out)
        todo = [q for q in questions
                if answer_key({"question_id": q["question_id"], "prompt": answerer.prompt_text(q)}) not in done]
        for start in tqdm(range(0, len(todo), args.batch_size), desc="answering", disable=not todo):
            prompts = [p for p in map(answerer.prompt, todo[start:start + args.batch_size]) if p is not None]
            if not prompts:
                continue
            for prompt, text in zip(prompts, answerer.answer(prompts, **generate_kwargs)):
                record = {"question_id": prompt.question["question_id"], "prompt": prompt.text, "text": text,
                          "answer_id": uuid.uuid4().hex, "model_id": model_id, "metadata": metadata}
                sink.write(json.dumps(record) + "\n")
            sink.flush()
    if answerer.num_skipped:
        LOG.warning("%d question(s) skipped for missing images", answerer.num_skipped)
    return out


def build_parser(module: str = "llava.eval.run", epilog: str | None = None) -> argparse.ArgumentParser:
    """The flags; ``module`` and ``epilog`` let LLaVA's entry points (llava/eval/llava_compat.py) reuse them."""
    parser = ArgumentParser(module, description="Answer a question JSONL with a LLaVA model (batched, chunked, "
                            "resumable).", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_coarse_to_fine_args(parser)
    parser.add_argument("--model_id", help="name written into the answers (default: the folder name)")
    parser.add_argument("--question_file", required=True, help=".jsonl, ScienceQA .json or MMBench .tsv")
    parser.add_argument("--image_folder", help="folder the questions' image paths are relative to")
    parser.add_argument("--answers_file", required=True, help="JSONL to append answers to (answered questions are skipped)")
    parser.add_argument("--num_chunks", type=int, default=1)
    parser.add_argument("--chunk_idx", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--single_pred_prompt", action="store_true", help="ask for the option's letter (multiple choice)")
    parser.add_argument("--lang", default="en", choices=sorted(SINGLE_PRED_PROMPTS),
                        help="language of the --single_pred_prompt instruction (cn: MMBench-CN, as LLaVA asks it)")
    parser.add_argument("--skip_missing", action="store_true", help="skip (and count) questions whose image is missing")
    return parser


def main(argv: list[str] | None = None) -> Path:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli_main(main, prog="llava.eval.run")
