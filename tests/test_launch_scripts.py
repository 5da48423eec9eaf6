"""The launch layer: every train and DeepSpeed config loads, every script builds the right command.

Nothing trains here: the scripts run with ``DRY_RUN=1`` (they print the torchrun command) or with a
fake interpreter that echoes what it was asked to run; SLURM's ``srun`` and ``scontrol`` are shims.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava.paths import load_schedule
from llava.train.train import load_train_config, parse_args

from .conftest import requires_deepspeed

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted((ROOT / "configs" / "train").glob("*.json"))
DEEPSPEED_CONFIGS = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))
SCRIPTS = sorted(p for p in (ROOT / "scripts").rglob("*") if p.suffix in (".sh", ".sbatch"))
STAGE_SCRIPTS = {
    "scripts/pretrain_pdrop.sh": "configs/train/llava-1.5-pretrain.json",
    "scripts/finetune_pdrop.sh": "configs/train/llava-1.5-finetune.json",
    "scripts/finetune_lora_pdrop.sh": "configs/train/llava-1.5-lora.json",
    "scripts/pretrain_pdrop_next.sh": "configs/train/llava-next-pretrain.json",
    "scripts/finetune_pdrop_next.sh": "configs/train/llava-next-finetune.json",
}
ENV_FLAGS = {  # launcher variable -> training flag
    "OUTPUT_DIR": "--output_dir", "MODEL_NAME_OR_PATH": "--model_name_or_path", "VISION_TOWER": "--vision_tower",
    "DATA_PATH": "--data_path", "IMAGE_FOLDER": "--image_folder",
    "PRETRAIN_MM_MLP_ADAPTER": "--pretrain_mm_mlp_adapter", "GLOBAL_BATCH_SIZE": "--global_batch_size",
    "PER_DEVICE_BATCH_SIZE": "--per_device_train_batch_size", "DEEPSPEED": "--deepspeed",
    "WANDB_PROJECT": "--wandb_project", "RUN_NAME": "--run_name",
}
LAUNCH_VARS = {*ENV_FLAGS, "CONFIG", "GPUS", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PYTHON",
               "DRY_RUN", "STAGE_SCRIPT", "PDROP_ROOT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
               "TORCH_EXTENSIONS_DIR", "WORLD_SIZE", "RANK", "LOCAL_RANK"}
TINY_LAYERS, LLAVA_7B_LAYERS = 4, 32
TOPOLOGIES_7B = (8, 16)  # one node and the SLURM default (2 nodes) of 8 GPUs


def is_tiny(path: Path) -> bool:
    return path.name.startswith("tiny-")


def is_cpu_preset(path: Path) -> bool:
    """The tiny presets and the demos' presets: CPU runs of small models, 2 processes (not 7B on GPU nodes)."""
    return bool(json.loads(path.read_text()).get("use_cpu"))


OUTPUT_ROOTS = ("checkpoints/", "playground/demo/", "playground/huge-demo/")  # folders .gitignore keeps out


# --------------------------------------------------------------------------- train configs

@pytest.fixture
def no_world(monkeypatch):
    """One process; afterwards, no trace of the TrainingArguments built (they set global state)."""
    from accelerate.state import AcceleratorState, PartialState

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    state_before = bool(PartialState._shared_state)
    yield monkeypatch
    gc.collect()  # drops their DeepSpeed config: a global weakref to it marks ZeRO-3 as on
    if not state_before:
        AcceleratorState._reset_state(reset_partial_state=True)


def parse_config(path: Path, *flags: str):
    argv = ["--config", str(path), *flags]
    if not is_tiny(path):
        argv += ["--use_cpu", "true"]  # the 7B presets ask for bf16 on GPUs; this test runs anywhere
    return parse_args(argv)


