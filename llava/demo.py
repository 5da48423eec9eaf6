"""The embedded demo: train a tiny LLaVA on a synthetic VQA task on CPU, then compare the drops.

What it does (about 10 minutes on 2 CPU cores, seeded):

1. writes the synthetic task (``playground/tiny``: three shapes per picture, the question
   names the one coloured object, "What color is the triangle?");
2. trains through the real scripts (``scripts/pretrain_pdrop.sh``, ``scripts/finetune_pdrop.sh``,
   DeepSpeed on 2 CPU processes): one projector pretraining (no drop), then two finetunes, without
   and with PyramidDrop;
3. answers the held-out questions with five settings at (nearly) equal image-token FLOPs:
   no drop, PyramidDrop-trained, PyramidDrop training-free, FastV and random dropping;
4. prints one table (accuracy, language-model FLOPs of the whole prompt, the FLOPs ratio over the
   prompt and over the image tokens alone, the paper's count) and writes ``results.json`` and
   ``kept_tokens.png`` (the tokens each stage kept, for one question) under ``--out``.

The numbers are whatever this run measured: a 1M-parameter model on a toy task, not the paper's.

Launch::

    python -m llava.demo
    python -m llava.demo --out playground/demo --finetune_steps 300 --gpus 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from .bench.flops import llm_flops
from .data.synthetic import make_tiny_assets
from .data.templates import build_prompt
from .eval.pictures import kept_token_picture
from .eval.run import Answerer
from .model.builder import load_llava
from .paths import load_schedule

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "playground" / "tiny"


def train(out: Path, args) -> dict[str, Path]:
    """Pretrain once (no drop), finetune twice (no drop / PyramidDrop) through the scripts."""
    runs = {"pretrain": out / "pretrain", "nodrop": out / "finetune-nodrop", "pdrop": out / "finetune-pdrop"}
    common = {"GPUS": str(args.gpus), "PYTHON": sys.executable}
    _script("pretrain_pdrop.sh", "tiny-pretrain", runs["pretrain"], common,
            "--no_pdrop", "--max_steps", str(args.pretrain_steps), "--save_steps", str(args.pretrain_steps))
    adapter = {"PRETRAIN_MM_MLP_ADAPTER": str(runs["pretrain"] / "mm_projector.bin")}
    finetune = ["--max_steps", str(args.finetune_steps), "--save_steps", str(args.finetune_steps),
                "--learning_rate", str(args.learning_rate), "--seed", str(args.seed)]
    _script("finetune_pdrop.sh", "tiny-finetune", runs["nodrop"], {**common, **adapter}, "--no_pdrop", *finetune)
    _script("finetune_pdrop.sh", "tiny-finetune", runs["pdrop"], {**common, **adapter}, *finetune)
    return runs


def _script(script: str, config: str, output_dir: Path, env: dict, *flags: str) -> None:
    if (output_dir / "config.json").is_file():
        print(f"[demo] {output_dir} exists, reusing it")
        return
    environment = {**os.environ, **env, "CONFIG": f"configs/train/{config}.json", "OUTPUT_DIR": str(output_dir)}
    print(f"[demo] bash scripts/{script} ({config}) -> {output_dir}", flush=True)
    done = subprocess.run(["bash", f"scripts/{script}", *flags], cwd=REPO, env=environment,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise SystemExit(f"[demo] scripts/{script} failed:\n{done.stdout[-4000:]}")


def settings(schedule, num_layers: int) -> list[tuple[str, str, object]]:
    """(name, which finetune, schedule) of the five rows; FastV gets the schedule's image-token FLOPs."""
    return [
        ("no drop", "nodrop", None),
        ("PyramidDrop (trained)", "pdrop", schedule),
        ("PyramidDrop (training-free)", "nodrop", schedule),
        ("FastV K=1 (equal FLOPs)", "nodrop", schedule.fastv_at_equal_flops(num_layers, k=1)),
        ("random (same schedule)", "nodrop", replace(schedule, method="random")),
    ]


