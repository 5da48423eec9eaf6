"""What a training launch will run with, worked out before any process starts.

``scripts/lib/launch.sh`` runs this before torchrun (and ``DRY_RUN=1`` prints it next to the
command): the processes (and whether they are CPU processes because no GPU was found), the
per-device batch, the gradient accumulation and global batch, the DeepSpeed config and its ZeRO
stage, the schedule, the model and the output folder. Settings that cannot work stop the launch
with one error line before any process starts: a LLaVA flag with no equivalent
(llava/train/llava_compat.py), a global batch that does not divide over the processes, a missing
config, DeepSpeed file or named schedule. It reads the config file and the flags as given, without
importing torch or transformers (a fraction of a second); every flag is checked again, by the same
parser as training, on each rank. Launch::

    python -m llava.train.settings --world_size 16 --nodes 2 --gpus_found 8 \\
        --config configs/train/llava-1.5-finetune.json -- --layer_list '[8,16,24]' ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import ArgumentParser, cli_main
from ..paths import CONFIGS_DIR
from .llava_compat import to_train_argv

DEFAULT_PER_DEVICE_BATCH = 8  # transformers.TrainingArguments' per_device_train_batch_size


def accumulation_steps(global_batch_size: int, world_size: int, per_device_batch_size: int) -> int:
    """Gradient accumulation giving ``global_batch_size`` samples per step; ValueError when it does not divide."""
    per_step = world_size * per_device_batch_size
    if global_batch_size % per_step:
        raise ValueError(f"global_batch_size={global_batch_size} is not a multiple of world size {world_size} x "
                         f"per_device_train_batch_size {per_device_batch_size}")
    return global_batch_size // per_step


def flag_values(argv: list[str]) -> dict[str, str]:
    """The last value of every ``--flag value`` / ``--flag=value`` in ``argv``; a flag without one is ``"true"``."""
    values, i = {}, 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        if not eq:
            value = "true"
            if i < len(argv) and not argv[i].startswith("--"):
                value, i = argv[i], i + 1
        values[name] = value
    return values


def read_config(path: str | None) -> dict:
    """The train config's fields (``description`` dropped); {} without one."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise FileNotFoundError(f"train config {path} does not exist")
    data = json.loads(Path(path).read_text())
    data.pop("description", None)
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in data.items()}


def deepspeed_line(path: str | None) -> str:
    """``configs/deepspeed/zero3.json: ZeRO stage 3 (parameters and optimizer offloaded to cpu)``."""
    if not path:
        return "none (plain DDP)"
    if not Path(path).is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} does not exist")
    zero = json.loads(Path(path).read_text()).get("zero_optimization", {})
    offload = [what for what in ("param", "optimizer") if f"offload_{what}" in zero]
    device = zero[f"offload_{offload[0]}"].get("device", "?") if offload else None
    where = f" ({' and '.join(offload)} offloaded to {device})" if offload else ""
    return f"{path}: ZeRO stage {zero.get('stage', 0)}{where}"


def schedule_line(values: dict[str, str]) -> str:
    """The schedule the flags ask for, as far as it is known before the model loads."""
    if values.get("no_pdrop", "false").lower() in ("true", "1", "yes"):
        return "off (--no_pdrop)"
    method = f", ranking {values['drop_method']}" if values.get("drop_method") else ""
    if values.get("layer_list") or values.get("image_token_ratio_list"):
        return (f"layer_list {values.get('layer_list')}, image_token_ratio_list "
                f"{values.get('image_token_ratio_list')}{method}")
    if values.get("pdrop_lambda") or values.get("pdrop_stages"):
        return (f"lambda {values.get('pdrop_lambda', 0.5)}, {values.get('pdrop_stages', 4)} stages (boundaries from "
                f"the model's depth){method}")
    if values.get("pdrop_budget"):
        return f"budget {values['pdrop_budget']} (lambda solved when the model loads){method}"
    name = values.get("pdrop_schedule")
    if name:
        path = Path(name) if name.endswith(".json") else CONFIGS_DIR / "schedules" / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"no schedule {name!r} (looked at {path})")
        data = json.loads(path.read_text())
        lists = f"layer_list {data['layer_list']}, image_token_ratio_list {data['image_token_ratio_list']}"
        return f"{name}: {lists}{method}"
    return "the checkpoint's saved schedule, if it has one (none for an LLM + vision tower)"


def settings_lines(args: argparse.Namespace) -> list[str]:
    """The effective settings, one ``name  value`` line each."""
    values = {**read_config(args.config), **flag_values(to_train_argv(args.train_args))}
    per_device = int(values.get("per_device_train_batch_size", DEFAULT_PER_DEVICE_BATCH))
    if values.get("global_batch_size"):
        accumulation = accumulation_steps(int(values["global_batch_size"]), args.world_size, per_device)
    else:
        accumulation = int(values.get("gradient_accumulation_steps", 1))
    per_node = args.world_size // args.nodes
    cpu = "; no GPU found, so these are CPU processes (gloo)" if args.gpus_found == 0 else ""
    lines = [("processes", f"{args.world_size} = {args.nodes} node(s) x {per_node} per node{cpu}"),
             ("per-device batch", str(per_device)),
             ("grad accumulation", f"{accumulation} (global batch {args.world_size * per_device * accumulation} = "
                                   f"{args.world_size} x {per_device} x {accumulation})"),
             ("DeepSpeed", deepspeed_line(values.get("deepspeed"))),
             ("schedule", schedule_line(values)),
             ("model", " + ".join(values[k] for k in ("model_name_or_path", "vision_tower") if values.get(k)) or "?"),
             ("output", values.get("output_dir", "?"))]
    if args.gpus_found == 0 and values.get("use_cpu", "false").lower() not in ("true", "1", "yes"):
        lines.append(("warning", "no GPU here and use_cpu is not set: training will look for CUDA "
                                 "(add --use_cpu true, or use a tiny-*.json config)"))
    return [f"{name:<18} {value}" for name, value in lines]


def main(argv: list[str] | None = None) -> list[str]:
    parser = ArgumentParser("llava.train.settings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--world_size", type=int, required=True, help="processes over all nodes")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default: %(default)s)")
    parser.add_argument("--gpus_found", type=int, default=None, help="GPUs found on this node (0: CPU processes)")
    parser.add_argument("--config", help="train config JSON (configs/train/*.json)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then llava.train.train's flags")
    args = parser.parse_args(argv)
    args.train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.world_size < 1 or args.nodes < 1:
        raise ValueError("--world_size and --nodes must be >= 1")
    lines = settings_lines(args)
    print("# effective settings:")
    for line in lines:
        print(f"#   {line}")
    return lines


if __name__ == "__main__":
    cli_main(main, prog="llava.train.settings")
