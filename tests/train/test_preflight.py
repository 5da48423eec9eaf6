"""Checks before the first step: output folder, free space, answers left after the cut, records with bad images."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerCallback

from llava.train import preflight
from llava.train.train import main
from tests.train.conftest import train_argv

REPO = Path(__file__).resolve().parents[2]


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def vqa(record_id: str, image: str, question: str = "What color is the square?", answer: str = "red") -> dict:
    return {"id": record_id, "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}


def write_data(folder: Path, records: list[dict]) -> Path:
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


BAD = ["gone-1", "gone-2", "gone-3"]


def mixed_records() -> list[dict]:
    """8 records, 3 of them (ids in BAD) pointing at images that do not exist."""
    good = [vqa(f"ok-{i}", f"train_{i:04d}.png") for i in range(5)]
    bad = [vqa(name, f"{name}.png") for name in BAD]
    return good[:2] + bad[:2] + good[2:4] + bad[2:] + good[4:]


# ------------------------------------------------------------------------------------------------ output folder
def test_an_output_dir_that_cannot_be_written_stops_before_the_first_step(assets, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    steps = CountSteps()
    with pytest.raises(OSError, match=f"output_dir {blocker / 'out'} is not writable"):
        main(train_argv(assets, blocker / "out"), callbacks=[steps])

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight.tempfile, "mkstemp", refuse)  # a read-only folder (root writes anywhere)
    with pytest.raises(OSError, match="is not writable \\(PermissionError: Permission denied\\)"):
        main(train_argv(assets, tmp_path / "read-only"), callbacks=[steps])
    assert steps.steps == 0


def test_too_little_free_space_for_a_checkpoint_stops_before_the_first_step(assets, tmp_path, monkeypatch):
    real = preflight.shutil.disk_usage
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    steps = CountSteps()
    with pytest.raises(OSError, match="has 0.00 GiB free, and one checkpoint of this model needs about"):
        main(train_argv(assets, tmp_path / "out"), callbacks=[steps])
    assert steps.steps == 0


def test_checkpoint_size_estimate_counts_weights_and_optimizer_state():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10))  # 110 parameters each
    model[0].requires_grad_(False)
    args = SimpleNamespace(lora_enable=False, save_strategy="steps", save_only_model=False)
    assert preflight.checkpoint_bytes(model, args) == (220 * 4, 110 * 12)
    assert preflight.checkpoint_bytes(model, SimpleNamespace(**{**vars(args), "save_only_model": True})) == (880, 0)
    assert preflight.checkpoint_bytes(model, SimpleNamespace(**{**vars(args), "lora_enable": True})) == (440, 1320)


# ------------------------------------------------------------------------------------------------ answers
def test_a_run_where_every_answer_is_cut_away_is_refused(assets, tmp_path):
    long_question = "Look at the picture carefully and tell me " * 6 + "what color is the square?"
    data = write_data(tmp_path, [vqa(f"long-{i}", f"train_{i:04d}.png", long_question) for i in range(6)])
    steps = CountSteps()
    with pytest.raises(ValueError, match="no sample keeps an answer token after the cut at model_max_length=80: all 6"):
        main(train_argv(assets, tmp_path / "out", data_path=data, model_max_length=80), callbacks=[steps])
    assert steps.steps == 0 and not (tmp_path / "out" / "config.json").exists()


def test_the_share_of_samples_losing_answer_tokens_is_reported(assets, tmp_path, caplog, monkeypatch):
    from llava.data import LazySupervisedDataset
    from llava.model.assemble import VisionSpec, assemble_llava

    long_question = "Look at the picture carefully and tell me " * 6 + "what color is the square?"
    records = [vqa(f"long-{i}", f"train_{i:04d}.png", long_question) for i in range(2)]
    records += [vqa(f"short-{i}", f"train_{i:04d}.png") for i in range(6)]
    _, processor = assemble_llava(str(assets["llm"]), VisionSpec(str(assets["vision"])))
    dataset = LazySupervisedDataset(str(write_data(tmp_path, records)), processor.tokenizer, processor,
                                    image_folder=str(assets["data"] / "images"), model_max_length=80)
    with caplog.at_level(logging.WARNING, logger="llava.train.preflight"):
        counts = preflight.check_answer_coverage(dataset, 80)
    assert (counts["with_answer"], counts["lose_some"], counts["keep_none"]) == (8, 2, 2)
    assert "cuts answer tokens from 2 of 8 samples with an answer (25.0%); 2 keep none" in caplog.text
    assert "long-0" in caplog.text
    monkeypatch.setattr(preflight, "COVERAGE_SAMPLE", 3)  # a large data set: a sample, then all before refusing
    sampled = preflight.check_answer_coverage(dataset, 80, log=False)
    assert sampled["sampled"] and sampled["checked"] == 3


# ------------------------------------------------------------------------------------------------ bad images
def test_skip_bad_images_trains_each_good_record_once_and_lists_the_bad_ones(assets, tmp_path, caplog):
    data = write_data(tmp_path, mixed_records())
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="llava.train.preflight"):
        trainer = main(train_argv(assets, out, data_path=data, skip_bad_images=True, max_steps=-1, num_train_epochs=1,
                                  per_device_train_batch_size=1, save_strategy="no"))
    assert trainer.state.global_step == 5  # one epoch over the 5 good records, nothing substituted
    listed = [json.loads(line) for line in (out / "skipped_bad_images.jsonl").read_text().splitlines()]
    assert [item["id"] for item in listed] == BAD and "gone-1.png does not exist" in listed[0]["reason"]
    counts = [r.getMessage() for r in caplog.records if "--skip_bad_images" in r.getMessage()]
    assert len(counts) == 1 and "3 of 8 records have a missing or corrupt image" in counts[0]


def test_bad_images_are_counted_once_over_ranks(assets, tmp_path, monkeypatch):
    """Each rank scans its share; the gathered findings are the same on every rank; one file, one count."""
    from llava.data import LazySupervisedDataset
    from llava.model.assemble import VisionSpec, assemble_llava

    _, processor = assemble_llava(str(assets["llm"]), VisionSpec(str(assets["vision"])))
    data = str(write_data(tmp_path, mixed_records()))

    def dataset():
        return LazySupervisedDataset(data, processor.tokenizer, processor, image_folder=str(assets["data"] / "images"))

    ranks = [dataset(), dataset()]
    shares = [ranks[r].find_bad_images(range(r, 8, 2)) for r in (0, 1)]
    monkeypatch.setattr(preflight, "gather_from_ranks", lambda items: shares)
    for rank, ds in enumerate(ranks):
        monkeypatch.setattr(preflight, "rank_and_world", lambda: (rank, 2))
        args = SimpleNamespace(output_dir=tmp_path, should_save=rank == 0, should_log=rank == 0)
        bad = preflight.remove_bad_images(ds, args, num_threads=1)
        assert [item["id"] for item in bad] == BAD and ds.num_skipped == 3
    assert [ds.records["id"][:] for ds in ranks] == [["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]] * 2
    assert len((tmp_path / "skipped_bad_images.jsonl").read_text().splitlines()) == 3


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.mark.integration
def test_two_processes_count_bad_images_once(assets, tmp_path):
    data = write_data(tmp_path, mixed_records())
    out = tmp_path / "out"
    argv = train_argv(assets, out, data_path=data, skip_bad_images=True, max_steps=2, per_device_train_batch_size=1,
                      save_strategy="no")
    env = {**os.environ, "MASTER_PORT": _free_port()}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           env["MASTER_PORT"], "-m", "llava.train.train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("--skip_bad_images: 3 of 8 records") == 1, done.stderr[-3000:]
    assert len((out / "skipped_bad_images.jsonl").read_text().splitlines()) == 3
