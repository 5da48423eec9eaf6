"""Train LLaVA / LLaVA-NeXT with PyramidDrop: pretraining (projector), finetuning, LoRA, QLoRA.

Launch (what ``scripts/*_pdrop.sh`` run; any flag overrides the ``--config`` file)::

    torchrun --nproc_per_node 8 -m llava.train.train --config configs/train/llava-1.5-finetune.json \\
        --layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'
    torchrun --nproc_per_node 2 -m llava.train.train --config configs/train/tiny-finetune.json  # CPU, gloo

Steps: parse the arguments (config file + flags), set up logging and the CPU process group,
build the model (assemble LLM + vision tower + projector, or load a LLaVA checkpoint), choose what
trains, build the dataset, train (resuming from the newest complete checkpoint), save.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch
import transformers

from .arguments import DataArguments, ModelArguments, TrainingArguments

DATACLASSES = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """``--config FILE`` (JSON of any fields below) gives defaults; command-line flags override them.

    Unknown keys in the file are an error naming them. On a machine without CUDA, a process group
    on gloo is created first so DeepSpeed and accelerate agree on the world size.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _pop_flag(argv, "--config")
    defaults = load_train_config(config_path) if config_path else {}
    _prepare_cpu_processes(defaults, argv)
    parser = transformers.HfArgumentParser(DATACLASSES)
    parser.set_defaults(**defaults)
    for action in parser._actions:  # a field given by the file is no longer required on the command line
        if action.dest in defaults:
            action.required = False
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


def load_train_config(path: str | Path) -> dict:
    """The fields of a ``configs/train/*.json`` file (its ``description`` dropped), checked against the dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train config {path} does not exist")
    data = json.loads(path.read_text())
    data.pop("description", None)
    known = {f.name for cls in DATACLASSES for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown training arguments {unknown}")
    return data


def _pop_flag(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 == len(argv):
                raise ValueError(f"{flag} needs a value")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def _prepare_cpu_processes(defaults: dict, argv: list[str]) -> None:
    """Several CPU processes: gloo, and make accelerate use that state (see docs/environment-notes)."""
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return
    from accelerate import PartialState

    if defaults.get("deepspeed") or any(a.startswith("--deepspeed") for a in argv):
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    defaults.setdefault("accelerator_config", {"use_configured_state": True})
