"""The training command tears its process group down before the process exits."""

from __future__ import annotations

import torch.distributed as dist

from llava.train import train


def test_the_command_destroys_the_process_group_after_training(tmp_path, monkeypatch):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    trained = []
    monkeypatch.setattr(train, "main", lambda argv: trained.append((argv, dist.is_initialized())))
    try:
        train.run(["--max_steps", "1"])
        assert trained == [(["--max_steps", "1"], True)] and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_nothing_to_end_without_a_process_group():
    assert not dist.is_initialized()
    train.end_process_group()  # no error, nothing to do
    assert not dist.is_initialized()
