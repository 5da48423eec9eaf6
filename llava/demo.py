"""The embedded demo: train a small LLaVA on a synthetic VQA task on CPU, then compare the drops.

What it does (about 9 minutes on 2 CPU cores; seeded, one thread per process, MKL, oneDNN and ATen kernels at
the AVX2 level: the same table on any x86 CPU with AVX2):

1. writes the task (``<out>/assets``; :class:`llava.data.synthetic.DemoTask`): 56 px pictures with a
   shape in each quadrant, each in another colour, and questions that say which part of the picture
   holds the answer: "Where is the red shape?" -> "top left", "What color is the shape in the top
   left?" -> "red". A 4-layer Llama (hidden 128) and a small CLIP (16 image tokens; random weights,
   its patch embeddings made to read colour and grid cell, as a pretrained encoder's would) from
   ``configs/models/demo-llava.json``;
2. trains through the real scripts (``scripts/pretrain_pdrop.sh``, ``scripts/finetune_pdrop.sh``,
   DeepSpeed on 2 CPU processes, ``configs/train/demo-*.json``): the projector, then two finetunes,
   without and with PyramidDrop (``configs/schedules/demo.json``), each with a progress bar;
3. answers held-out questions (3 evaluation seeds: other pictures, other random drops) with no
   drop, PyramidDrop trained, PyramidDrop training-free, FastV at equal image-token FLOPs and random
   dropping, next to the chance and majority-answer baselines; flags settings whose answers
   collapse to one class;
4. prints one table (accuracy mean and spread over the seeds, per question kind, how often the image
   token that holds the answer reached the last stage, FLOPs ratios) and writes ``results.json`` and
   ``kept_tokens.png`` (what each stage kept for one question) to ``--out``.

A run folder is reused only when it was trained with the same settings (a hash stored in it);
otherwise it is trained again, and the demo says which.

Launch::

    python -m llava.demo
    python -m llava.demo --out playground/demo --finetune_steps 3000 --eval_seeds 5
    bash scripts/demo.sh --gpus 1
"""

from __future__ import annotations

import os

# The same floating-point results on any x86 CPU with AVX2, whatever wider units it has: MKL's conditional
# numerical reproducibility, oneDNN's and ATen's kernels at the AVX2 level. Read when torch first computes,
# so set before torch is imported here; the training processes get them from fix_determinism's environment.
REPRODUCIBLE_KERNELS = {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in REPRODUCIBLE_KERNELS.items():
    os.environ.setdefault(_name, _value)

import argparse
import hashlib
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .bench.flops import llm_flops
from .cli import ArgumentParser, cli_main
from .data.synthetic import DEMO_DATA_VERSION, DemoTask, demo_answers, demo_kind, make_demo_eval, make_demo_models, make_demo_train
from .data.templates import build_prompt
from .eval.pictures import generate_answer, kept_token_indices, kept_token_picture, picture_header, processed_inputs
from .eval.run import Answerer
from .model.builder import load_llava
from .paths import CONFIGS_DIR, load_model_preset, load_schedule

REPO = Path(__file__).resolve().parents[1]
PRESET, SCHEDULE = "demo-llava", "demo"
TRAIN_CONFIGS = {"pretrain": "demo-pretrain", "finetune": "demo-finetune"}
INPUT_PATHS = ("MODEL_NAME_OR_PATH", "VISION_TOWER", "DATA_PATH", "IMAGE_FOLDER", "PRETRAIN_MM_MLP_ADAPTER")
STAMP = "demo_settings.json"  # in every folder the demo writes: the settings it was made with and their hash
COLLAPSE_SHARE = 0.9  # a setting whose most common answer to one question kind reaches this share "collapsed"
MAX_ANSWER_TOKENS = 6  # the longest answer is two words
THREADS = 1  # per process, training and evaluation alike: fixes the order of every floating-point sum


# --------------------------------------------------------------------------- settings and determinism
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser("llava.demo", description="Train a small LLaVA on a synthetic VQA task and compare token drops.")
    parser.add_argument("--out", type=Path, default=REPO / "playground" / "demo", help="assets, runs, results.json, PNG")
    parser.add_argument("--pretrain_steps", type=int, help="default: configs/train/demo-pretrain.json")
    parser.add_argument("--finetune_steps", type=int, help="default: configs/train/demo-finetune.json")
    parser.add_argument("--learning_rate", type=float, help="finetuning; default: configs/train/demo-finetune.json")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, data order, training pictures)")
    parser.add_argument("--eval_seeds", type=int, default=3, help="evaluation seeds 0..N-1 (pictures, random drops)")
    parser.add_argument("--num_eval", type=int, default=DemoTask.num_eval, help="questions per evaluation seed")
    parser.add_argument("--num_train", type=int, default=DemoTask.num_train, help="training pictures")
    parser.add_argument("--gpus", type=int, default=2, help="training processes per run (CPU: gloo)")
    parser.add_argument("--batch_size", type=int, default=50, help="evaluation batch size")
    args = parser.parse_args(argv)
    parser.require_positive(args, "eval_seeds", "num_eval", "num_train", "gpus", "batch_size")
    return args


