"""Which checkpoint a run may resume, and loading it without running code from it.

- **Manifest.** :func:`write_manifest` records every file of a finished save (size and sha256) in
  ``llava_manifest.json``; the trainer writes it into the staging folder just before the rename
  that publishes ``checkpoint-N``. :func:`verify_manifest` refuses, before anything is loaded, a
  folder without one (not written by this framework), a file missing or changed since, and a
  file the manifest does not list.
- **Safe loads.** Inside :func:`safe_checkpoint_loads` every ``torch.load`` is ``weights_only``
  (DeepSpeed's own resume passes ``weights_only=False``; ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
  overrides it); the few DeepSpeed classes its optimizer states hold are allow-listed. Model
  weights are safetensors.
- **Finished runs.** :func:`refuse_finished_run`: a rerun of a run that reached ``max_steps``
  (or its epochs) stops with a message instead of training past the end and replacing the final
  model; raising ``--max_steps`` / ``--num_train_epochs`` continues it on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from transformers.trainer_utils import get_last_checkpoint

from ..paths import TRAINER_STATE_FILE

MANIFEST = "llava_manifest.json"
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORMAT = 1
CHUNK = 1 << 20


class UntrustedCheckpointError(ValueError):
    """A checkpoint folder this framework did not write, or that changed after it was written."""


# ----------------------------------------------------------------------------------------- manifest
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` except the manifest, sorted; symbolic links are not followed."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MANIFEST)


def write_manifest(folder: str | Path, global_step: int) -> Path:
    """Write ``folder/llava_manifest.json``: ``{"format", "global_step", "files": {relative path: {size, sha256}}}``.

    Called once the save is complete and before it is published, so a published checkpoint
    always carries the hashes of exactly what was written.
    """
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in _files(folder)}
    path = folder / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "global_step": global_step, "files": files}, indent=1) + "\n")
    return path


def verify_manifest(folder: str | Path) -> None:
    """Raise :class:`UntrustedCheckpointError` unless ``folder`` holds exactly what its manifest lists.

    Invariant on success: every file that a resume can load is listed and has the listed size
    and sha256. Hidden entries (``.nfs*``, ``.DS_Store``) that no loader reads are ignored.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UntrustedCheckpointError(
            f"{folder} has no {MANIFEST}: it was not written by this framework's training (or by a version before "
            "checkpoints carried one), and loading a checkpoint can run code from it, so it is not resumed. Move it "
            "out of the output folder, or start afresh with --auto_resume false")
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise UntrustedCheckpointError(f"{manifest} is not a manifest this framework wrote ({error}); not resumed") \
            from None
    present = {p.relative_to(folder).as_posix(): p for p in _files(folder)}
    extra = sorted(n for n in set(present) - set(listed) if not any(part.startswith(".") for part in n.split("/")))
    missing = sorted(set(listed) - set(present))
    changed = sorted(n for n in set(listed) & set(present) if present[n].stat().st_size != listed[n]["size"]
                     or file_sha256(present[n]) != listed[n]["sha256"])
    problems = [f"{what}: {names[:5]}" for what, names in
                (("files not listed (added after the save)", extra), ("files missing", missing),
                 ("files changed since the save", changed)) if names]
    if problems:
        raise UntrustedCheckpointError(f"{folder} is not the checkpoint training wrote ({'; '.join(problems)}); "
                                       "not resumed. Remove it (an older checkpoint is then resumed) or start afresh")


# ----------------------------------------------------------------------------------------- safe loads
def _deepspeed_state_classes() -> list:
    """The plain-data classes DeepSpeed pickles into its ZeRO optimizer states (none without DeepSpeed)."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


@contextlib.contextmanager
def safe_checkpoint_loads():
    """Every ``torch.load`` inside is ``weights_only=True``, whatever its caller passes.

    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is torch's documented switch for this (read at each load);
    the previous value is restored on exit.
    """
    saved = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(_deepspeed_state_classes()):
            yield
    finally:
        if saved is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = saved


# ----------------------------------------------------------------------------------------- which checkpoint
def find_resume_checkpoint(training_args) -> str | None:
    """``--resume_from_checkpoint``, else (``--auto_resume``) the newest ``checkpoint-N`` in output_dir, else None."""
    if training_args.resume_from_checkpoint:
        if not Path(training_args.resume_from_checkpoint).is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint {training_args.resume_from_checkpoint} does not exist")
        return training_args.resume_from_checkpoint
    if training_args.auto_resume and Path(training_args.output_dir).is_dir():
        return get_last_checkpoint(training_args.output_dir)
    return None


def read_trainer_state(folder: str | Path) -> dict | None:
    path = Path(folder) / TRAINER_STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def reached_end(state: dict, training_args) -> bool:
    """True when ``state`` (a trainer_state.json) is at or past this run's end: ``max_steps``, else its epochs."""
    if training_args.max_steps > 0:
        return int(state.get("global_step", 0)) >= training_args.max_steps
    return float(state.get("epoch") or 0) + 1e-6 >= training_args.num_train_epochs


def has_final_model(output_dir: str | Path) -> bool:
    """A final save is in ``output_dir``: a model (config.json) or LoRA adapters (adapter/)."""
    out = Path(output_dir)
    return (out / "config.json").is_file() or (out / "adapter" / "adapter_config.json").is_file()


def refuse_finished_run(training_args, resume: str | None) -> None:
    """ValueError when this run would train a finished run again (and replace its final model).

    Finished: the checkpoint to resume is at the run's end, or ``output_dir`` holds a final model
    and there is no checkpoint to continue from (training would start over and replace it).
    """
    out = Path(training_args.output_dir)
    further = "raise --max_steps (or --num_train_epochs) to train further, or choose another --output_dir"
    if resume is not None:
        state = read_trainer_state(resume)
        if state is not None and reached_end(state, training_args):
            end = (f"max_steps={training_args.max_steps}" if training_args.max_steps > 0
                   else f"num_train_epochs={training_args.num_train_epochs}")
            raise ValueError(f"{out}: this run is finished ({Path(resume).name} is at step {state.get('global_step')}, "
                             f"{end}); nothing to train: {further}")
        return
    if has_final_model(out):
        state = read_trainer_state(out)
        step = f" (step {state.get('global_step')})" if state else ""
        why = "no checkpoint-N to continue from" if training_args.auto_resume else "--auto_resume is false"
        raise ValueError(f"{out} holds the final model of a finished run{step} and {why}: training again would "
                         "start over and replace it. Choose another --output_dir (or remove the final model from "
                         "this one)")
