"""Release a trained checkpoint on the Hugging Face Hub: weights, tokenizer, processor and a model card.

Launch::

    # build the upload folder next to the checkpoint and list it; nothing leaves the machine
    python -m llava.release --checkpoint ./checkpoints/llava-v1.5-7b-pdrop --repo_id my-org/llava-v1.5-7b-pdrop \\
        --dry_run
    # build it again and push it (token from HF_TOKEN or `hf auth login`)
    python -m llava.release --checkpoint ./checkpoints/llava-v1.5-7b-pdrop --repo_id my-org/llava-v1.5-7b-pdrop \\
        --private --license apache-2.0 --base_model_id lmsys/vicuna-7b-v1.5

What it does:

- checks the checkpoint: a ``llava`` / ``llava_next`` ``config.json``, full weights, a tokenizer;
- assembles ``<checkpoint>-hub-upload`` (a sibling; ``--out_dir`` to choose) in a temporary folder
  renamed into place: safetensors weights (a ``pytorch_model.bin`` checkpoint is loaded with the
  stock class and re-saved), ``config.json`` naming the stock transformers class (the PyramidDrop
  schedule stays in ``config.pdrop``), the generation config, tokenizer and processor files,
  ``llava_training_args.json`` and a ``README.md`` model card;
- leaves training state out (optimizer, scheduler, RNG, ``training_args.bin``, ``global_step*``,
  ``checkpoint-*``, LoRA ``adapter/``) and lists what it left out;
- publishes no path of the training machine: the base model and vision tower appear as Hub ids
  (``--base_model_id`` / ``--vision_tower_id``, or the training arguments' values when they are
  Hub ids) or else as their folders' base names; other paths in ``llava_training_args.json``
  become base names; ``_name_or_path`` keys are dropped; the built folder is checked for the
  checkpoint's and the arguments' absolute paths before it is put in place;
- the card reports what ran: optimizer steps, the epochs they amount to (``trainer_state.json``)
  and the schedule's stages with layers numbered from 0, as ``python -m llava.quicklook`` does;
- lists exactly the files that are uploaded (the dry run too); without ``--dry_run``: creates the
  repository (an existing one is reused) and uploads those files in one commit.

The checkpoint itself is only read, never written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .cli import ArgumentParser, cli_main
from .paths import TRAINER_STATE_FILE, TRAINING_ARGS_FILE
from .pdrop.schedule import PDropConfig

STOCK_CLASSES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}
PDROP_CLASSES = {"llava": "PDropLlavaForConditionalGeneration", "llava_next": "PDropLlavaNextForConditionalGeneration"}
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
TOKENIZER_FILES = VOCAB_FILES + ("merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json")
TEMPLATE_FOLDER = "additional_chat_templates"  # transformers saves extra named chat templates here
CARD_MARKER = "<!-- model card written by `python -m llava.release` -->"
SECRET_KEY = re.compile(r"((hub|hf|api|auth|access|wandb)_)?token|.*(secret|password|api_key)", re.IGNORECASE)
MAX_SHARD_SIZE = "5GB"  # when re-saving a pytorch_model.bin checkpoint

LEFT_OUT_REASONS = (  # (name pattern, why it is not released); first match wins
    (r"optimizer\.(pt|bin)", "optimizer state"),
    (r"scheduler\.pt", "learning-rate scheduler state"),
    (r"rng_state.*\.pth", "RNG state"),
    (r"scaler\.pt", "loss-scaler state"),
    (r"training_args\.bin", f"pickled TrainingArguments ({TRAINING_ARGS_FILE} is the readable copy)"),
    (r"trainer_state\.json", "trainer log"),
    (r"global_step.*", "DeepSpeed ZeRO state"),
    (r"latest|zero_to_fp32\.py", "DeepSpeed helper"),
    (r"checkpoint-.*", "intermediate checkpoint"),
    (r"\.staging", "unfinished save of the training code"),
    (r"adapter|adapter_model\..*|adapter_config\.json", "LoRA adapters (the merged weights are released)"),
    (r"pytorch_model.*\.bin(\.index\.json)?", "pickled weights (superseded by safetensors)"),
    (r"README\.md", "replaced by the generated model card"),
    (r"mm_projector\.(bin|safetensors)", "projector-only weights (part of the full weights)"),
    (r"skipped_bad_images\.jsonl", "training data report (--skip_bad_images)"),
    (r"llava_manifest\.json", "checkpoint manifest (file hashes for resuming)"),
)


@dataclass
class UploadPlan:
    """What :func:`build_upload_folder` will write, decided from the checkpoint alone (nothing written)."""

    checkpoint: Path
    config: dict[str, Any]
    """``config.json`` as written to the upload folder (``architectures`` = the stock class)."""
    weights: list[Path] = field(default_factory=list)
    """Safetensors files copied as they are (with their index when sharded)."""
    convert: bool = False
    """True when the weights are ``pytorch_model*.bin``: loaded with the stock class, re-saved as safetensors."""
    files: list[Path] = field(default_factory=list)
    """Generation config, tokenizer and processor files (and folders) copied as they are."""
    training_args: dict[str, Any] | None = None
    """``llava_training_args.json`` (secrets redacted, local paths reduced to base names), None when absent."""
    trainer_state: dict[str, Any] | None = None
    """The checkpoint's ``trainer_state.json`` (steps and epochs that ran), None when absent."""
    models: dict[str, str | None] = field(default_factory=dict)
    """``model_name_or_path`` / ``vision_tower`` as released: a Hub id, or a local folder's base name."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Checkpoint entries not released -> why."""
    notes: list[str] = field(default_factory=list)
    """Fixes made and things a user of the release will miss."""

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