def fix_determinism(seed: int) -> dict[str, str]:
    """Seed this process, one thread, deterministic kernels; the environment the training processes get."""
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    return {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "PYTHONHASHSEED": str(seed),
            "TOKENIZERS_PARALLELISM": "false", **{k: os.environ[k] for k in REPRODUCIBLE_KERNELS}}


def digest(settings: dict) -> str:
    """A stable hash of JSON-able ``settings``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_stamp(folder: Path) -> str | None:
    """The settings hash stored in ``folder`` by :func:`write_stamp` (None when absent or unreadable)."""
    try:
        return json.loads((folder / STAMP).read_text())["hash"]
    except (OSError, ValueError, KeyError):
        return None


def write_stamp(folder: Path, settings: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps({"hash": digest(settings), "settings": settings}, indent=1))


def clear_if_changed(folder: Path, settings: dict, what: str) -> bool:
    """True when ``folder`` holds ``what`` made with ``settings``; otherwise remove it (saying why) and False."""
    stored = read_stamp(folder)
    if stored == digest(settings):
        return True
    if folder.exists():
        reason = "no settings hash in it" if stored is None else f"settings changed ({stored} -> {digest(settings)})"
        print(f"[demo] {what}: {folder} was made with other settings ({reason}): making it again", flush=True)
        shutil.rmtree(folder)
    return False


# --------------------------------------------------------------------------- assets
def prepare_assets(root: Path, task: DemoTask, seed: int, eval_seeds: int) -> dict:
    """The demo's models, training data and evaluation sets under ``root`` (made again if the settings changed)."""
    preset = load_model_preset(PRESET)
    training_task = {k: v for k, v in task.to_dict().items() if k != "num_eval"}  # evaluation sets are checked below
    settings = {"task": training_task, "preset": preset, "seed": seed, "version": DEMO_DATA_VERSION}
    if not (clear_if_changed(root, settings, "assets") and (root / "data" / "finetune.json").is_file()):
        make_demo_models(root, preset, seed)
        make_demo_train(root / "data", task, seed)
        write_stamp(root, settings)
    evals = []
    for s in range(eval_seeds):
        path = root / "data" / f"eval-{s}.json"
        evals.append(path if _holds(path, task.num_eval) else make_demo_eval(root / "data", task, s))
    return {"root": root, "llm": root / "llm", "vision": root / "vision", "data": root / "data",
            "images": root / "data" / "images", "evals": evals, "hash": digest(settings)}


def _holds(path: Path, count: int) -> bool:
    """Whether ``path`` is an evaluation set of ``count`` questions, each naming its answer's image token (one
    made with another --num_eval, or by an older demo without the ``token`` field, is not)."""
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return len(records) == count and all("token" in record for record in records)


