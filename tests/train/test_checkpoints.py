"""Resume safety: a finished run is not trained again, only checkpoints training wrote resume, no pickled code runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava.train.checkpoints import (MANIFEST, UntrustedCheckpointError, safe_checkpoint_loads, verify_manifest,
                                     write_manifest)
from llava.train.train import main
from tests.train.conftest import train_argv
from tests.train.test_train import StopAt

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def steps_saved(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


# ------------------------------------------------------------------------------------------------ finished runs
def test_rerun_of_a_finished_run_stops_and_keeps_the_final_model(assets, tmp_path):
    out = tmp_path / "run"
    main(train_argv(assets, out, max_steps=4, save_steps=2))
    final = load_file(out / "model.safetensors")
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    with pytest.raises(ValueError, match="this run is finished \\(checkpoint-4 is at step 4, max_steps=4\\)"):
        main(train_argv(assets, out, max_steps=4, save_steps=2))
    assert steps_saved(out) == [2, 4]
    for name, tensor in load_file(out / "model.safetensors").items():
        assert torch.equal(tensor, final[name]), name
    trainer = main(train_argv(assets, out, max_steps=6, save_steps=2))  # raising max_steps continues on purpose
    assert trainer.state.global_step == 6 and steps_saved(out) == [2, 4, 6]


def test_final_model_without_a_checkpoint_is_not_replaced(assets, tmp_path):
    out = tmp_path / "run"
    main(train_argv(assets, out, max_steps=2, save_strategy="no"))
    with pytest.raises(ValueError, match="holds the final model of a finished run \\(step 2\\) and no checkpoint"):
        main(train_argv(assets, out, max_steps=3, save_strategy="no"))


# ------------------------------------------------------------------------------------------------ manifest
def test_manifest_accepts_what_was_written_and_names_any_change(tmp_path):
    folder = tmp_path / "checkpoint-3"
    (folder / "global_step3").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "global_step3" / "optim_states.pt").write_bytes(b"state")
    write_manifest(folder, 3)
    assert json.loads((folder / MANIFEST).read_text())["global_step"] == 3
    (folder / ".nfs0001").write_bytes(b"")  # what a file system adds is not a file any loader reads
    verify_manifest(folder)

    (folder / "global_step3" / "optim_states.pt").write_bytes(b"other")
    with pytest.raises(UntrustedCheckpointError, match="changed since the save: \\['global_step3/optim_states.pt'\\]"):
        verify_manifest(folder)
    (folder / "global_step3" / "optim_states.pt").write_bytes(b"state")
    (folder / "rng_state.pth").write_bytes(b"added")
    with pytest.raises(UntrustedCheckpointError, match="not listed \\(added after the save\\): \\['rng_state.pth'\\]"):
        verify_manifest(folder)
    (folder / "rng_state.pth").unlink()
    (folder / "model.safetensors").unlink()
    with pytest.raises(UntrustedCheckpointError, match="files missing: \\['model.safetensors'\\]"):
        verify_manifest(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(UntrustedCheckpointError, match="has no llava_manifest.json: it was not written by this"):
        verify_manifest(folder)


def test_auto_resume_refuses_a_checkpoint_training_did_not_write(assets, tmp_path):
    out = tmp_path / "run"
    main(train_argv(assets, out, max_steps=4, save_steps=2), callbacks=[StopAt(2)])
    assert (out / "checkpoint-2" / MANIFEST).is_file()
    planted = out / "checkpoint-3"  # dropped into the output folder: auto-resume picks the newest
    shutil.copytree(out / "checkpoint-2", planted)
    (planted / MANIFEST).unlink()
    marker = tmp_path / "code-ran"
    torch.save({"state": Payload(marker)}, planted / "optimizer.pt")
    with pytest.raises(UntrustedCheckpointError, match="checkpoint-3 has no llava_manifest.json"):
        main(train_argv(assets, out, max_steps=4, save_steps=2))
    assert not marker.exists()

    shutil.rmtree(planted)
    (out / "checkpoint-2" / "scheduler.pt").write_bytes(b"tampered")
    with pytest.raises(UntrustedCheckpointError, match="changed since the save: \\['scheduler.pt'\\]"):
        main(train_argv(assets, out, max_steps=4, save_steps=2))


# ------------------------------------------------------------------------------------------------ safe loads
def test_resume_loads_are_weights_only_even_when_deepspeed_asks_otherwise(tmp_path):
    engine = pytest.importorskip("deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine").TorchCheckpointEngine()
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    marker = tmp_path / "code-ran"
    torch.save({"optimizer_state_dict": Payload(marker)}, tmp_path / "evil.pt")
    genuine = {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients, "exp_avg": torch.ones(3),
               "param_slice_mappings": [{"w": fragment_address(numel=3, start=0)}]}
    torch.save({"optimizer_state_dict": genuine}, tmp_path / "optim_states.pt")
    with safe_checkpoint_loads():
        with pytest.raises(Exception, match="Unsupported global"):
            engine.load(str(tmp_path / "evil.pt"))
        state = engine.load(str(tmp_path / "optim_states.pt"))["optimizer_state_dict"]
    assert not marker.exists()
    assert state["zero_stage"] == 2 and state["loss_scaler"].cur_scale == 1.0 and torch.equal(state["exp_avg"],
                                                                                               torch.ones(3))
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _train_process(assets, out: Path, extensions: Path, **flags) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": _free_port(), "TORCH_EXTENSIONS_DIR": str(extensions)}
    argv = train_argv(assets, out, deepspeed=REPO / "configs/deepspeed/zero2.json", **flags)
    return subprocess.run([sys.executable, "-m", "llava.train.train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.integration
def test_deepspeed_resume_runs_no_pickled_code_even_with_a_forged_manifest(assets, tmp_path):
    pytest.importorskip("deepspeed")
    out, extensions = tmp_path / "run", tmp_path / "torch_extensions"
    first = _train_process(assets, out, extensions, max_steps=2, save_steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    resumed = _train_process(assets, out, extensions, max_steps=4, save_steps=2)  # the genuine ZeRO states load
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr[-3000:]
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4

    marker = tmp_path / "code-ran"
    (optim,) = (forged / "checkpoint-2").glob("global_step2/*optim_states.pt")
    torch.save({"optimizer_state_dict": Payload(marker)}, optim)
    write_manifest(forged / "checkpoint-2", 2)  # someone who can write the folder can write a manifest too
    refused = _train_process(assets, forged, extensions, max_steps=4, save_steps=2)
    assert refused.returncode != 0 and "Unsupported global" in refused.stderr, refused.stderr[-3000:]
    assert not marker.exists()
