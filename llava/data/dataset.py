"""The LLaVA JSON dataset: records indexed once, samples built lazily (images loaded per item).

- :func:`load_llava_records` reads one or several ``.json`` (a list of records) / ``.jsonl`` (one
  record a line) files, checks that every record is LLaVA format and writes a normalised index with
  ``datasets.Dataset.from_generator`` (cached by ``datasets``; rebuilt when a file's size or mtime
  changes). Later access is memory-mapped: 665k records cost no Python memory per record.
- :class:`LazySupervisedDataset` turns record ``i`` into ``input_ids`` / ``labels`` (a conversation
  template, :mod:`llava.data.templates`) and pixel values (:mod:`llava.data.images`), with each
  ``<image>`` expanded to the number of tokens the model produces for that image.

A LLaVA record::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",   # or a list, or absent
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}]}

Example::

    dataset = LazySupervisedDataset("data/llava_v1_5_mix665k.json", tokenizer, processor,
                                    template="vicuna_v1", image_folder="data", image_aspect_ratio="pad")
    sample = dataset[0]  # input_ids, labels (n,), id, pixel_values (k, 3, H, W)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from datasets import Dataset, Features, Sequence, Value
from datasets.exceptions import DatasetGenerationError
from PIL import Image

from ..jsonl import iter_jsonl
from .images import ImageError, ImagePreprocessor, load_image
from ..model.processor import num_image_tokens
from .templates import IGNORE_INDEX, TokenizedConversation, get_template, split_turns, tokenize_conversation

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
TURN_ROLES = ("human", "gpt", "system")

RECORD_FEATURES = Features({
    "id": Value("string"),
    "images": Sequence(Value("string")),
    "conversations": [{"from": Value("string"), "value": Value("string")}],
    "num_words": Value("int64"),
    "has_answer": Value("bool"),
})


def load_llava_records(data_path: str, num_proc: int | None = None) -> Dataset:
    """The normalised records of the comma-separated ``.json`` / ``.jsonl`` files in ``data_path``.

    Columns: ``id`` (str; the record's index in its file when missing, ``name:index`` with several
    files), ``images`` (list[str]), ``conversations`` (list of ``{"from", "value"}``), ``num_words``
    (words over all turns), ``has_answer`` (some ``gpt`` turn is non-empty). The first bad record
    raises ValueError naming the file, the record index and id, and what is wrong; so does a file
    that holds no record (empty, or ``[]``) or is not UTF-8 (the line of the first bad byte).
    Conversations without an answer are kept (``has_answer=False``) and warned about once.
    """
    paths = [p.strip() for p in data_path.split(",") if p.strip()]
    if not paths:
        raise ValueError("data_path names no file")
    files = []
    for path in paths:
        if Path(path).suffix not in (".json", ".jsonl"):
            raise ValueError(f"data file {path} is neither .json nor .jsonl")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file {path} does not exist")
        stat = os.stat(path)  # size and mtime in the cache key: an edited file is indexed again
        files.append({"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    gen_kwargs = {"files": files, "several_files": len(files) > 1, "code_hash": _index_code_hash()}
    try:
        records = Dataset.from_generator(_generate_records, features=RECORD_FEATURES, num_proc=num_proc,
                                         gen_kwargs=gen_kwargs)
    except DatasetGenerationError as error:  # datasets wraps the generator's own error: show that one
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        for _ in _generate_records(**gen_kwargs):  # from worker processes only a traceback text comes back:
            pass  # validate again here, which raises the first bad record's ValueError
        raise
    _warn_unanswered(records)
    return records


def _index_code_hash() -> str:
    """A hash of the code that writes the index: datasets' cache key covers the generator's own code but not
    the functions it calls, so an edit to the normalisation would otherwise reuse a stale index."""
    parts = [inspect.getsource(f) for f in (_generate_records, _read_records, normalise_record, _image_list,
                                            _drop_leading_answer, split_turns, iter_jsonl)]
    return hashlib.sha256("".join(parts + [repr(RECORD_FEATURES)]).encode()).hexdigest()[:16]


def _generate_records(files: list[dict], several_files: bool, code_hash: str = ""):
    """Yield the normalised records of ``files`` (dicts with ``path``), validating each one.

    ``code_hash`` is unused here: it is part of the cache key (see :func:`_index_code_hash`).
    """
    for file in files:
        path = file["path"]
        empty = True
        for index, record in enumerate(_read_records(path)):
            empty = False
            default_id = f"{Path(path).name}:{index}" if several_files else str(index)
            yield normalise_record(record, index, default_id, path)
        if empty:
            what = "it is empty" if path.endswith(".jsonl") else "it is empty or []"
            raise ValueError(f"data file {path} holds no records ({what})")


def _read_records(path: str):
    if path.endswith(".jsonl"):
        yield from iter_jsonl(path)
        return
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {error.start}: {error.reason}); save the file as "
                         "UTF-8") from None
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: a .json data file must hold a list of records, found {type(data).__name__}")
    yield from data


def normalise_record(record, index: int, default_id: str, path: str) -> dict:
    """One record in the index's columns; ValueError naming ``path``, ``index`` and the id if not LLaVA format."""
    record_id = record.get("id", default_id) if isinstance(record, dict) else default_id
    where = f"{path}: record {index} (id {record_id})"
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a {type(record).__name__}, not a dict: not LLaVA format")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(f"{where} has no 'conversations' list: not LLaVA format")
    turns = []
    for t, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"{where}: turn {t} needs 'from' and 'value' keys, got {turn!r:.80}")
        if turn["from"] not in TURN_ROLES:
            raise ValueError(f"{where}: turn {t} is from {turn['from']!r}, expected one of {', '.join(TURN_ROLES)}")
        if not isinstance(turn["value"], str):
            raise ValueError(f"{where}: turn {t} has a {type(turn['value']).__name__} value, expected a string")
        turns.append({"from": turn["from"], "value": turn["value"]})
    turns = _drop_leading_answer(turns)
    try:
        split_turns(turns)  # roles checked here, with the record named, not mid-training
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    images = _image_list(record.get("image"), where)
    placeholders = sum(turn["value"].count(IMAGE_PLACEHOLDER) for turn in turns)
    if placeholders != len(images):
        raise ValueError(
            f"{where} has {len(images)} image(s) but {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) in its "
            f"conversation: every image needs exactly one {IMAGE_PLACEHOLDER} in the text, single-image records "
            "included (LLaVA's convention: the placeholder starts the first human turn)")
    return {
        "id": str(record_id),
        "images": images,
        "conversations": turns,
        "num_words": sum(len(turn["value"].split()) for turn in turns),
        "has_answer": any(turn["from"] == "gpt" and turn["value"].strip() for turn in turns),
    }