# --------------------------------------------------------------------------- training
@dataclass
class Run:
    """One training run through a launch script."""

    name: str
    script: str
    config: str
    output_dir: Path
    env: dict[str, str]
    flags: list[str] = field(default_factory=list)
    after: str = ""  # the hash of the run this one starts from

    def settings(self) -> dict:
        """What decides the trained weights: the config file, the flags, the inputs (paths relative to the
        demo's folder, so a moved folder is still reused), the process count, the run it starts from."""
        config = train_config(self.config)
        root = self.output_dir.parent
        inputs = {k: str(Path(v).relative_to(root)) for k, v in self.env.items() if k in INPUT_PATHS}
        return {"script": self.script, "config": config, "flags": self.flags, "after": self.after,
                "inputs": inputs, "gpus": self.env.get("GPUS")}

    def max_steps(self) -> int:
        return int(_flag(self.flags, "--max_steps", train_config(self.config)["max_steps"]))

    def logging_steps(self) -> int:
        return int(_flag(self.flags, "--logging_steps", train_config(self.config).get("logging_steps", 1)))


def train_config(name: str) -> dict:
    """``configs/train/<name>.json`` as written (the settings hash covers every key, its description too)."""
    return json.loads((CONFIGS_DIR / "train" / f"{name}.json").read_text())


def _flag(flags: list[str], name: str, default):
    return flags[flags.index(name) + 1] if name in flags else default


def training_runs(out: Path, assets: dict, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Run]:
    """Pretrain the projector once (no drop), then finetune twice from it: without and with PyramidDrop."""
    common = {**env, "GPUS": str(args.gpus), "PYTHON": sys.executable, "MODEL_NAME_OR_PATH": str(assets["llm"]),
              "VISION_TOWER": str(assets["vision"]), "IMAGE_FOLDER": str(assets["images"])}
    seed = ["--seed", str(args.seed)]
    pre = ["--no_pdrop", *seed] + (["--max_steps", str(args.pretrain_steps)] if args.pretrain_steps else [])
    pretrain = Run("pretrain", "pretrain_pdrop.sh", TRAIN_CONFIGS["pretrain"], out / "pretrain",
                   {**common, "DATA_PATH": str(assets["data"] / "pretrain.json")}, pre, after=assets["hash"])
    tune = [*seed] + (["--max_steps", str(args.finetune_steps)] if args.finetune_steps else [])
    tune += ["--learning_rate", str(args.learning_rate)] if args.learning_rate else []
    finetune_env = {**common, "DATA_PATH": str(assets["data"] / "finetune.json"),
                    "PRETRAIN_MM_MLP_ADAPTER": str(pretrain.output_dir / "mm_projector.bin")}
    after = digest(pretrain.settings())
    return {
        "pretrain": pretrain,
        "nodrop": Run("finetune, no drop", "finetune_pdrop.sh", TRAIN_CONFIGS["finetune"], out / "finetune-nodrop",
                      finetune_env, ["--no_pdrop", *tune], after),
        "pdrop": Run("finetune, PyramidDrop", "finetune_pdrop.sh", TRAIN_CONFIGS["finetune"], out / "finetune-pdrop",
                     finetune_env, ["--pdrop_schedule", SCHEDULE, *tune], after),
    }


def ensure_trained(run: Run) -> str:
    """Train ``run`` unless its folder holds a finished run with the same settings; returns what happened."""
    settings = run.settings()
    if clear_if_changed(run.output_dir, settings, run.name) and (run.output_dir / "config.json").is_file():
        print(f"[demo] {run.name}: reusing {run.output_dir} (trained with the same settings, {digest(settings)})",
              flush=True)
        return "reused"
    resumed = run.output_dir.exists()
    if resumed:
        print(f"[demo] {run.name}: {run.output_dir} is an unfinished run with the same settings: resuming", flush=True)
    write_stamp(run.output_dir, settings)
    launch(run)
    return "resumed" if resumed else "trained"