# ---------------------------------------------------------------------------------------------- checks


def check_repo_id(repo_id: str) -> None:
    """``org/name`` with the Hub's characters, else ValueError naming the problem."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id={repo_id!r} must be of the form org/name (a user or organisation, then the model)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repository id: {err}") from None


def _read_config(checkpoint: Path) -> dict[str, Any]:
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    path = checkpoint / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} has no config.json: not a transformers checkpoint")
    config = json.loads(path.read_text())
    model_type = config.get("model_type")
    if model_type not in STOCK_CLASSES:
        hint = (" (an original-format LLaVA checkpoint: convert it first with python -m llava.model.convert)"
                if str(model_type).startswith("llava") else "")
        raise ValueError(f"{path}: model_type={model_type!r} is not one of {sorted(STOCK_CLASSES)}{hint}")
    return config


def _find_weights(checkpoint: Path) -> tuple[list[Path], bool]:
    """The safetensors files to copy, or ``([], True)`` when pickled weights must be converted."""
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in shards if not (checkpoint / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not in the checkpoint: {missing}")
        return [index] + [checkpoint / name for name in shards], False
    if (checkpoint / "model.safetensors").is_file():
        return [checkpoint / "model.safetensors"], False
    if (checkpoint / "pytorch_model.bin").is_file() or (checkpoint / "pytorch_model.bin.index.json").is_file():
        return [], True
    raise FileNotFoundError(f"checkpoint {checkpoint} has no weights (model.safetensors, model.safetensors.index.json "
                            f"or pytorch_model.bin){_why_no_weights(checkpoint)}")


def _why_no_weights(checkpoint: Path) -> str:
    names = {p.name for p in checkpoint.iterdir()}
    if any(n.startswith("model-") and n.endswith(".safetensors") for n in names):
        return "; its model-*.safetensors shards lack their model.safetensors.index.json"
    if names & {"adapter", "adapter_model.safetensors", "adapter_model.bin"}:
        return "; it holds LoRA adapters only: save the merged model (--lora_merge) and release that"
    if any(n.startswith("global_step") for n in names):
        return "; it holds DeepSpeed ZeRO shards only: consolidate them first (zero_to_fp32.py)"
    if "mm_projector.bin" in names:
        return "; it holds the pretrained projector only: there is no full model to release before finetuning"
    subs = sorted(n for n in names if n.startswith("checkpoint-"))
    return f"; pass one of its intermediate checkpoints instead: {subs}" if subs else ""


def _find_tokenizer_and_processor(checkpoint: Path, notes: list[str]) -> list[Path]:
    present = {p.name for p in checkpoint.iterdir()}
    missing = ([] if "tokenizer_config.json" in present else ["tokenizer_config.json"]) + (
        [] if present & set(VOCAB_FILES) else [f"a vocabulary ({' or '.join(VOCAB_FILES)})"])
    if missing:
        raise FileNotFoundError(
            f"checkpoint {checkpoint} has no tokenizer: missing {' and '.join(missing)}. A released model without "
            "its tokenizer cannot be used; save it into the checkpoint (tokenizer.save_pretrained(checkpoint))")
    names = [n for n in TOKENIZER_FILES + PROCESSOR_FILES if n in present]
    names += sorted(n for n in present if n.startswith("chat_template."))
    names += [TEMPLATE_FOLDER] if (checkpoint / TEMPLATE_FOLDER).is_dir() else []
    processor = checkpoint / "processor_config.json"
    has_image_processor = "preprocessor_config.json" in present or (
        processor.is_file() and "image_processor" in json.loads(processor.read_text()))
    if not has_image_processor:
        notes.append("no image processor config (preprocessor_config.json): AutoProcessor.from_pretrained will fail; "
                     "save the model's processor (LlavaProcessor.save_pretrained) into the checkpoint")
    elif not processor.is_file():
        notes.append("no processor_config.json: AutoProcessor builds a LlavaProcessor with default settings "
                     "(patch size, image token); save the model's LlavaProcessor into the checkpoint")
    return [checkpoint / n for n in names]


def _read_training_args(checkpoint: Path, notes: list[str]) -> dict[str, Any] | None:
    path = checkpoint / TRAINING_ARGS_FILE
    if not path.is_file():
        notes.append(f"no {TRAINING_ARGS_FILE}: the model card says the training arguments are unknown")
        return None
    redacted: list[str] = []
    args = _redact(json.loads(path.read_text()), redacted)
    if redacted:
        notes.append(f"{TRAINING_ARGS_FILE}: redacted {redacted}")
    return args


def _redact(value: Any, redacted: list[str], key: str = "") -> Any:
    """Secrets (``*token``, ``*secret``, ...) replaced, so a pasted token never reaches the Hub."""
    if isinstance(value, dict):
        return {k: _redact(v, redacted, k) for k, v in value.items()}
    if SECRET_KEY.fullmatch(key) and isinstance(value, str) and value and not value.startswith("<"):
        redacted.append(key)
        return "<redacted>"
    return value


def _left_out(checkpoint: Path, released: set[str], convert: bool) -> dict[str, str]:
    left_out = {}
    for path in sorted(checkpoint.iterdir()):
        if path.name in released or path.name in ("config.json", TRAINING_ARGS_FILE):
            continue
        name = path.name + ("/" if path.is_dir() else "")
        why = next((why for pattern, why in LEFT_OUT_REASONS if re.fullmatch(pattern, path.name)),
                   "not part of a release")
        if convert and path.name.startswith("pytorch_model"):
            why = "converted to safetensors"
        left_out[name] = why
    return left_out


def plan_upload(checkpoint: str | Path, base_model_id: str | None = None,
                vision_tower_id: str | None = None) -> UploadPlan:
    """Check ``checkpoint`` and decide what is released; raises naming what is missing or wrong.

    ``base_model_id`` / ``vision_tower_id`` name the Hub ids of the language model and vision tower
    (by default the training arguments' values when they are Hub ids, else their base names).
    """
    checkpoint = Path(checkpoint)
    config = _without_name_or_path(_read_config(checkpoint))
    weights, convert = _find_weights(checkpoint)
    notes: list[str] = []
    stock = STOCK_CLASSES[config["model_type"]]
    if config.get("architectures") != [stock]:
        notes.append(f"config.json: architectures {config.get('architectures')} -> [{stock!r}] (loads with stock "
                     "transformers; this package's classes still apply the saved schedule)")
        config = {**config, "architectures": [stock]}
    files = _find_tokenizer_and_processor(checkpoint, notes)
    if (checkpoint / "generation_config.json").is_file():
        files.insert(0, checkpoint / "generation_config.json")
    side = (_read_json(checkpoint / "tokenizer_config.json") or {}).get("padding_side", "right")
    if side != "left":
        notes.append(f"tokenizer_config.json: padding_side {side!r} -> 'left' (batched generation pads on the left)")
    training_args = _read_training_args(checkpoint, notes)
    models = _public_models(training_args, {"model_name_or_path": base_model_id, "vision_tower": vision_tower_id},
                            notes)
    if training_args is not None:
        training_args = _strip_local_paths(training_args, models, notes)
    state = _read_json(checkpoint / TRAINER_STATE_FILE)
    released = {p.name for p in weights + files}
    return UploadPlan(checkpoint, config, weights, convert, files, training_args, state, models,
                      _left_out(checkpoint, released, convert), notes)


# ---------------------------------------------------------------------------------------------- local paths
# Nothing of the machine that trained the model is published: model arguments become Hub ids or base
# names, other paths base names, ``_name_or_path`` keys are dropped, and the built folder is checked.

PATH_KEYS = ("output_dir", "logging_dir", "data_path", "image_folder", "deepspeed", "pretrain_mm_mlp_adapter",
             "resume_from_checkpoint", "run_name")
MODEL_KEYS = ("model_name_or_path", "vision_tower")
NAME_OR_PATH_KEYS = ("_name_or_path", "name_or_path")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _is_local_path(value: str) -> bool:
    """A filesystem path, not a Hub id or URL: absolute, home- or dot-relative, or two or more folders deep."""
    if "://" in value:
        return False
    return (value.startswith(("/", "~", "./", "../", "\\")) or re.match(r"[A-Za-z]:[\\/]", value) is not None
            or value.count("/") >= 2)


def _base_name(value: str) -> str:
    return ",".join(Path(part.strip().rstrip("/\\")).name for part in value.split(","))


def _public_models(args: dict[str, Any] | None, overrides: dict[str, str | None], notes: list[str]) -> dict:
    """The released name of each model argument: the override, a Hub id, or the base name of a local folder.

    Training records which model arguments were local folders (``local_paths``); older argument
    files fall back to the form of the value.
    """
    recorded = args.get("local_paths") if isinstance(args, dict) else None
    public = {}
    for key in MODEL_KEYS:
        value, override = _arg(args, key), overrides.get(key)
        local = (key in recorded) if isinstance(recorded, list) else (
            isinstance(value, str) and not _looks_like_hub_id(value))
        public[key] = override or (_base_name(value) if local and value else value)
        if local and value and not override:
            flag = "--base_model_id" if key == "model_name_or_path" else "--vision_tower_id"
            notes.append(f"{key} was a local folder: released as {public[key]!r}; pass {flag} ORG/NAME to name its "
                         "Hub id")
    return public


def _strip_local_paths(args: dict[str, Any], models: dict[str, str | None], notes: list[str]) -> dict[str, Any]:
    """``args`` with model arguments replaced by their released names and every other local path by its base name."""
    stripped: list[str] = []

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in MODEL_KEYS and value is not None and value != models.get(key):
            stripped.append(key)
            return models.get(key)
        if isinstance(value, str) and key not in MODEL_KEYS and (
                _is_local_path(value) or (key in PATH_KEYS and "/" in value)):
            stripped.append(key)
            return _base_name(value)
        return value

    out = walk(args)
    if stripped:
        notes.append(f"{TRAINING_ARGS_FILE}: local paths reduced to their base names: {sorted(set(stripped))}")
    return out


def _without_name_or_path(data: Any) -> Any:
    """``data`` without ``_name_or_path`` / ``name_or_path`` keys at any depth (transformers sets them on load)."""
    if isinstance(data, dict):
        return {k: _without_name_or_path(v) for k, v in data.items() if k not in NAME_OR_PATH_KEYS}
    return data


def _local_path_needles(plan: UploadPlan) -> set[str]:
    """Absolute paths of this machine that the release must not contain: the checkpoint's and the arguments'."""
    raw = _read_json(plan.checkpoint / TRAINING_ARGS_FILE) or {}
    found = {str(plan.checkpoint.resolve())}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            found.update(part.strip() for part in value.split(",") if os.path.isabs(part.strip()))

    walk(raw)
    needles = set()
    for path in found:
        needles.update({path, str(Path(path).parent)})
    return {n for n in needles if len(Path(n).parts) >= 3}  # "/home/me" and deeper: not "/" or "/tmp"


def check_no_local_paths(folder: Path, plan: UploadPlan) -> None:
    """ValueError naming each file of ``folder`` (weights aside) that contains one of this machine's paths."""
    needles = sorted(_local_path_needles(plan), key=len, reverse=True)
    leaks = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".safetensors")):
        text = path.read_text(errors="replace")
        hit = next((n for n in needles if n in text), None)
        if hit:
            leaks.append(f"{path.relative_to(folder)} ({hit})")
    if leaks:
        raise ValueError(f"the release would publish local paths: {leaks}; nothing was uploaded")


