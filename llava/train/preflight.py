"""Checks before the first training step, so a run fails in seconds instead of after hours.

- :func:`check_output_dir`: ``output_dir`` can be created and written (every rank tries a file).
- :func:`check_free_space`: the disk under ``output_dir`` has room for one checkpoint, estimated
  from the model (:func:`checkpoint_bytes`).
- :func:`remove_bad_images` (``--skip_bad_images``): every image decoded once, the work shared by
  the ranks; the records with a bad image are removed from every rank's index (so no sample is
  trained twice or replaced), counted once and listed by id in ``output_dir/skipped_bad_images.jsonl``.
- :func:`check_answer_coverage`: refuses a run where no sample keeps an answer token after the
  cut at ``model_max_length`` (it would train on nothing and save an untrained model), and
  reports the share of samples that lose answer tokens.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

from .ranks import gather_from_ranks, rank_and_world

LOG = logging.getLogger(__name__)
SKIPPED_FILE = "skipped_bad_images.jsonl"
OPTIMIZER_BYTES_PER_PARAM = 12  # Adam's two fp32 moments + DeepSpeed's fp32 master copy of a trainable parameter
COVERAGE_SAMPLE = 5000  # samples tokenized to estimate the answer coverage (all of them when fewer)
SHOWN = 5


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


# --------------------------------------------------------------------------------------- output folder
def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Create ``output_dir`` and write (then remove) a file in it; OSError naming the folder and the cause otherwise."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OSError(f"output_dir {out} is not writable ({type(error).__name__}: {error.strerror or error}): "
                      "checkpoints and the final model go there; choose another --output_dir (OUTPUT_DIR)") from None


def checkpoint_bytes(model, training_args) -> tuple[int, int]:
    """(weights, optimizer state) bytes of one checkpoint of ``model``: an estimate from its parameters.

    Weights: every parameter at its dtype (LoRA checkpoints: the trainable ones). Optimizer:
    :data:`OPTIMIZER_BYTES_PER_PARAM` per trainable parameter, none with ``save_only_model`` or
    without checkpoints. ZeRO-3 partitioned parameters count their full size (``ds_numel``).
    """
    def numel(p):
        return getattr(p, "ds_numel", p.numel())

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    saved = trainable if training_args.lora_enable else params
    weights = sum(numel(p) * p.element_size() for p in saved)
    keeps_optimizer = training_args.save_strategy != "no" and not training_args.save_only_model
    optimizer = sum(numel(p) for p in trainable) * OPTIMIZER_BYTES_PER_PARAM if keeps_optimizer else 0
    return weights, optimizer


def check_free_space(model, training_args) -> None:
    """OSError when the disk under ``output_dir`` has less room than :func:`checkpoint_bytes` estimates."""
    weights, optimizer = checkpoint_bytes(model, training_args)
    free = shutil.disk_usage(training_args.output_dir).free
    if free < weights + optimizer:
        raise OSError(f"output_dir {training_args.output_dir} has {_gib(free)} free, and one checkpoint of this model "
                      f"needs about {_gib(weights + optimizer)} (weights {_gib(weights)} + optimizer state "
                      f"{_gib(optimizer)}): free some space or choose another --output_dir (OUTPUT_DIR)")


# --------------------------------------------------------------------------------------- data
def remove_bad_images(dataset, training_args, num_threads: int | None = None) -> list[dict]:
    """Drop the records with a missing or corrupt image from ``dataset`` on every rank; returns them.

    Rank r decodes the images of records r, r + W, r + 2W, ...; the findings are gathered so every
    rank removes the same records. The main process writes them (id, reason) to
    ``output_dir/skipped_bad_images.jsonl`` (an empty file when none) and logs the count once.
    """
    rank, world = rank_and_world()
    threads = num_threads or min(8, os.cpu_count() or 1)
    mine = dataset.find_bad_images(range(rank, len(dataset), world), num_threads=threads)
    bad = sorted((item for found in gather_from_ranks(mine) for item in found), key=lambda item: item["index"])
    total = len(dataset)
    dataset.drop_records([item["index"] for item in bad])
    path = Path(training_args.output_dir) / SKIPPED_FILE
    if training_args.should_save:
        path.write_text("".join(json.dumps({"id": item["id"], "reason": item["reason"]}) + "\n" for item in bad))
    if training_args.should_log and bad:
        LOG.warning("--skip_bad_images: %d of %d records have a missing or corrupt image and are left out of training "
                    "(ids listed in %s), e.g. %s", len(bad), total, path, bad[0]["reason"])
    if not len(dataset):
        raise ValueError(f"every one of the {total} records has a bad image (see {path}); is --image_folder "
                         f"({getattr(dataset, 'image_folder', None)}) right?")
    return bad


def check_answer_coverage(dataset, model_max_length: int, seed: int = 0, log: bool = True) -> dict:
    """Refuse a run where no sample keeps an answer token after ``model_max_length``; report the share that lose some.

    Tokenizes up to :data:`COVERAGE_SAMPLE` samples chosen with ``seed`` (all when fewer; the
    same on every rank), and all of them before refusing. Returns the counts
    (``checked``, ``with_answer``, ``lose_some``, ``keep_none``, ``sampled``).
    """
    indices = list(range(len(dataset)))
    sampled = len(indices) > COVERAGE_SAMPLE
    if sampled:
        indices = sorted(random.Random(seed).sample(indices, COVERAGE_SAMPLE))
    counts = _coverage(dataset, indices)
    if counts["keep_none"] == counts["with_answer"] and sampled:
        counts = _coverage(dataset, range(len(dataset)))  # exact before refusing
        sampled = False
    counts["sampled"] = sampled
    if counts["keep_none"] == counts["with_answer"]:
        raise ValueError(_no_answer_message(counts, model_max_length))
    if log and counts["lose_some"]:
        share = 100 * counts["lose_some"] / counts["with_answer"]
        LOG.warning("model_max_length=%d cuts answer tokens from %d of %d%s samples with an answer (%.1f%%); %d keep "
                    "none (they train on nothing), e.g. ids %s", model_max_length, counts["lose_some"],
                    counts["with_answer"], " sampled" if sampled else "", share, counts["keep_none"],
                    counts["examples"][:SHOWN])
    return counts


def _coverage(dataset, indices) -> dict:
    counts = {"checked": 0, "with_answer": 0, "lose_some": 0, "keep_none": 0, "examples": []}
    for i in indices:
        answer = dataset.answer_tokens(i)
        if answer is None:
            continue
        total, kept = answer
        counts["checked"] += 1
        if total == 0:
            continue
        counts["with_answer"] += 1
        if kept < total:
            counts["lose_some"] += 1
            counts["examples"].append(dataset.records[i]["id"])
        counts["keep_none"] += kept == 0
    return counts


def _no_answer_message(counts: dict, model_max_length: int) -> str:
    if counts["with_answer"] == 0:
        return (f"none of the {counts['checked']} samples has an answer to train on (no non-empty gpt turn): check "
                "--data_path and --version")
    return (f"no sample keeps an answer token after the cut at model_max_length={model_max_length}: all "
            f"{counts['with_answer']} samples with an answer lose every answer token (e.g. ids "
            f"{counts['examples'][:SHOWN]}), so training would learn nothing and save an untrained model. Raise "
            "--model_max_length (image tokens count too), or shorten the prompts")