def train_all(runs: dict[str, Run]) -> tuple[dict[str, str], dict[str, float]]:
    """:func:`ensure_trained` on each run in order: what happened to each ("trained", "reused", "resumed") and
    its seconds."""
    happened, seconds = {}, {}
    for key, run in runs.items():
        began = time.time()
        happened[key] = ensure_trained(run)
        seconds[key] = round(time.time() - began, 1)
    return happened, seconds


LOSS = re.compile(r"'loss': '?([0-9.eE+-]+|nan|inf)'?")


def launch(run: Run) -> None:
    """``bash scripts/<script>`` with a progress bar (step, loss, ETA) read from the trainer's log lines.

    Everything the script prints goes to ``<run>/train.log``; its end is shown if the script fails.
    """
    env = {**os.environ, **run.env, "CONFIG": f"configs/train/{run.config}.json", "OUTPUT_DIR": str(run.output_dir),
           "PYTHONUNBUFFERED": "1"}  # log lines as they happen, for the progress bar
    env.setdefault("MASTER_PORT", str(free_port()))  # two demos (or a demo and a test) at once do not collide
    log_path = run.output_dir / "train.log"
    total, every = run.max_steps(), run.logging_steps()
    print(f"[demo] {run.name}: bash scripts/{run.script} ({run.config}, {total} steps) -> {run.output_dir}", flush=True)
    bar = progress_bar(total, f"[demo] {run.name}")
    with log_path.open("w") as log, subprocess.Popen(
            ["bash", f"scripts/{run.script}", "--disable_tqdm", "true", *run.flags], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            log.write(line)
            loss = logged_loss(line)
            if loss is not None:  # one logging interval done
                bar.set_postfix_str(f"loss {loss:.3f}")
                bar.update(min(every, total - bar.n))
    bar.close()
    if process.returncode:
        raise SystemExit(f"[demo] scripts/{run.script} failed (exit {process.returncode}); the end of {log_path}:\n"
                         + log_path.read_text()[-4000:])


def free_port() -> int:
    """A TCP port nothing listens on now, for the launch's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def progress_bar(total: int, desc: str):
    """tqdm's bar on a terminal; in a log (CI, a pipe) one plain line about every 10 % instead of redrawing."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True,
                    bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar:20}| {elapsed}<{remaining}{postfix}")
    return LineProgress(total, desc)


class LineProgress:
    """The part of tqdm's interface :func:`launch` uses, printing ``desc: n/total steps, loss, elapsed, ETA`` lines."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.postfix, self.started, self.shown = total, desc, 0, "", time.time(), 0

    def update(self, k: int) -> None:
        self.n += k
        if self.n - self.shown >= max(1, self.total // 10) or self.n >= self.total:
            self.shown = self.n
            elapsed = time.time() - self.started
            left = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            print(f"{self.desc}: {self.n}/{self.total} steps, {elapsed:.0f} s elapsed, about {left:.0f} s left"
                  f"{', ' + self.postfix if self.postfix else ''}", flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


def logged_loss(line: str) -> float | None:
    """The loss of a trainer log line (``{'loss': '0.657', 'grad_norm': ...}``); None for any other line."""
    match = LOSS.search(line)
    return None if match is None or "train_loss" in line else float(match.group(1))


# --------------------------------------------------------------------------- evaluation
def settings_rows(schedule, num_layers: int, seed: int) -> list[tuple[str, str, object]]:
    """(name, which finetune, schedule) of the model rows; FastV gets the schedule's image-token FLOPs."""
    return [
        ("no drop", "nodrop", None),
        ("PyramidDrop (trained)", "pdrop", schedule),
        ("PyramidDrop (training-free)", "nodrop", schedule),
        ("FastV K=1 (equal FLOPs)", "nodrop", schedule.fastv_at_equal_flops(num_layers, k=1)),
        ("random (same schedule)", "nodrop", replace(schedule, method="random", seed=seed)),
    ]