# ---------------------------------------------------------------------------------------------- writing


def default_out_dir(checkpoint: Path) -> Path:
    """``<checkpoint>/../<checkpoint name>-hub-upload``: a sibling, never inside the checkpoint."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent / f"{checkpoint.name}-hub-upload"


def _check_out_dir(out_dir: Path, checkpoint: Path) -> None:
    out, ckpt = out_dir.resolve(), checkpoint.resolve()
    if out == ckpt or ckpt in out.parents:
        raise ValueError(f"out_dir {out_dir} is inside the checkpoint {checkpoint}: the checkpoint is never written; "
                         "choose a folder outside it (default: a sibling)")
    if out in ckpt.parents:
        raise ValueError(f"out_dir {out_dir} contains the checkpoint {checkpoint}: replacing it would delete the "
                         "checkpoint")
    if out.exists() and not _is_previous_upload(out):
        raise FileExistsError(f"out_dir {out_dir} exists and was not written by llava.release; remove it or choose "
                              "another folder")


def _is_previous_upload(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    card = folder / "README.md"
    return not any(folder.iterdir()) or (card.is_file() and CARD_MARKER in card.read_text(errors="replace"))


def build_upload_folder(checkpoint: str | Path, repo_id: str, out_dir: str | Path | None = None, *,
                        license: str | None = None, base_model_id: str | None = None,
                        vision_tower_id: str | None = None) -> Path:
    """Assemble exactly the folder that will be uploaded and return its path.

    ``out_dir`` defaults to :func:`default_out_dir`; an earlier upload folder there is replaced only
    once the new one is complete (built in a temporary sibling, then renamed). ``license``,
    ``base_model_id`` and ``vision_tower_id`` override what the training arguments say. The folder
    holds no path of this machine (checked before it is put in place).
    """
    check_repo_id(repo_id)
    checkpoint = Path(checkpoint)
    plan = plan_upload(checkpoint, base_model_id, vision_tower_id)
    out = Path(out_dir) if out_dir is not None else default_out_dir(checkpoint)
    _check_out_dir(out, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _write_weights(plan, staging)
        (staging / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
        for path in plan.files:
            _copy_release_file(path, staging / path.name)
        if plan.training_args is not None:
            (staging / TRAINING_ARGS_FILE).write_text(json.dumps(plan.training_args, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(plan, repo_id, license=license))
        check_no_local_paths(staging, plan)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _copy_release_file(path: Path, target: Path) -> None:
    """Copy a tokenizer / processor / generation file; JSON ones lose ``_name_or_path`` keys, and the tokenizer
    is saved to pad on the left (what batched generation needs)."""
    if path.is_dir():
        shutil.copytree(path, target)
        return
    if path.suffix != ".json" or path.name.endswith(".index.json"):
        shutil.copy2(path, target)
        return
    data = _without_name_or_path(json.loads(path.read_text()))
    if path.name == "tokenizer_config.json":
        data["padding_side"] = "left"
    target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_weights(plan: UploadPlan, staging: Path) -> None:
    """Safetensors weights into ``staging``: hard links where possible (no copy of a 14 GB file), else copies."""
    for path in plan.weights:
        try:  # resolve: a symlinked file (a Hub cache snapshot) must not become a link in the folder
            os.link(path.resolve(), staging / path.name)
        except OSError:
            shutil.copy2(path, staging / path.name)
    if plan.convert:
        import transformers

        cls = getattr(transformers, STOCK_CLASSES[plan.model_type])
        # the stock class maps legacy key layouts; dtype "auto" keeps the checkpoint's precision
        model = cls.from_pretrained(plan.checkpoint, dtype="auto", local_files_only=True)
        scratch = staging / ".convert"
        model.save_pretrained(scratch, max_shard_size=MAX_SHARD_SIZE)
        for path in scratch.iterdir():
            if path.name.startswith("model") and path.name.endswith((".safetensors", ".safetensors.index.json")):
                path.rename(staging / path.name)
        shutil.rmtree(scratch)


def _replace(staging: Path, out: Path) -> None:
    """Put the complete ``staging`` at ``out``; an old ``out`` is removed only after the rename succeeded."""
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- model card

CITATION = """```bibtex
@inproceedings{xing2025pyramiddrop,
  title     = {PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy Reduction},
  author    = {Xing, Long and Huang, Qidong and Dong, Xiaoyi and Lu, Jiajie and Zhang, Pan and Zang, Yuhang and
               Cao, Yuhang and He, Conghui and Wang, Jiaqi and Wu, Feng and Lin, Dahua},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025},
  eprint    = {2410.17247},
  archivePrefix = {arXiv}
}
```"""


def _arg(args: dict[str, Any] | None, key: str) -> Any:
    """A training argument from any section of ``llava_training_args.json`` (or a flat dict)."""
    if not args:
        return None
    sections = [args[s] for s in ("model_args", "data_args", "training_args") if isinstance(args.get(s), dict)]
    for section in sections or [args]:
        if section.get(key) is not None:
            return section[key]
    return None


def _looks_like_hub_id(value: Any) -> bool:
    if not isinstance(value, str) or value.startswith((".", "/", "~")) or Path(value).exists():
        return False
    try:
        check_repo_id(value)
    except ValueError:
        return False
    return True


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).replace("|", "\\|")


def model_card(plan: UploadPlan, repo_id: str, license: str | None = None) -> str:
    """The ``README.md`` of the release: YAML front matter, then the sections a user needs."""
    args = plan.training_args
    base_model = plan.models.get("model_name_or_path")
    is_next = plan.model_type == "llava_next"
    data = ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text",
        tags=["llava", "llava-next" if is_next else "llava-1.5", "pyramiddrop", "vision-language"],
        base_model=base_model if _looks_like_hub_id(base_model) else None,
        license=license or _arg(args, "license"),
    )
    name = repo_id.split("/")[1]
    kind = "LLaVA-NeXT (any-resolution)" if is_next else "LLaVA-1.5"
    sections = [
        f"---\n{data.to_yaml()}\n---\n{CARD_MARKER}\n",
        f"# {name}\n\nA {kind} vision-language model trained with **PyramidDrop** (Xing et al., CVPR 2025, "
        "[arXiv 2410.17247](https://arxiv.org/abs/2410.17247)): the language model's layers form stages, and at "
        "the end of each stage only the image tokens the last instruction token attends to most are kept, so the "
        "image tokens form a pyramid through the network and the language model's FLOPs drop. Weights are in "
        f"standard transformers format (`{STOCK_CLASSES[plan.model_type]}`); the schedule is stored in "
        "`config.json` under `pdrop`.\n",
        _schedule_section(plan.config),
        _model_section(plan.config, args, plan.models),
        _training_section(args, plan.trainer_state),
        _usage_section(repo_id, plan),
        f"## Citation\n\n{CITATION}\n",
    ]
    return "\n".join(sections)


def _schedule_section(config: dict[str, Any]) -> str:
    schedule = config.get("pdrop")
    if not schedule:
        return ("## PyramidDrop schedule\n\nThis model was trained without PyramidDrop: its config holds no schedule, "
                "so every image token goes through every layer. The drop can still be applied at inference "
                "(plug-and-play) by passing `pdrop_config=PDropConfig(...)` to `from_pretrained` (see below).\n")
    pdrop = PDropConfig.from_dict(schedule, where=f"config.json 'pdrop' ({schedule!r})")
    total = _num_layers(config)
    n0 = _image_tokens_per_image(config)
    rows = ["| stage | layers | image tokens kept (% of the input) |" + (f" of one {n0}-token image |" if n0 else ""),
            "|---|---|---|" + ("---|" if n0 else "")]
    for stage, (span, ratio) in enumerate(zip(pdrop.stage_layers(total), [1.0, *pdrop.image_token_ratio_list])):
        rows.append(f"| {stage} | {span.start}-{span.stop - 1} | {100 * ratio:.4g} % |" +
                    (f" {math.floor(n0 * ratio)} |" if n0 else ""))
    if config["model_type"] == "llava_next":
        pool = ("A sample's pool is all its image tokens (base image, any-resolution crops, newline tokens), so N0 "
                "varies with the image's aspect ratio.")
    else:
        pool = "Several images in one sample form one pool."
    positions = {"compact": "renumbered without gaps, as the paper's code",
                 "original": "each token keeps its input position"}
    mode = schedule.get("position_mode", "compact")
    starts = ", ".join(str(span.start) for span in pdrop.stage_layers(total)[1:])
    return (f"## PyramidDrop schedule\n\n{pdrop.num_stages} stages over the {total} decoder layers, numbered from 0 "
            f"as `python -m llava.quicklook` prints them: image tokens are dropped before layers {starts}. After each "
            "drop a sample keeps `floor(N0 * ratio)` of its N0 input image tokens, ranked by the last instruction "
            f"token's attention; text tokens are never dropped. {pool}\n\n" + "\n".join(rows) +
            f"\n\nPosition ids after a drop: `{mode}` ({positions.get(mode, mode)}).\n")


def _num_layers(config: dict[str, Any]) -> int:
    """The language model's depth; transformers leaves a default value out of a saved sub-config."""
    text = config.get("text_config", {})
    if text.get("num_hidden_layers"):
        return int(text["num_hidden_layers"])
    from transformers import AutoConfig

    return AutoConfig.for_model(text.get("model_type", "llama")).num_hidden_layers