def evaluate(model, processor, questions: list[dict], batch_size: int) -> tuple[float, float, float]:
    """Accuracy (% exact one-word answers) and the mean prompt's text and image tokens."""
    answerer = Answerer(model, processor, "vicuna_v1", str(TINY / "data" / "images"), "pad")
    correct, text_tokens, image_tokens = 0, 0, 0
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [answerer.prompt({"question_id": q["id"], "image": q["image"], "text": q["question"]}) for q in chunk]
        answers = answerer.answer(prompts, max_new_tokens=3, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
        for q, prompt, answer in zip(chunk, prompts, answers):
            correct += answer.lower().strip(" .").split(" ")[0] == q["answer"]
            images = prompt.input_ids.count(model.config.image_token_id)
            image_tokens, text_tokens = image_tokens + images, text_tokens + len(prompt.input_ids) - images
    return 100.0 * correct / len(questions), text_tokens / len(questions), image_tokens / len(questions)


def compare(runs: dict[str, Path], questions: list[dict], args) -> list[dict]:
    schedule = load_schedule("tiny")
    models = {name: load_llava(str(runs[name]), attn_implementation="eager") for name in ("nodrop", "pdrop")}
    config = models["nodrop"][0].config.get_text_config()
    shape = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    rows = []
    for name, which, sched in settings(schedule, config.num_hidden_layers):
        model, processor = models[which]
        model.set_pdrop_config(sched)
        accuracy, text, images = evaluate(model, processor, questions, args.batch_size)
        flops = llm_flops(*shape, image_tokens=round(images), text_tokens=round(text), schedule=sched)
        image_flops = llm_flops(*shape, image_tokens=round(images), text_tokens=0, schedule=sched)  # the paper's count
        rows.append({"setting": name, "model": which, "schedule": None if sched is None else sched.to_dict(),
                     "accuracy": round(accuracy, 1), "llm_mflops": round(flops / 1e6, 2), "image_mflops": image_flops / 1e6})
    base, image_base = rows[0]["llm_mflops"], rows[0]["image_mflops"]
    for row in rows:
        row["flops_ratio"] = round(row["llm_mflops"] / base, 3)
        row["image_flops_ratio"] = round(row.pop("image_mflops") / image_base, 3)
    return rows


def picture(run: Path, question: dict, out: Path) -> dict:
    """The tokens each stage of the PyramidDrop-trained model kept for ``question``, as a PNG."""
    from PIL import Image

    model, processor = load_llava(str(run), attn_implementation="eager")
    image = Image.open(TINY / "data" / "images" / question["image"]).convert("RGB")
    prompt = build_prompt([{"from": "human", "value": "<image>\n" + question["question"]}], "vicuna_v1")
    _, summary = kept_token_picture(model, processor, image, prompt, out)
    return {"path": str(out), "question": question["question"], "kept_per_stage": summary["kept"]}


def table(rows: list[dict]) -> str:
    lines = [f"{'setting':<30} {'accuracy %':>10} {'LLM MFLOPs':>11} {'ratio (prompt)':>15} {'ratio (image tokens)':>21}"]
    lines += [f"{r['setting']:<30} {r['accuracy']:>10.1f} {r['llm_mflops']:>11.2f} {r['flops_ratio']:>15.3f} "
              f"{r['image_flops_ratio']:>21.3f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Train a tiny LLaVA on a synthetic VQA task and compare token drops.")
    parser.add_argument("--out", type=Path, default=REPO / "playground" / "demo", help="runs, results.json, PNG")
    parser.add_argument("--pretrain_steps", type=int, default=150)
    parser.add_argument("--finetune_steps", type=int, default=600)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--gpus", type=int, default=2, help="processes per run (CPU: gloo)")
    parser.add_argument("--batch_size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    make_tiny_assets(TINY)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = train(args.out, args)
    questions = json.loads((TINY / "data" / "eval.json").read_text())
    rows = compare(runs, questions, args)
    kept = picture(runs["pdrop"], questions[0], args.out / "kept_tokens.png")
    results = {"rows": rows, "questions": len(questions), "picture": kept, "seed": args.seed,
               "steps": {"pretrain": args.pretrain_steps, "finetune": args.finetune_steps}}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(rows))
    print(f"[demo] {len(questions)} held-out questions; results: {args.out / 'results.json'}; "
          f"kept tokens per stage for {kept['question']!r}: {kept['kept_per_stage']} -> {kept['path']}")
    return results


if __name__ == "__main__":
    main()