def _drop_leading_answer(turns: list[dict]) -> list[dict]:
    """LLaVA's rule: a conversation opening with a ``gpt`` turn (after an optional system turn) loses it."""
    start = 1 if turns and turns[0]["from"] == "system" else 0
    if len(turns) > start and turns[start]["from"] == "gpt" and IMAGE_PLACEHOLDER not in turns[start]["value"]:
        return turns[:start] + turns[start + 1:]
    return turns


def _image_list(image, where: str) -> list[str]:
    if image is None:
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(item, str) for item in image):
        return list(image)
    raise ValueError(f"{where}: 'image' must be a path string or a list of path strings, got {image!r:.80}")


def _warn_unanswered(records: Dataset, shown: int = 5) -> None:
    flags = records["has_answer"][:]  # a slice reads the column at once (iterating decodes row by row)
    missing = [i for i, flag in enumerate(flags) if not flag]
    if missing:
        ids = [records[i]["id"] for i in missing[:shown]]
        logger.warning("%d conversation(s) have no non-empty gpt answer (nothing to train on), e.g. ids %s; they are "
                       "kept with has_answer=False", len(missing), ids)


class LazySupervisedDataset(torch.utils.data.Dataset):
    """LLaVA records as training samples; images are loaded and tokenized per item.

    ``dataset[i]`` is a dict: ``input_ids`` and ``labels`` (LongTensor ``(n,)``, labels ``-100``
    outside the answers), ``id`` (str), and for samples with images ``pixel_values`` (the sample's
    :class:`~llava.data.images.ImageBatch` pixels: ``(k, 3, H, W)``, anyres ``(k, P, 3, H, W)``) and,
    for anyres, ``image_sizes`` (``(k, 2)`` long). ``n <= model_max_length``, image tokens included.

    Bad images raise :class:`~llava.data.images.ImageError` (id and path); a sample is never
    replaced by another. To skip them, :meth:`find_bad_images` finds the records with a missing or
    corrupt image (over any subset of indices, so ranks can share the work) and
    :meth:`drop_records` removes them from the index (``num_skipped`` counts them): what is
    trained on is then exactly the other records, once per epoch.
    A sample longer than ``model_max_length`` loses the end of its text (counted in
    ``num_truncated``) unless the cut would fall inside an image span: then ValueError. That
    counter is per process (each DataLoader worker keeps its own); :meth:`answer_tokens` tells
    ahead of training what the cut leaves of a sample's answers.
    """

    def __init__(
        self,
        data_path: str,
        tokenizer,
        processor,
        *,
        template: str = "vicuna_v1",
        image_folder: str | None = None,
        image_aspect_ratio: str = "pad",
        model_max_length: int = 2048,
        num_proc: int | None = None,
    ):
        get_template(template)  # an unknown name fails here, not at the first batch
        self.image_preprocessor = ImagePreprocessor(processor, image_aspect_ratio)
        self.records = load_llava_records(data_path, num_proc=num_proc)
        self.tokenizer = tokenizer
        self.processor = processor
        self.template = template
        self.image_folder = image_folder
        self.model_max_length = model_max_length
        self.image_token = getattr(processor, "image_token", IMAGE_PLACEHOLDER)
        self.num_skipped = 0
        self.num_truncated = 0
        self._lengths: list[int] | None = None
        self._modality_lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Estimated tokens per sample (words + image tokens per image), from the index alone."""
        if self._lengths is None:
            self._compute_lengths()
        return self._lengths

    @property
    def modality_lengths(self) -> list[int]:
        """:attr:`lengths`, negative for text-only samples (LLaVA's convention for the grouped sampler)."""
        if self._modality_lengths is None:
            self._compute_lengths()
        return self._modality_lengths

    def _compute_lengths(self) -> None:
        per_image = self.image_preprocessor.estimated_tokens_per_image()
        words = self.records["num_words"][:]
        images = self.records["images"][:]
        self._lengths, self._modality_lengths = [], []
        for count, paths in zip(words, images):
            length = max(int(count), 1) + per_image * len(paths)
            self._lengths.append(length)
            self._modality_lengths.append(length if paths else -length)

    def __getitem__(self, i: int) -> dict:
        return self.build_sample(i)

    def build_sample(self, i: int) -> dict:
        """Sample ``i`` (see the class docstring); errors are raised, never skipped."""
        record = self.records[i]
        sample_id = record["id"]
        images = [load_image(self.image_path(path), sample_id) for path in record["images"]]
        batch = self.image_preprocessor(images) if images else None
        tokens = self._tokenize(record, batch.num_image_tokens if batch else ())
        tokens = self._fit_length(tokens, sample_id)
        sample = {"input_ids": torch.tensor(tokens.input_ids, dtype=torch.long),
                  "labels": torch.tensor(tokens.labels, dtype=torch.long), "id": sample_id}
        if batch is not None:
            sample["pixel_values"] = batch.pixel_values
            if batch.image_sizes is not None:
                sample["image_sizes"] = batch.image_sizes
        return sample

    def _tokenize(self, record: dict, image_token_counts) -> TokenizedConversation:
        try:
            return tokenize_conversation(record["conversations"], self.template, self.tokenizer, image_token_counts,
                                         self.image_token)
        except ValueError as error:
            raise ValueError(f"sample {record['id']}: {error}") from error

    # ------------------------------------------------------------------ checks ahead of training
    def find_bad_images(self, indices, num_threads: int = 8) -> list[dict]:
        """``{"index", "id", "reason"}`` of each record among ``indices`` with an image :func:`load_image` refuses.

        Every image is decoded (a truncated file is found too), ``num_threads`` at a time
        (decoding releases the GIL). Sorted by index.
        """
        def check(i: int) -> dict | None:
            record = self.records[i]
            try:
                for path in record["images"]:
                    load_image(self.image_path(path), record["id"])
            except ImageError as error:
                return {"index": i, "id": record["id"], "reason": str(error)}
            return None

        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            found = [bad for bad in pool.map(check, indices) if bad is not None]
        return sorted(found, key=lambda bad: bad["index"])

    def drop_records(self, indices) -> None:
        """Remove the records at ``indices`` from the index (``num_skipped`` grows by their number)."""
        drop = set(indices)
        if not drop:
            return
        self.records = self.records.select([i for i in range(len(self.records)) if i not in drop])
        self.num_skipped += len(drop)
        self._lengths = self._modality_lengths = None

    def answer_tokens(self, i: int) -> tuple[int, int] | None:
        """(answer tokens of sample ``i``, those left after the cut at ``model_max_length``), without decoding images.

        Image token counts come from the processor's size (pad, square) or the image file's header
        (anyres); None when an anyres image cannot be opened (:meth:`build_sample` names it later).
        """
        record = self.records[i]
        counts = self._image_token_counts(record)
        if counts is None:
            return None
        labels = self._tokenize(record, counts).labels
        answer = [label != IGNORE_INDEX for label in labels]
        return sum(answer), sum(answer[:self.model_max_length])

    def _image_token_counts(self, record: dict) -> list[int] | None:
        if self.image_preprocessor.aspect_ratio != "anyres":
            return [self.image_preprocessor.estimated_tokens_per_image()] * len(record["images"])
        counts = []
        for path in record["images"]:
            try:
                with Image.open(self.image_path(path)) as image:
                    width, height = image.size
            except (OSError, ValueError, Image.DecompressionBombError):
                return None
            counts.append(num_image_tokens(self.processor, (height, width)))
        return counts

    def image_path(self, path: str) -> str:
        """``path`` under ``image_folder`` (absolute paths and a missing folder leave it as is)."""
        if self.image_folder is None or os.path.isabs(path):
            return path
        return os.path.join(self.image_folder, path)

    def _fit_length(self, tokens: TokenizedConversation, sample_id: str) -> TokenizedConversation:
        """Cut the text tail beyond ``model_max_length``; refuse when the cut would split an image."""
        length, limit = len(tokens.input_ids), self.model_max_length
        if length <= limit:
            return tokens
        images_end = max((end for _, end in tokens.image_spans), default=0)
        if images_end > limit:
            raise ValueError(
                f"sample {sample_id} has {length} tokens, more than model_max_length={limit}, and a cut at {limit} "
                f"would fall inside an image span (its image tokens end at {images_end}): raise model_max_length "
                "or remove the sample")
        self.num_truncated += 1
        logger.warning("sample %s has %d tokens, more than model_max_length=%d: its text is cut (%d truncated so "
                       "far)", sample_id, length, limit, self.num_truncated)
        kept_labels = tokens.labels[:limit]
        if all(label == IGNORE_INDEX for label in kept_labels):
            logger.warning("sample %s keeps no answer token after the cut", sample_id)
        return TokenizedConversation(tokens.input_ids[:limit], kept_labels, tokens.image_spans)
