"""The training command ends cleanly: trainer released, process group torn down, a launched rank exits flushed."""

from __future__ import annotations

import sys
import types
import weakref

import pytest
import torch.distributed as dist

from llava.train import train


class _Trainer:
    """Stands for the trainer: a reference cycle, as DeepSpeed's engine and its parameters make."""

    def __init__(self):
        self.me = self


@pytest.fixture
def exits(monkeypatch):
    """The codes ``os._exit`` was called with (nothing exits); logging is not shut down under pytest."""
    codes = []
    monkeypatch.setattr(train.os, "_exit", codes.append)
    monkeypatch.setattr(train.logging, "shutdown", lambda: None)
    return codes


def test_the_command_destroys_the_process_group_after_training(tmp_path, monkeypatch, exits):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    trained = []
    monkeypatch.setattr(train, "main", lambda argv: trained.append((argv, dist.is_initialized())))
    try:
        train.run(["--max_steps", "1"])
        assert trained == [(["--max_steps", "1"], True)] and not dist.is_initialized()
        assert exits == []  # not a launched rank: the caller's interpreter goes on
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_trainer_is_released_before_the_process_group_ends(monkeypatch, exits):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    made = []
    monkeypatch.setattr(train, "main", lambda argv: made.append(weakref.ref(_Trainer())) or made[0]())
    alive_at_end = []
    monkeypatch.setattr(train, "end_process_group", lambda: alive_at_end.append(made[0]() is not None))
    train.run([])
    assert alive_at_end == [False]


def test_a_launched_rank_exits_with_status_0_after_finishing_wandb(monkeypatch, exits):
    monkeypatch.setenv("LOCAL_RANK", "1")
    finished = []
    fake_wandb = types.SimpleNamespace(run=object(), finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    monkeypatch.setattr(train, "main", lambda argv: None)
    train.run([])
    assert exits == [0] and finished == [True]


def test_a_launched_rank_without_a_wandb_run_exits_too(monkeypatch, exits):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(run=None, finish=lambda: pytest.fail("no run")))
    monkeypatch.setattr(train, "main", lambda argv: None)
    train.run([])
    assert exits == [0]


def test_a_failed_run_raises_and_does_not_exit(monkeypatch, exits):
    monkeypatch.setenv("LOCAL_RANK", "0")

    def fail(argv):
        raise ValueError("bad schedule")

    monkeypatch.setattr(train, "main", fail)
    with pytest.raises(ValueError, match="bad schedule"):
        train.run([])
    assert exits == []


def test_nothing_to_end_without_a_process_group():
    assert not dist.is_initialized()
    train.end_process_group()  # no error, nothing to do
    assert not dist.is_initialized()