def _image_tokens_per_image(config: dict[str, Any]) -> int | None:
    """N0 of one LLaVA-1.5 image: (image size / patch size)^2 patches (+ CLS with the "full" strategy)."""
    vision = config.get("vision_config", {})
    if config["model_type"] != "llava" or not vision.get("image_size") or not vision.get("patch_size"):
        return None
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    return patches + (config.get("vision_feature_select_strategy") == "full")


def _model_section(config: dict[str, Any], args: dict[str, Any] | None, models: dict[str, str | None]) -> str:
    """Base models (as released: Hub ids or base names), projector and data (file names only)."""
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    llm = f"{text.get('model_type', '?')}, {_num_layers(config)} layers, hidden size {text.get('hidden_size', '?')}"
    tower = (f"{vision.get('model_type', '?')}, {vision.get('image_size', '?')} px, "
             f"patch {vision.get('patch_size', '?')}")
    base_model, vision_tower = models.get("model_name_or_path"), models.get("vision_tower")
    rows = [("Base language model", f"`{base_model}` ({llm})" if base_model else llm),
            ("Vision tower", f"`{vision_tower}` ({tower})" if vision_tower else tower),
            ("Projector", _arg(args, "mm_projector_type") or "mlp2x_gelu (transformers' LLaVA projector)")]
    if args is None:
        rows.append(("Data", f"unknown (the checkpoint had no `{TRAINING_ARGS_FILE}`)"))
    else:  # file names only: local folders say nothing to a reader of the card
        data_path = _arg(args, "data_path")
        files = ", ".join(f"`{Path(p.strip()).name}`" for p in str(data_path).split(",")) if data_path else "unknown"
        rows.append(("Data", files))
        image_folder = _arg(args, "image_folder")
        rows.append(("Image folder", f"`{Path(str(image_folder)).name}`" if image_folder else None))
        rows.append(("Conversation template", _arg(args, "version")))
        rows.append(("Image aspect ratio", _arg(args, "image_aspect_ratio")))
    table = "\n".join(f"| {label} | {value} |" for label, value in rows if value is not None)
    return f"## Model and data\n\n| | |\n|---|---|\n{table}\n"


