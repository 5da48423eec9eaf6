"""Argument lists for training runs on CPU and a callback that stops one (the tiny ``assets`` come from
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback


def train_argv(assets: dict[str, Path], output_dir: Path, **overrides) -> list[str]:
    """Flags of a short single-process CPU run (finetune with PyramidDrop); overrides win."""
    flags = {
        "model_name_or_path": assets["llm"], "vision_tower": assets["vision"],
        "data_path": assets["data"] / "finetune.json", "image_folder": assets["data"] / "images",
        "version": "vicuna_v1", "output_dir": output_dir, "use_cpu": True, "report_to": "none",
        "per_device_train_batch_size": 4, "max_steps": 4, "learning_rate": 3e-3, "logging_steps": 1,
        "save_strategy": "steps", "save_steps": 2, "layer_list": "[1,2,3]",
        "image_token_ratio_list": "[0.5,0.25,0.125]", "attn_implementation": "eager", "model_max_length": 512,
        "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True,
    }
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


class StopAt(TrainerCallback):
    """Ends training after ``step`` (as a killed job would, right after its checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