@requires_deepspeed  # every preset names a DeepSpeed config, which TrainingArguments loads
@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_train_config_parses(path, no_world):
    raw = json.loads(path.read_text())
    assert raw.get("description"), "every preset says what it is for"
    assert load_train_config(path).keys() == raw.keys() - {"description"}
    model_args, data_args, train_args = parse_config(path)
    assert train_args.gradient_accumulation_steps == raw["global_batch_size"] // raw["per_device_train_batch_size"]
    assert raw["global_batch_size"] % raw["per_device_train_batch_size"] == 0
    assert (ROOT / raw["deepspeed"]).is_file()
    assert raw["output_dir"].startswith(OUTPUT_ROOTS)
    if model_args.pdrop_schedule is not None:  # the demos name theirs on the command line
        load_schedule(model_args.pdrop_schedule).validate_for(TINY_LAYERS if is_cpu_preset(path) else LLAVA_7B_LAYERS)
    anyres = data_args.image_aspect_ratio == "anyres"
    if "vision_tower" in raw:  # built from parts (a LLaVA checkpoint, as the huge demo's focus stage, brings its grid)
        assert anyres == (model_args.mm_patch_merge_type == "spatial_unpad") == (model_args.image_grid_pinpoints is not None)
        if anyres:
            pinpoints = json.loads(model_args.image_grid_pinpoints)
            assert pinpoints and all(len(p) == 2 for p in pinpoints)
    assert (data_args.version == "plain") == train_args.tune_mm_mlp_adapter
    del model_args, data_args, train_args


@pytest.mark.parametrize("path", [p for p in TRAIN_CONFIGS if is_tiny(p)], ids=lambda p: p.stem)
def test_tiny_config_uses_embedded_assets(path, no_world):
    raw = json.loads(path.read_text())
    for key in ("model_name_or_path", "vision_tower", "data_path", "image_folder"):
        assert raw[key].startswith("playground/tiny/"), key
    assert raw["use_cpu"] and not raw["bf16"] and raw["report_to"] == "none"
    assert raw["pdrop_schedule"] == "tiny" and raw["attn_implementation"] == "eager"
    assert accumulation(raw, world=2) * 2 * raw["per_device_train_batch_size"] == raw["global_batch_size"]


def accumulation(raw: dict, world: int) -> int:
    """The gradient accumulation TrainingArguments derives for a preset on ``world`` ranks (it must divide).

    Arithmetic, not TrainingArguments: with WORLD_SIZE > 1 that would set up a process group.
    """
    per_step = world * raw["per_device_train_batch_size"]
    assert raw["global_batch_size"] % per_step == 0, f"{raw['global_batch_size']} samples on {world} ranks"
    return raw["global_batch_size"] // per_step


@pytest.mark.parametrize("path", [p for p in TRAIN_CONFIGS if is_cpu_preset(p)], ids=lambda p: p.stem)
def test_cpu_config_divides_on_two_processes(path):
    raw = json.loads(path.read_text())
    assert raw["use_cpu"] and not raw["bf16"] and raw["report_to"] == "none"
    assert accumulation(raw, world=2) * 2 * raw["per_device_train_batch_size"] == raw["global_batch_size"]


@pytest.mark.parametrize("path", [p for p in TRAIN_CONFIGS if not is_cpu_preset(p)], ids=lambda p: p.stem)
@pytest.mark.parametrize("world", TOPOLOGIES_7B)
def test_7b_config_divides_on_one_and_two_nodes(path, world):
    raw = json.loads(path.read_text())
    assert accumulation(raw, world) * world * raw["per_device_train_batch_size"] == raw["global_batch_size"]


def test_finetune_configs_load_their_pretrain_stage():
    """Each pretrain_mm_mlp_adapter is written by a projector-only config that the chain runs first."""
    configs = {p.stem: json.loads(p.read_text()) for p in TRAIN_CONFIGS}
    pretrain_outputs = {c["output_dir"] for c in configs.values() if c.get("tune_mm_mlp_adapter")}
    for name, config in configs.items():
        if "pretrain_mm_mlp_adapter" in config:
            adapter = Path(config["pretrain_mm_mlp_adapter"])
            assert adapter.name == "mm_projector.bin" and str(adapter.parent) in pretrain_outputs, name


def test_unknown_config_key_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(TRAIN_CONFIGS[0].read_text()), "learning_rat": 1}))
    with pytest.raises(ValueError, match="learning_rat"):
        load_train_config(bad)


# --------------------------------------------------------------------------- DeepSpeed configs