def _training_stage(args: dict[str, Any]) -> str:
    if _arg(args, "tune_mm_mlp_adapter"):
        return "pretraining (projector only)"
    stage = "finetuning"
    if _arg(args, "lora_enable"):
        bits = _arg(args, "bits")
        stage += f" with {'QLoRA ' + str(bits) + '-bit' if bits in (4, 8) else 'LoRA'}"
        stage += f" (r={_arg(args, 'lora_r')}, alpha={_arg(args, 'lora_alpha')})" if _arg(args, "lora_r") else ""
    return stage


def _length_rows(args: dict[str, Any], state: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """What ran: optimizer steps (and the max_steps that ended them) and the epochs they amount to."""
    max_steps = _arg(args, "max_steps")
    by_steps = isinstance(max_steps, int) and max_steps > 0
    if state is None:
        if by_steps:
            return [("optimizer steps", f"max_steps={max_steps}"),
                    ("epochs", "not recorded (no trainer_state.json in the checkpoint)")]
        return [("epochs", _arg(args, "num_train_epochs"))]
    epochs = float(state.get("epoch") or 0)
    ended = f"max_steps={max_steps}" if by_steps else f"num_train_epochs={_fmt(_arg(args, 'num_train_epochs'))}"
    return [("optimizer steps", f"{state.get('global_step')} ({ended})"),
            ("epochs", f"{epochs:.3g}" + (f" (what max_steps={max_steps} amounts to)" if by_steps else ""))]


def _training_section(args: dict[str, Any] | None, state: dict[str, Any] | None = None) -> str:
    if args is None:
        return (f"## Training arguments\n\nUnknown: the checkpoint was released without `{TRAINING_ARGS_FILE}` "
                "(written by this package's training code).\n")
    batch = _arg(args, "global_batch_size")
    if batch is None and _arg(args, "per_device_train_batch_size") is not None:
        batch = (f"{_arg(args, 'per_device_train_batch_size')} per device x "
                 f"{_arg(args, 'gradient_accumulation_steps') or 1} accumulation x number of GPUs")
    deepspeed = _arg(args, "deepspeed")
    if isinstance(deepspeed, dict):
        deepspeed = f"inline config (ZeRO stage {deepspeed.get('zero_optimization', {}).get('stage', '?')})"
    elif deepspeed:
        deepspeed = Path(str(deepspeed)).name
    precision = next((p for p in ("bf16", "fp16") if _arg(args, p)), None)
    rows = [("stage", _training_stage(args)), *_length_rows(args, state), ("global batch", batch),
            ("learning rate", _arg(args, "learning_rate")), ("projector learning rate", _arg(args, "mm_projector_lr")),
            ("vision tower learning rate", _arg(args, "mm_vision_tower_lr")),
            ("LR schedule", _arg(args, "lr_scheduler_type")),
            ("warmup", _arg(args, "warmup_ratio") or _arg(args, "warmup_steps") or None),  # v5: a float steps = ratio
            ("weight decay", _arg(args, "weight_decay")), ("precision", precision), ("DeepSpeed config", deepspeed),
            ("model_max_length", _arg(args, "model_max_length")), ("template", _arg(args, "version"))]
    for key in ("pdrop_schedule", "layer_list", "image_token_ratio_list", "pdrop_lambda"):
        rows.append((f"PyramidDrop `{key}`", _arg(args, key)))
    table = "\n".join(f"| {label} | {_fmt(value)} |" for label, value in rows if value is not None)
    return (f"## Training arguments\n\n| argument | value |\n|---|---|\n{table}\n\nAll arguments: "
            f"[`{TRAINING_ARGS_FILE}`]({TRAINING_ARGS_FILE}).\n")


def _example_prompt(plan: UploadPlan) -> str:
    """Code that sets ``prompt``: the tokenizer's chat template when saved, else the training template's format."""
    if any(p.name.startswith("chat_template") or p.name == TEMPLATE_FOLDER for p in plan.files):
        return ('messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown '
                'in this image?"}]}]\nprompt = processor.apply_chat_template(messages, add_generation_prompt=True)')
    version = _arg(plan.training_args, "version")
    if version in (None, "vicuna_v1", "v1"):
        return 'prompt = "USER: <image>\\nWhat is shown in this image? ASSISTANT:"  # the vicuna_v1 template'
    return (f'prompt = "<image>\\nWhat is shown in this image?"  # wrap it as the "{version}" template used in '
            "training does")


def _example_schedule(config: dict[str, Any]) -> str:
    """A valid schedule for this model's depth: the paper's shape (boundaries at 1/4, 1/2, 3/4; ratios 0.5^s)."""
    depth = config.get("text_config", {}).get("num_hidden_layers") or 32
    layers = sorted({max(1, depth * s // 4) for s in (1, 2, 3)} - {depth})
    return f"PDropConfig({layers}, {[0.5 ** s for s in range(1, len(layers) + 1)]})"


def _usage_section(repo_id: str, plan: UploadPlan) -> str:
    stock, pdrop = STOCK_CLASSES[plan.model_type], PDROP_CLASSES[plan.model_type]
    has_schedule = bool(plan.config.get("pdrop"))
    prompt = _example_prompt(plan)
    stock_note = ("PyramidDrop is then off: the stock class ignores `config.pdrop` and keeps every image token in "
                  "every layer (slower, and not the setting the model was trained with)." if has_schedule else
                  "This runs the model exactly as it was trained (no PyramidDrop).")
    schedule_note = ("applies the schedule saved with the model" if has_schedule else
                     "has no saved schedule: pass one to turn PyramidDrop on")
    return f"""## How to load

With stock transformers:

```python
import torch
from PIL import Image
from transformers import AutoProcessor, {stock}

model = {stock}.from_pretrained("{repo_id}", dtype=torch.bfloat16, device_map="auto")
processor = AutoProcessor.from_pretrained("{repo_id}")
{prompt}
inputs = processor(images=Image.open("photo.jpg"), text=prompt, return_tensors="pt").to(model.device, torch.bfloat16)
output = model.generate(**inputs, max_new_tokens=64)
print(processor.decode(output[0], skip_special_tokens=True))
```

{stock_note}

With the PyramidDrop-LLaVA package (Python package `pyramiddrop-llava`, imported as `llava`), which
{schedule_note}:

```python
from llava.model import {pdrop}
from llava.pdrop import PDropConfig

model = {pdrop}.from_pretrained("{repo_id}", dtype=torch.bfloat16, device_map="auto")
print(model.pdrop_config)  # the schedule in use; None: PyramidDrop off
# another schedule, or none:
# model = {pdrop}.from_pretrained("{repo_id}", pdrop_config={_example_schedule(plan.config)})
# model = {pdrop}.from_pretrained("{repo_id}", pdrop_config=None)
```

Generation then works as above (`model.generate(**inputs, ...)`, default dynamic cache).
"""


# ---------------------------------------------------------------------------------------------- push


def push(folder: str | Path, repo_id: str, private: bool, commit_message: str, token: str | None = None) -> str:
    """Create ``repo_id`` (an existing repository is reused) and upload ``folder`` in one commit; returns its URL.

    ``token`` None uses the saved login or ``HF_TOKEN``. A repository that already exists keeps its
    visibility, so ``private=True`` on an existing public repository is refused instead of publishing.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"upload folder {folder} does not exist")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if private and getattr(api.repo_info(repo_id, repo_type="model"), "private", None) is False:
        raise PermissionError(f"{repo_id} already exists and is public; --private cannot make it private: change its "
                              "visibility on the Hub first, or release to a new repository")
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               commit_message=commit_message, allow_patterns=upload_files(folder))
    return getattr(commit, "commit_url", None) or str(commit)


def upload_files(folder: Path) -> list[str]:
    """The files of ``folder`` that :func:`push` uploads (relative, sorted): what the dry run lists, exactly."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- command line


def _size(num_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError


def describe(folder: Path, plan: UploadPlan, repo_id: str) -> str:
    """The printed summary: every file that is uploaded (with sizes), what was left out and why, notes."""
    files = [folder / name for name in upload_files(folder)]
    total = sum(p.stat().st_size for p in files)
    lines = [f"upload folder: {folder}",
             f"uploaded to https://huggingface.co/{repo_id}: these {len(files)} files ({_size(total)}), nothing else"]
    lines += [f"  {str(p.relative_to(folder)):<40} {_size(p.stat().st_size):>10}" for p in files]
    if plan.left_out:
        lines.append(f"left out of {plan.checkpoint}:")
        lines += [f"  {name:<40} {why}" for name, why in plan.left_out.items()]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser("llava.release",
                            description="Release a LLaVA / LLaVA-NeXT checkpoint on the Hugging Face Hub.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (transformers format, with tokenizer)")
    parser.add_argument("--repo_id", required=True, help="Hub repository, org/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry_run", action="store_true", help="build and list the upload folder; upload nothing")
    parser.add_argument("--out_dir", default=None, help="upload folder (default: <checkpoint>-hub-upload, a sibling)")
    parser.add_argument("--commit_message", default=None, help="default: 'Upload <checkpoint name>'")
    parser.add_argument("--license", default=None, help="license id for the card, e.g. apache-2.0, llama2")
    parser.add_argument("--base_model_id", "--base_model", default=None, help=(
        "Hub id of the base language model (default: --model_name_or_path of the training arguments when it is a "
        "Hub id, else the base name of its local folder)"))
    parser.add_argument("--vision_tower_id", default=None, help=(
        "Hub id of the vision tower (default: --vision_tower of the training arguments when it is a Hub id, else "
        "the base name of its local folder)"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    checkpoint = Path(args.checkpoint)
    folder = build_upload_folder(checkpoint, args.repo_id, args.out_dir, license=args.license,
                                 base_model_id=args.base_model_id, vision_tower_id=args.vision_tower_id)
    print(describe(folder, plan_upload(checkpoint, args.base_model_id, args.vision_tower_id), args.repo_id))
    if args.dry_run:
        print(f"dry run: nothing uploaded; to publish, run again without --dry_run (repository {args.repo_id})")
        return
    message = args.commit_message or f"Upload {checkpoint.resolve().name} (LLaVA with PyramidDrop)"
    url = push(folder, args.repo_id, args.private, message)
    print(f"pushed to https://huggingface.co/{args.repo_id}: {url}")


if __name__ == "__main__":
    cli_main(main, prog="llava.release")