def stop_ids(model, processor) -> list[int]:
    """Where an answer ends: any special token but padding and ``<image>`` (``</s>``, chatml's ``<|im_end|>``...)."""
    tokenizer = processor.tokenizer
    special = [i for i, token in tokenizer.added_tokens_decoder.items() if token.special]
    return sorted(set(special) - {tokenizer.pad_token_id, model.config.image_token_id})


def template() -> str:
    """The conversation template the demo finetunes with (its config's ``version``), used to ask the questions."""
    return train_config(TRAIN_CONFIGS["finetune"])["version"]


def normalise(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


@dataclass
class PreparedSet:
    """One evaluation set's prompts for one model (built once, answered under every schedule of that model)."""

    answerer: Answerer
    prompts: list
    text_tokens: float  # mean per prompt
    image_tokens: float


def prepare_set(model, processor, questions: list[dict], image_folder: Path) -> PreparedSet:
    """Tokenised prompts and processed pictures of ``questions``, and the mean prompt's text and image tokens."""
    answerer = Answerer(model, processor, template(), str(image_folder), "pad")
    prompts = [answerer.prompt({"question_id": q["id"], "image": q["image"], "text": q["question"]}) for q in questions]
    images = sum(p.input_ids.count(model.config.image_token_id) for p in prompts) / len(prompts)
    text = sum(len(p.input_ids) for p in prompts) / len(prompts) - images
    return PreparedSet(answerer, prompts, text, images)


def answer_questions(prepared: PreparedSet, questions: list[dict], batch_size: int) -> tuple[list[str], list[bool] | None]:
    """Greedy answers (normalised) under the model's current schedule, and per question whether the image token
    holding the shape it asks about was still there in the last stage (None when the model drops nothing)."""
    answerer, prompts = prepared.answerer, prepared.prompts
    model, processor = answerer.model, answerer.processor
    drops = model.pdrop_config is not None
    answers, kept = [], []
    for start in range(0, len(prompts), batch_size):
        model.pdrop_trace = None
        answers += answerer.answer(prompts[start:start + batch_size], max_new_tokens=MAX_ANSWER_TOKENS, do_sample=False,
                                   pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=stop_ids(model, processor))
        if drops:
            if model.pdrop_trace is None:
                raise RuntimeError("a prefill under a PyramidDrop schedule left no pdrop_trace")
            kept += answer_token_kept(model.pdrop_trace, questions[start:start + batch_size])
    return [normalise(a) for a in answers], (kept if drops else None)


def answer_token_kept(trace, questions: list[dict]) -> list[bool]:
    """Per sample of a traced prefill (one image each), whether its question's ``token`` (index among the
    sample's image tokens) is among the image tokens of the last stage."""
    counts = trace.image_mask.sum(dim=1).tolist()
    return [bool((kept_token_indices(trace, [counts[i]], sample=i)[-1] == question["token"]).any())
            for i, question in enumerate(questions)]


def score(answers: list[str], questions: list[dict], kept: list[bool] | None = None) -> dict:
    """Accuracy (%, exact answer), per question kind, which kinds' answers collapsed to one class, and the share
    (%) of questions whose answer's image token reached the last stage (``kept``; None when nothing drops)."""
    kinds = sorted({q["kind"] for q in questions})
    result = {"accuracy": 100.0 * sum(a == q["answer"] for a, q in zip(answers, questions)) / len(questions),
              "by_kind": {}, "collapsed": {}, "answer_kept": None if kept is None else 100.0 * sum(kept) / len(kept)}
    for kind in kinds:
        said = [a for a, q in zip(answers, questions) if q["kind"] == kind]
        right = [a == q["answer"] for a, q in zip(answers, questions) if q["kind"] == kind]
        result["by_kind"][kind] = 100.0 * sum(right) / len(right)
        common, count = Counter(said).most_common(1)[0]
        if count >= COLLAPSE_SHARE * len(said):
            result["collapsed"][kind] = {"answer": common, "share": round(count / len(said), 3)}
    return result


def baseline_rows(train_path: Path, evals: list[list[dict]]) -> list[dict]:
    """Chance (uniform over a kind's possible answers) and the majority answer of each kind in training."""
    answers_of = demo_answers()
    counts: dict[str, Counter] = {}
    for record in json.loads(train_path.read_text()):
        turns = record["conversations"]
        for question, answer in zip(turns[::2], turns[1::2]):
            counts.setdefault(demo_kind(question["value"]), Counter())[answer["value"]] += 1
    majority = {kind: c.most_common(1)[0][0] for kind, c in counts.items()}
    chance = [{"accuracy": 100.0 * sum(1 / len(answers_of[q["kind"]]) for q in qs) / len(qs),
               "by_kind": {k: 100.0 / len(answers_of[k]) for k in sorted({q["kind"] for q in qs})}, "collapsed": {}}
              for qs in evals]
    always = [score([majority[q["kind"]] for q in qs], qs) for qs in evals]
    note = "always " + ", ".join(f"{majority[k]!r}" for k in sorted(majority))
    return [summarise("chance", None, None, chance, ""), summarise("majority answer", None, None, always, note)]


def summarise(name: str, which: str | None, schedule, scores: list[dict], note: str = "") -> dict:
    """One table row: mean and spread (sample standard deviation) over the evaluation seeds."""
    accuracies = [s["accuracy"] for s in scores]
    collapsed = sorted({f"{k}: {c['answer']!r} x{c['share']:.0%}" for s in scores for k, c in s["collapsed"].items()})
    kept = [s["answer_kept"] for s in scores if s.get("answer_kept") is not None]
    return {"setting": name, "model": which, "schedule": None if schedule is None else schedule.to_dict(),
            "accuracy": round(statistics.fmean(accuracies), 2),
            "spread": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else 0.0,
            "per_seed": [round(a, 2) for a in accuracies],
            "by_kind": {k: round(statistics.fmean(s["by_kind"][k] for s in scores), 2) for k in scores[0]["by_kind"]},
            "answer_kept": round(statistics.fmean(kept), 2) if kept else None,
            "collapsed": collapsed, "note": note or ("collapsed to one answer: " + "; ".join(collapsed) if collapsed else "")}


def model_rows(runs: dict[str, Run], evals: list[list[dict]], image_folder: Path, batch_size: int) -> list[dict]:
    """The five model settings on every evaluation set, with their FLOPs ratios."""
    models = {name: load_llava(str(runs[name].output_dir), attn_implementation="eager") for name in ("nodrop", "pdrop")}
    config = models["nodrop"][0].config.get_text_config()
    shape = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    schedule = load_schedule(SCHEDULE)
    settings = [settings_rows(schedule, config.num_hidden_layers, seed) for seed in range(len(evals))]
    scores, sizes = [[] for _ in settings[0]], {which: [] for which in models}
    for seed, questions in enumerate(evals):  # one set's prompts at a time, each built once per model
        prepared = {which: prepare_set(*models[which], questions, image_folder) for which in models}
        for which, ready in prepared.items():
            sizes[which].append((ready.text_tokens, ready.image_tokens))
        for index, (_, which, chosen) in enumerate(settings[seed]):
            models[which][0].set_pdrop_config(chosen)
            answers, kept = answer_questions(prepared[which], questions, batch_size)
            scores[index].append(score(answers, questions, kept))
    rows = []
    for index, (name, which, chosen) in enumerate(settings[-1]):
        row = summarise(name, which, chosen, scores[index])
        text, images = (round(statistics.fmean(v)) for v in zip(*sizes[which]))
        row["llm_mflops"] = llm_flops(*shape, image_tokens=images, text_tokens=text, schedule=chosen) / 1e6
        row["image_mflops"] = llm_flops(*shape, image_tokens=images, text_tokens=0, schedule=chosen) / 1e6
        rows.append(row)
    base, image_base = rows[0]["llm_mflops"], rows[0]["image_mflops"]
    for row in rows:
        row["flops_ratio"] = round(row["llm_mflops"] / base, 3)
        row["image_flops_ratio"] = round(row.pop("image_mflops") / image_base, 3)
        row["llm_mflops"] = round(row["llm_mflops"], 2)
    return rows


# --------------------------------------------------------------------------- output
def picture(run: Run, question: dict, image_folder: Path, out: Path) -> dict:
    """What each stage of the PyramidDrop-trained model kept for ``question``, titled with its answer."""
    from PIL import Image

    model, processor = load_llava(str(run.output_dir), attn_implementation="eager")
    image = Image.open(image_folder / question["image"]).convert("RGB")
    prompt = build_prompt([{"from": "human", "value": "<image>\n" + question["question"]}], template(),
                          processor.tokenizer)
    inputs = processed_inputs(processor, [image], prompt, "pad")
    answer = normalise(generate_answer(model, processor, inputs, MAX_ANSWER_TOKENS, stop_ids(model, processor)))
    header = picture_header(question["question"], model.pdrop_config, answer, question["answer"])
    _, summary = kept_token_picture(model, processor, image, inputs, out, header=header)
    return {"path": str(out), "question": question["question"], "answer": answer, "truth": question["answer"],
            "kept_per_stage": summary["kept"]}


def table(rows: list[dict], seeds: int) -> str:
    """The comparison as text: accuracy mean ± spread, per question kind, answer token kept to the last stage,
    FLOPs ratios, notes."""
    kinds = list(rows[0]["by_kind"])
    head = f"{'setting':<28} {f'accuracy % (±sd, {seeds} seeds)':>26} " + " ".join(f"{k + ' %':>8}" for k in kinds)
    lines = [head + f" {'answer kept %':>13} {'FLOPs ratio':>11} {'image FLOPs':>11}  note"]
    for r in rows:
        flops = (f"{r['flops_ratio']:>11.3f} {r['image_flops_ratio']:>11.3f}" if "flops_ratio" in r
                 else f"{'-':>11} {'-':>11}")
        kind_cells = " ".join(f"{r['by_kind'][k]:>8.1f}" for k in kinds)
        kept = f"{r['answer_kept']:>13.1f}" if r.get("answer_kept") is not None else f"{'-':>13}"
        lines.append(f"{r['setting']:<28} {r['accuracy']:>19.1f} ± {r['spread']:<4.1f} {kind_cells} {kept} {flops}  {r['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started, load = time.time(), os.getloadavg()[0]
    env = fix_determinism(args.seed)
    out = args.out.resolve()
    task = DemoTask(num_train=args.num_train, num_eval=args.num_eval)
    assets = prepare_assets(out / "assets", task, args.seed, args.eval_seeds)
    runs = training_runs(out, assets, args, env)
    happened, timings = train_all(runs)
    evals = [json.loads(path.read_text()) for path in assets["evals"]]
    began = time.time()
    rows = baseline_rows(assets["data"] / "finetune.json", evals)
    rows += model_rows(runs, evals, assets["images"], args.batch_size)
    timings["evaluate"] = round(time.time() - began, 1)
    kept = picture(runs["pdrop"], evals[0][0], assets["images"], out / "kept_tokens.png")
    results = {"rows": rows, "eval_seeds": args.eval_seeds, "questions_per_seed": args.num_eval, "picture": kept,
               "task": task.to_dict(), "seed": args.seed, "runs": happened, "seconds": timings,
               "total_seconds": round(time.time() - started, 1), "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
               "machine": {"cpus": os.cpu_count(), "threads_per_process": THREADS, "torch": torch.__version__}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(rows, args.eval_seeds))
    print(f"[demo] {args.num_eval} held-out questions per seed; {results['total_seconds']:.0f} s in all; results: "
          f"{out / 'results.json'}; kept image tokens per stage for {kept['question']!r} (model: {kept['answer']!r}, "
          f"truth: {kept['truth']!r}): {kept['kept_per_stage']} -> {kept['path']}")
    return results


if __name__ == "__main__":
    cli_main(main, prog="llava.demo")