HF_AUTO_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping")


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.stem)
def test_deepspeed_config(path):
    config = json.loads(path.read_text())
    for key in HF_AUTO_KEYS:
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    assert zero["stage"] in (2, 3)
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # consolidated weights on save
    offload = "offload_optimizer" in zero
    assert ("optimizer" in config) is False  # the Trainer's AdamW (no fused_adam build)
    if offload:
        assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
        assert config["zero_force_ds_cpu_optimizer"] is False


def test_deepspeed_files_by_name():
    names = {p.stem: json.loads(p.read_text())["zero_optimization"] for p in DEEPSPEED_CONFIGS}
    assert names["zero2"]["stage"] == 2 and names["zero3"]["stage"] == 3 and names["zero3_offload"]["stage"] == 3
    assert "offload_param" not in names["zero3"] and "offload_param" in names["zero3_offload"]


def test_cpu_zero2_is_zero2_with_one_bucket():
    """zero2_cpu.json differs from zero2.json only in its fixed bucket sizes (gloo's per-call latency), and the
    bucket holds the largest model trained on CPU processes in one piece."""
    def load(name):
        config = json.loads((ROOT / "configs" / "deepspeed" / f"{name}.json").read_text())
        config.pop("description")
        return config, config["zero_optimization"]

    (cpu, cpu_zero), (gpu, gpu_zero) = load("zero2_cpu"), load("zero2")
    buckets = {"reduce_bucket_size", "allgather_bucket_size"}
    assert {k: v for k, v in cpu.items() if k != "zero_optimization"} == \
        {k: v for k, v in gpu.items() if k != "zero_optimization"}
    assert {k: v for k, v in cpu_zero.items() if k not in buckets} == \
        {k: v for k, v in gpu_zero.items() if k not in buckets}
    assert gpu_zero["reduce_bucket_size"] == "auto"
    largest_cpu_model = 1_200_000  # parameters of the huge demo's LLaVA-NeXT (the demo's LLaVA: 0.86 M)
    assert all(isinstance(cpu_zero[k], int) and cpu_zero[k] >= largest_cpu_model for k in buckets)


def test_cpu_presets_use_the_cpu_deepspeed_config():
    for path in TRAIN_CONFIGS:
        config = json.loads(path.read_text())
        if config.get("use_cpu") and "deepspeed" in config and "zero2" in config["deepspeed"]:
            assert config["deepspeed"] == "configs/deepspeed/zero2_cpu.json", path.name


def _fill_autos(value, filled):
    if isinstance(value, dict):
        return {k: _fill_autos(filled.get(k, v) if v == "auto" else v, filled) for k, v in value.items()}
    return value


@requires_deepspeed
@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.stem)
def test_deepspeed_accepts_config(path):
    """DeepSpeed's own parser, with the "auto" values as the HF Trainer fills them for one process."""
    from deepspeed.runtime.config import DeepSpeedConfig

    filled = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
              "gradient_clipping": 1.0, "enabled": False, "reduce_bucket_size": 4096,
              "stage3_prefetch_bucket_size": 3686, "stage3_param_persistence_threshold": 640}
    config = DeepSpeedConfig(_fill_autos(json.loads(path.read_text()), filled))
    raw = json.loads(path.read_text())["zero_optimization"]
    assert config.zero_optimization_stage == raw["stage"]
    assert config.zero_config.gather_16bit_weights_on_model_save == (raw["stage"] == 3)


# --------------------------------------------------------------------------- scripts

@pytest.fixture
def shims(tmp_path):
    """A PATH folder with a failing ``nvidia-smi`` (a machine without GPUs, wherever the test runs)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    write_exe(folder / "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    return folder


def write_exe(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def clean_env(shim_dir: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    base["PATH"] = f"{shim_dir}:{base['PATH']}"
    return {**base, **env}


def run_script(script: str | Path, *args: str, env: dict, cwd: Path, check: bool = True):
    result = subprocess.run(["bash", str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def dry_run(script: str, *args: str, shims: Path, cwd: Path | None = None, **env: str) -> list[list[str]]:
    """The commands a script prints with DRY_RUN=1, each split as the shell would (the settings comments skipped)."""
    out = run_script(script, *args, env=clean_env(shims, DRY_RUN="1", **env), cwd=cwd or shims).stdout
    return [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]


def dry_run_settings(script: str, *args: str, shims: Path, **env: str) -> dict[str, str]:
    """The effective settings a script prints with DRY_RUN=1 (``#   name   value`` lines), by name."""
    out = run_script(script, *args, env=clean_env(shims, DRY_RUN="1", **env), cwd=shims).stdout
    lines = [line.removeprefix("#").strip() for line in out.splitlines() if line.startswith("#   ")]
    return {line[:18].strip(): line[18:].strip() for line in lines}


def torchrun_options(cmd: list[str]) -> tuple[dict[str, str], list[str]]:
    """(torchrun's options, the arguments of llava.train.train) of a launcher command."""
    assert cmd[:3] == ["python", "-m", "torch.distributed.run"], cmd
    split = cmd.index("llava.train.train")
    assert cmd[split - 1] == "-m"
    launcher = cmd[3:split - 1]
    return dict(zip(launcher[::2], launcher[1::2])), cmd[split + 1:]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_syntax_and_header(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[1].startswith("#"), "a header comment with usage examples"
    assert "set -euo pipefail" in lines


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_carry_no_schedule_or_hyperparameters(script):
    """configs/ is the only place numbers live: no schedule or learning rate typed into a script."""
    code = [line.split(" # ")[0] for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
    for word in ("layer_list", "image_token_ratio", "pdrop_lambda", "learning_rate", "_lr", "0.125", "0.25"):
        assert not any(word in line for line in code), f"{script.name}: {word}"


@pytest.mark.parametrize("script,config", STAGE_SCRIPTS.items(), ids=lambda s: Path(s).stem)
def test_stage_script_defaults(script, config, shims):
    (cmd,) = dry_run(script, shims=shims)
    options, train_argv = torchrun_options(cmd)
    assert options == {"--nnodes": "1", "--node_rank": "0", "--nproc_per_node": "2",  # 2 CPU ranks without GPUs
                       "--master_addr": "127.0.0.1", "--master_port": "29500"}
    assert train_argv == ["--config", config]
    assert (ROOT / config).is_file()


@requires_deepspeed
def test_env_overrides_become_flags_and_extra_args_come_last(shims, tmp_path, no_world):
    overrides = {var: f"value of {var.lower()}" for var in ENV_FLAGS}
    overrides.update(GLOBAL_BATCH_SIZE="48", PER_DEVICE_BATCH_SIZE="2", DEEPSPEED="configs/deepspeed/zero2.json",
                     OUTPUT_DIR=str(tmp_path / "run dir"))
    extra = ["--layer_list", "[2]", "--image_token_ratio_list", "[0.5]", "--output_dir", str(tmp_path / "wins")]
    lines = dry_run("scripts/finetune_pdrop.sh", *extra, shims=shims, cwd=tmp_path,
                    CONFIG="configs/train/tiny-finetune.json", GPUS="3", NNODES="4", NODE_RANK="2",
                    MASTER_ADDR="head-node", MASTER_PORT="12345", **overrides)
    assert lines[0] == ["python", "-m", "llava.data.synthetic", "--out", "playground/tiny"]  # tiny: assets first
    options, train_argv = torchrun_options(lines[1])
    assert options == {"--nnodes": "4", "--node_rank": "2", "--nproc_per_node": "3",
                       "--master_addr": "head-node", "--master_port": "12345"}
    assert train_argv[:2] == ["--config", "configs/train/tiny-finetune.json"]
    assert train_argv[-len(extra):] == extra
    flags = train_argv[2:-len(extra)]
    assert dict(zip(flags[::2], flags[1::2])) == {ENV_FLAGS[var]: value for var, value in overrides.items()}
    # the printed arguments are what llava.train.train accepts, and the last flag wins
    no_world.setenv("WANDB_MODE", "disabled")
    model_args, data_args, train_args = parse_args(train_argv)
    assert train_args.output_dir == str(tmp_path / "wins")
    assert train_args.gradient_accumulation_steps == 24 and train_args.per_device_train_batch_size == 2  # 1 process
    assert data_args.data_path == "value of data_path" and model_args.layer_list == "[2]"
    assert train_args.run_name == "value of run_name" and train_args.deepspeed == "configs/deepspeed/zero2.json"


def test_empty_variables_are_ignored(shims):
    (cmd,) = dry_run("scripts/finetune_pdrop.sh", shims=shims, OUTPUT_DIR="", GPUS="")
    options, train_argv = torchrun_options(cmd)
    assert options["--nproc_per_node"] == "2" and train_argv == ["--config", STAGE_SCRIPTS["scripts/finetune_pdrop.sh"]]


def test_gpu_count_from_nvidia_smi(shims):
    write_exe(shims / "nvidia-smi", 'for i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done')
    (cmd,) = dry_run("scripts/pretrain_pdrop.sh", shims=shims)
    assert torchrun_options(cmd)[0]["--nproc_per_node"] == "4"
    (cmd,) = dry_run("scripts/pretrain_pdrop.sh", shims=shims, CUDA_VISIBLE_DEVICES="1,3")
    assert torchrun_options(cmd)[0]["--nproc_per_node"] == "2"
    (cmd,) = dry_run("scripts/pretrain_pdrop.sh", shims=shims, GPUS="1")
    assert torchrun_options(cmd)[0]["--nproc_per_node"] == "1"


def fake_python(shims: Path) -> Path:
    """An interpreter that reports its arguments, environment and directory instead of running anything."""
    return write_exe(shims / "fake-python", 'echo "ARGS $*"; echo "ENV omp=${OMP_NUM_THREADS:-} '
                                            'ext=${TORCH_EXTENSIONS_DIR:-} pwd=$PWD"')


def test_real_launch_without_gpus_sets_cpu_environment(shims, tmp_path):
    python = fake_python(shims)
    env = clean_env(shims, PYTHON=str(python), CONFIG="configs/train/tiny-pretrain.json")
    out = run_script("scripts/pretrain_pdrop.sh", "--max_steps", "1", env=env, cwd=tmp_path).stdout.splitlines()
    assert out[0] == "ARGS -m llava.data.synthetic --out playground/tiny"
    assert out[2].startswith("ARGS -m torch.distributed.run --nnodes 1 --node_rank 0 --nproc_per_node 2 ")
    assert out[2].endswith("-m llava.train.train --config configs/train/tiny-pretrain.json --max_steps 1")
    assert out[1] == out[3] == f"ENV omp=1 ext={ROOT}/.cache/torch_extensions pwd={ROOT}"
    env["OMP_NUM_THREADS"], env["TORCH_EXTENSIONS_DIR"] = "3", str(tmp_path / "ext")
    out = run_script("scripts/pretrain_pdrop.sh", env=env, cwd=tmp_path).stdout.splitlines()
    assert out[-1] == f"ENV omp=3 ext={tmp_path / 'ext'} pwd={ROOT}"


def test_real_launch_with_gpus_leaves_environment(shims, tmp_path):
    write_exe(shims / "nvidia-smi", 'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"')
    env = clean_env(shims, PYTHON=str(fake_python(shims)))
    out = run_script("scripts/finetune_pdrop.sh", env=env, cwd=tmp_path).stdout.splitlines()
    assert len(out) == 2 and "--nproc_per_node 1 " in out[0] and out[1] == f"ENV omp= ext= pwd={ROOT}"


def test_launcher_runs_directly_and_refuses_bad_values(shims, tmp_path):
    env = clean_env(shims, DRY_RUN="1")
    result = run_script("scripts/lib/launch.sh", env=env, cwd=tmp_path, check=False)
    assert result.returncode != 0 and "CONFIG" in result.stderr
    (line,) = [line for line in run_script("scripts/lib/launch.sh", "--seed", "1", env={**env, "CONFIG": STAGE_SCRIPTS[
        "scripts/finetune_pdrop.sh"]}, cwd=tmp_path).stdout.splitlines() if not line.startswith("#")]
    assert shlex.split(line)[-4:] == ["--config", STAGE_SCRIPTS["scripts/finetune_pdrop.sh"], "--seed", "1"]
    for bad in ({"CONFIG": "configs/train/missing.json"}, {"GPUS": "eight"}, {"GPUS": "0"},
                {"NNODES": "2", "NODE_RANK": "2"}, {"MASTER_PORT": "http"}):
        result = run_script("scripts/finetune_pdrop.sh", env={**env, **bad}, cwd=tmp_path, check=False)
        assert result.returncode == 2 and "launch.sh:" in result.stderr and not result.stdout, bad


def test_dry_run_prints_the_effective_settings(shims):
    """World size, per-device batch, accumulation, DeepSpeed file and stage, the schedule; CPU processes said so."""
    tiny = dry_run_settings("scripts/finetune_pdrop.sh", shims=shims, CONFIG="configs/train/tiny-finetune.json")
    assert tiny["processes"] == "2 = 1 node(s) x 2 per node; no GPU found, so these are CPU processes (gloo)"
    assert tiny["per-device batch"] == "4" and tiny["grad accumulation"] == "1 (global batch 8 = 2 x 4 x 1)"
    assert tiny["DeepSpeed"] == "configs/deepspeed/zero3.json: ZeRO stage 3"
    assert tiny["schedule"] == "tiny: layer_list [1, 2, 3], image_token_ratio_list [0.5, 0.25, 0.125]"
    assert "warning" not in tiny  # the tiny configs set use_cpu
    write_exe(shims / "nvidia-smi", 'for i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done')
    big = dry_run_settings("scripts/finetune_pdrop.sh", "--deepspeed", "./scripts/zero2.json", "--version", "v1",
                           "--layer_list", "[8,16,24]", "--image_token_ratio_list", "[0.5,0.25,0.125]", shims=shims,
                           NNODES="2")
    assert big["processes"] == "8 = 2 node(s) x 4 per node"
    assert big["per-device batch"] == "8" and big["grad accumulation"] == "2 (global batch 128 = 8 x 8 x 2)"
    assert big["DeepSpeed"] == f"{ROOT}/configs/deepspeed/zero2.json: ZeRO stage 2"  # LLaVA's path, ours found
    assert big["schedule"] == "layer_list [8,16,24], image_token_ratio_list [0.5,0.25,0.125]"
    assert big["model"] == "lmsys/vicuna-7b-v1.5 + openai/clip-vit-large-patch14-336"


def test_dry_run_of_a_gpu_config_without_gpus_warns(shims):
    settings = dry_run_settings("scripts/pretrain_pdrop.sh", shims=shims)
    assert settings["processes"].endswith("no GPU found, so these are CPU processes (gloo)")
    assert settings["warning"].startswith("no GPU here and use_cpu is not set")
    assert settings["schedule"].startswith("pdrop-default: layer_list [8, 16, 24]")


def settings_python(shims: Path) -> Path:
    """An interpreter that runs the settings check for real and only reports anything else it is asked to run."""
    return write_exe(shims / "settings-python", f'if [[ "$2" == llava.train.settings ]]; then exec {sys.executable} '
                                                 '"$@"; fi\necho "ARGS $*"')


@pytest.mark.parametrize("dry", ["1", "0"])
def test_settings_that_cannot_work_stop_before_torchrun(shims, tmp_path, dry):
    env = clean_env(shims, PYTHON=str(settings_python(shims)), DRY_RUN=dry, GPUS="3")
    result = run_script("scripts/finetune_pdrop.sh", env=env, cwd=tmp_path, check=False)
    assert result.returncode == 1 and "torch.distributed.run" not in result.stdout
    assert result.stderr.strip() == ("llava.train.settings: error: global_batch_size=128 is not a multiple of world "
                                     "size 3 x per_device_train_batch_size 8")
    result = run_script("scripts/finetune_pdrop.sh", "--version", "v0", env={**env, "GPUS": "2"}, cwd=tmp_path,
                        check=False)
    assert result.returncode == 1 and result.stderr.startswith("llava.train.settings: error: --version v0: ")


def test_a_real_launch_prints_the_settings_on_stderr(shims, tmp_path):
    env = clean_env(shims, PYTHON=str(settings_python(shims)), CONFIG="configs/train/tiny-pretrain.json")
    result = run_script("scripts/pretrain_pdrop.sh", env=env, cwd=tmp_path)
    assert result.stdout.splitlines()[-1].startswith("ARGS -m torch.distributed.run ")
    assert "# effective settings:" in result.stderr and "no GPU found, so these are CPU processes" in result.stderr


# --------------------------------------------------------------------------- SLURM

@pytest.fixture
def slurm(shims, tmp_path):
    """Fake ``scontrol`` (two hosts) and ``srun`` (runs its command as task 0 then task 1, logs its options)."""
    write_exe(shims / "scontrol", '[[ "$1 $2" == "show hostnames" ]] || exit 1\nprintf "gpu-a-01\\ngpu-b-02\\n"')
    write_exe(shims / "srun", f'opts=()\nwhile [[ "${{1:-}}" == -* ]]; do opts+=("$1"); shift; done\n'
                              f'echo "${{opts[*]}} cpus=${{SRUN_CPUS_PER_TASK:-}}" > {tmp_path}/srun.log\n'
                              'for rank in 0 1; do SLURM_PROCID=$rank "$@" || exit $?; done')
    env = clean_env(shims, DRY_RUN="1", SLURM_JOB_NODELIST="gpu-a-01,gpu-b-02", SLURM_NNODES="2",
                    SLURM_GPUS_ON_NODE="8", SLURM_CPUS_PER_TASK="64", SLURM_SUBMIT_DIR=str(ROOT))
    return env


def slurm_commands(out: str) -> list[tuple[dict[str, str], list[str]]]:
    return [torchrun_options(shlex.split(line)) for line in out.splitlines() if not line.startswith("#")]


def test_slurm_runs_one_stage_script_per_node(slurm, tmp_path):
    extra = ["--image_token_ratio_list", "[0.5, 0.25]"]
    out = run_script("scripts/slurm/pdrop.sbatch", *extra, env=slurm, cwd=tmp_path).stdout
    commands = slurm_commands(out)
    assert [options["--node_rank"] for options, _ in commands] == ["0", "1"]
    for options, train_argv in commands:
        assert options["--nnodes"] == "2" and options["--nproc_per_node"] == "8"
        assert options["--master_addr"] == "gpu-a-01" and options["--master_port"] == "29500"
        assert train_argv == ["--config", STAGE_SCRIPTS["scripts/finetune_pdrop.sh"], *extra]
    assert (tmp_path / "srun.log").read_text().split() == [
        "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "cpus=64"]


def test_slurm_stage_script_and_overrides(slurm, tmp_path):
    env = {**slurm, "STAGE_SCRIPT": "scripts/pretrain_pdrop.sh", "MASTER_PORT": "4000", "GPUS": "4",
           "OUTPUT_DIR": "checkpoints/slurm-run"}
    commands = slurm_commands(run_script("scripts/slurm/pdrop.sbatch", env=env, cwd=tmp_path).stdout)
    assert len(commands) == 2
    for options, train_argv in commands:
        assert options["--master_port"] == "4000" and options["--nproc_per_node"] == "4"
        assert train_argv == ["--config", STAGE_SCRIPTS["scripts/pretrain_pdrop.sh"],
                              "--output_dir", "checkpoints/slurm-run"]


def test_slurm_from_the_spool_copy_sbatch_runs(slurm, tmp_path):
    """sbatch runs a copy of the file elsewhere: the repository comes from SLURM_SUBMIT_DIR."""
    spool = tmp_path / "spool" / "job42"
    spool.mkdir(parents=True)
    shutil.copy(ROOT / "scripts/slurm/pdrop.sbatch", spool / "slurm_script")
    result = subprocess.run(["bash", str(spool / "slurm_script")], cwd=ROOT, env=slurm, capture_output=True,
                            text=True, check=True)
    assert [o["--node_rank"] for o, _ in slurm_commands(result.stdout)] == ["0", "1"]
    del slurm["SLURM_SUBMIT_DIR"]
    result = subprocess.run(["bash", str(spool / "slurm_script")], cwd=tmp_path, env=slurm, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "PDROP_ROOT" in result.stderr


def test_slurm_outside_an_allocation_fails_clearly(shims, tmp_path):
    result = run_script("scripts/slurm/pdrop.sbatch", env=clean_env(shims, DRY_RUN="1"), cwd=tmp_path, check=False)
    assert result.returncode != 0 and "SLURM allocation" in result.stderr


def test_sbatch_defaults_are_overridable_directives():
    directives = re.findall(r"^#SBATCH (--[\w-]+)=", (ROOT / "scripts/slurm/pdrop.sbatch").read_text(), re.M)
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--cpus-per-task", "--time"} <= set(directives)
