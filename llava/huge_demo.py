"""The huge-image demo: coarse-to-fine tile selection on synthetic scenes of 2,000 and 4,000 px, trained on CPU.

What it does (several minutes on 2 CPU cores; seeded, one thread per process):

1. writes the task (``<out>/assets``; :mod:`llava.pyramid.synthetic`): 336 px training images of plain
   ground with one coloured object, at the scales the pyramid's levels show (x1, x2, x4), and per image
   size and evaluation seed 16 square images with one 84 px object (7 px in a 4,000 px image's
   thumbnail); the question is "What color is the object?". A small LLaVA-NeXT's parts from
   ``configs/models/huge-demo-next.json`` (random Llama, CLIP with colour-reading patch embeddings);
2. trains through the real scripts (DeepSpeed on 2 CPU processes, ``configs/train/huge-demo-*.json``):
   ``scripts/pretrain_pdrop_next.sh`` (projector), ``scripts/finetune_pdrop_next.sh`` (LLM + projector),
   then ``scripts/finetune_pdrop_next.sh`` with ``--train_focus_module`` (the trained focus), each with a
   progress bar; a run is reused when its settings hash matches (``llava.demo``'s runner);
3. answers every evaluation image five ways: the thumbnail only, the full grid (every 336 px tile),
   coarse-to-fine with the training-free focus (``configs/pyramid/huge-demo.json``), the same walk with
   random focus (the same caps), and with the trained focus;
4. prints a table per image size: accuracy (mean ± sample sd over the evaluation seeds), how often the
   object lies under the final tokens, image tokens given to the LLM, vision-tower GFLOPs, all GFLOPs
   (vision, focus passes, the answer's prefill), the peak memory of answering one image (RSS growth in
   a forked process) and a note when one answer dominates; writes ``results.json`` to ``--out``.

Launch::

    python -m llava.huge_demo
    python -m llava.huge_demo --out playground/huge-demo --eval_seeds 5 --num_eval 32 --image_sizes 4000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .bench.memory import peak_rss_growth_mb
from .cli import ArgumentParser, cli_main
from .data.synthetic import TEMPLATE_TEXT, make_llm, make_tokenizer, make_vision_tower
from .demo import Run, clear_if_changed, digest, fix_determinism, normalise, train_all, write_stamp
from .eval.coarse_to_fine import split_at_image
from .model.builder import load_llava
from .paths import load_model_preset, load_pyramid_config
from .pyramid import CoarseToFineConfig, PixelNorm, coarse_to_fine_batch, pack_input_ids
from .pyramid.flops import VisionShape, WalkCount, coarse_to_fine_flops, full_grid_walk, thumbnail_walk
from .pyramid.geometry import tokens_per_tile_side
from .pyramid.references import full_grid, thumbnail_only
from .pyramid.synthetic import COLORS, HugeImageTask, corpus, make_eval_set, make_train_set

REPO = Path(__file__).resolve().parents[1]
PRESET, PYRAMID = "huge-demo-next", "huge-demo"
TRAIN = {"pretrain": ("pretrain_pdrop_next.sh", "huge-demo-pretrain"),
         "finetune": ("finetune_pdrop_next.sh", "huge-demo-finetune"),
         "focus": ("finetune_pdrop_next.sh", "huge-demo-focus")}
CONV = "vicuna_v1"
IMAGE_SIZES = (2000, 4000)  # 6 x 6 and 12 x 12 tiles of 336 px: the full grid is 664 and 2,416 image tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser("llava.huge_demo", description="Train a small LLaVA-NeXT and compare coarse-to-fine tile selection "
                                                 "with the thumbnail, the full grid and random tiles on huge images.")
    parser.add_argument("--out", type=Path, default=REPO / "playground" / "huge-demo",
                        help="assets, runs, results.json")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, data order, training images)")
    parser.add_argument("--eval_seeds", type=int, default=3, help="evaluation seeds 0..N-1 (images, random focus)")
    parser.add_argument("--num_eval", type=int, default=HugeImageTask.num_eval, help="images per evaluation seed")
    parser.add_argument("--num_train", type=int, default=HugeImageTask.num_train, help="training images")
    parser.add_argument("--image_sizes", type=int, nargs="+", default=list(IMAGE_SIZES),
                        help="sides of the evaluation images, one table each")
    for stage in TRAIN:
        parser.add_argument(f"--{stage}_steps", type=int, help=f"default: configs/train/{TRAIN[stage][1]}.json")
    parser.add_argument("--gpus", type=int, default=2, help="training processes per run (CPU: gloo)")
    parser.add_argument("--batch_size", type=int, default=4, help="evaluation batch size")
    args = parser.parse_args(argv)
    parser.require_positive(args, "eval_seeds", "num_eval", "num_train", "gpus", "batch_size")
    if min(args.image_sizes) <= HugeImageTask.tile:
        parser.error(f"--image_sizes must exceed one {HugeImageTask.tile} px tile, got {args.image_sizes}")
    return args


# --------------------------------------------------------------------------- assets and training
def prepare_assets(root: Path, task: HugeImageTask, seed: int, eval_seeds: int, sizes: list[int]) -> dict:
    """Models, training data and evaluation sets (``evals[size]``: one file per seed) under ``root`` (made
    again when the settings changed)."""
    preset = load_model_preset(PRESET)
    settings = {"task": task.to_dict(), "preset": preset, "seed": seed}
    if not (clear_if_changed(root, settings, "assets") and (root / "data" / "finetune.json").is_file()):
        tokenizer = make_tokenizer(texts=[TEMPLATE_TEXT] + corpus() * 4)
        make_llm(root / "llm", seed, preset["text_config"], tokenizer)
        make_vision_tower(root / "vision", seed + 1, preset["vision_config"], readable=True)
        make_train_set(root / "data", task, seed)
        write_stamp(root, settings)
    evals = {}
    for size in sizes:
        paths = [root / "data" / f"eval-{size}px-{s}.json" for s in range(eval_seeds)]
        evals[size] = [path if path.is_file() else make_eval_set(root / "data", replace(task, image_size=size), s)
                       for s, path in enumerate(paths)]
    return {"llm": root / "llm", "vision": root / "vision", "data": root / "data", "images": root / "data" / "images",
            "evals": evals, "hash": digest(settings)}


def training_runs(out: Path, assets: dict, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Run]:
    """Projector, then LLM + projector, then the focus module of that model: each run starts from the one before."""
    common = {**env, "GPUS": str(args.gpus), "PYTHON": sys.executable, "IMAGE_FOLDER": str(assets["images"])}
    data = {"pretrain": "pretrain.json", "finetune": "finetune.json", "focus": "finetune.json"}
    runs, after = {}, assets["hash"]
    for stage, (script, config) in TRAIN.items():
        run_env = {**common, "DATA_PATH": str(assets["data"] / data[stage])}
        if stage == "focus":
            run_env["MODEL_NAME_OR_PATH"] = str(runs["finetune"].output_dir)
        else:
            run_env.update(MODEL_NAME_OR_PATH=str(assets["llm"]), VISION_TOWER=str(assets["vision"]))
        if stage == "finetune":
            run_env["PRETRAIN_MM_MLP_ADAPTER"] = str(runs["pretrain"].output_dir / "mm_projector.bin")
        steps = getattr(args, f"{stage}_steps")
        flags = ["--seed", str(args.seed)] + (["--max_steps", str(steps)] if steps else [])
        runs[stage] = Run(stage, script, config, out / stage, run_env, flags, after)
        after = digest(runs[stage].settings())
    return runs


# --------------------------------------------------------------------------- the five ways to answer
@dataclass(frozen=True)
class Method:
    """One row of the table: ``kind`` is ``thumbnail``, ``full_grid`` or ``walk`` (the driver with ``config``)."""

    key: str
    name: str
    kind: str
    config: CoarseToFineConfig


def methods(config: CoarseToFineConfig, seed: int) -> list[Method]:
    """The five rows; ``seed`` (the evaluation seed) also seeds the random focus."""
    return [Method("thumbnail", "thumbnail only", "thumbnail", config),
            Method("full_grid", "full grid (every tile)", "full_grid", config),
            Method("c2f", "coarse-to-fine (training-free)", "walk", config),
            Method("random", "coarse-to-fine, random tiles", "walk", replace(config, focus="random", focus_seed=seed)),
            Method("trained", "coarse-to-fine (trained focus)", "walk", replace(config, focus="trained"))]


def image_embeddings(model, norm: PixelNorm, method: Method, paths: list[Path], prefixes, questions):
    """The :class:`~llava.pyramid.CoarseToFineResult` of every image, the way ``method`` looks at it."""
    if method.kind == "thumbnail":
        return thumbnail_only(model, paths, method.config, norm)
    if method.kind == "full_grid":
        return full_grid(model, paths, method.config, norm)
    return coarse_to_fine_batch(model, paths, prefixes, questions, method.config, norm)


def answer(model, processor, method: Method, records: list[dict], image_folder: Path) -> tuple[list[str], list]:
    """Greedy answers (normalised) and the results, for one batch of evaluation records."""
    tokenizer = processor.tokenizer
    prefixes, questions = zip(*[split_at_image("<image>\n" + r["question"], CONV, tokenizer) for r in records])
    paths = [image_folder / r["image"] for r in records]
    results = image_embeddings(model, PixelNorm.from_processor(processor), method, paths, prefixes, questions)
    batch = pack_input_ids(model, results, prefixes, questions, pad_token_id=tokenizer.pad_token_id)
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [normalise(t) for t in texts], results


def object_kept(result, obj: dict, token_px: int) -> bool | None:
    """Whether a final local token covers a pixel of ``obj`` (None: the thumbnail alone has no local tokens)."""
    if result.stop_reason == "thumbnail":
        return None
    if result.stop_reason == "full_grid":
        return True
    trace = result.traces[-1]
    side = token_px * trace.level.factor
    return any(col * side < obj["left"] + obj["side"] and (col + 1) * side > obj["left"]
               and row * side < obj["top"] + obj["side"] and (row + 1) * side > obj["top"]
               for row, col in trace.kept_coords.tolist())


def walk_flops(model, method: Method, result, text_tokens: int) -> dict[str, float]:
    """GFLOPs of one answer's prefill (:mod:`llava.pyramid.flops`): vision tower, focus passes, LLM."""
    config, vision = method.config, VisionShape.from_config(model.config)
    text = model.config.get_text_config()
    width, height = result.image_size
    if method.kind == "thumbnail":
        walk = thumbnail_walk(config, vision.patch_size)
    elif method.kind == "full_grid":
        walk = full_grid_walk(width, height, config, vision.patch_size)
    else:
        walk = WalkCount.from_result(result, tokens_per_tile_side(config.tile_size, vision.patch_size, config.pool))
        if config.focus == "random":  # no layer runs to score
            walk = replace(walk, levels=[])
    flops = coarse_to_fine_flops(walk, vision, text.num_hidden_layers, text.hidden_size, text.intermediate_size,
                                 text_tokens, config.focus_layer)
    return {"vision_gflops": flops.vision / 1e9, "total_gflops": flops.total_no_drop / 1e9}


def evaluate(model, processor, method: Method, records: list[dict], image_folder: Path, batch_size: int) -> dict:
    """One method on one evaluation set: accuracy, object kept, image tokens and GFLOPs per image, seconds."""
    started, answers, results = time.time(), [], []
    for start in range(0, len(records), batch_size):
        said, got = answer(model, processor, method, records[start:start + batch_size], image_folder)
        answers, results = answers + said, results + got
    vision = model.config.vision_config
    token_px = vision.patch_size * method.config.pool
    prefix, question = split_at_image("<image>\n" + records[0]["question"], CONV, processor.tokenizer)
    flops = [walk_flops(model, method, r, len(prefix) + len(question)) for r in results]
    kept = [object_kept(r, rec["object"], token_px) for r, rec in zip(results, records)]
    return {"accuracy": 100.0 * sum(a == r["answer"] for a, r in zip(answers, records)) / len(records),
            "object_kept": None if kept[0] is None else 100.0 * sum(kept) / len(kept),
            "image_tokens": statistics.fmean(r.num_image_tokens for r in results),
            "vision_crops": statistics.fmean(r.num_vision_images for r in results),
            "vision_gflops": statistics.fmean(f["vision_gflops"] for f in flops),
            "total_gflops": statistics.fmean(f["total_gflops"] for f in flops),
            "seconds": round(time.time() - started, 1), "answers": answers}


def peak_memories(model, processor, evals: dict[int, list[Path]], image_folder: Path) -> dict[int, dict[str, float]]:
    """Per image size and method, the peak RSS growth (MB) of answering the first image of seed 0 alone
    (:func:`llava.bench.memory.peak_rss_growth_mb`). Measured before any evaluation, so every fork starts
    from the same state of the parent (just the loaded model)."""
    config = load_pyramid_config(PYRAMID)
    out = {}
    for size, paths in evals.items():
        record = json.loads(paths[0].read_text())[0]
        out[size] = {method.key: peak_rss_growth_mb(lambda m=method: answer(model, processor, m, [record], image_folder))
                     for method in methods(config, 0)}
    return out


def answer_note(answers: list[str], share: float = 0.6) -> str:
    """``answers 'red' 70 %`` when one answer is at least ``share`` of them ('' is an answer that ends at once)."""
    said, count = Counter(answers).most_common(1)[0]
    if count < share * len(answers):
        return ""
    return f"answers {said!r} {count / len(answers):.0%}" + (" (ends at once)" if said == "" else "")


def summarise(method: Method, per_seed: list[dict], memory: float | None) -> dict:
    """One table row: means over the seeds (accuracy also its sample standard deviation)."""
    accuracies = [s["accuracy"] for s in per_seed]
    kept = [s["object_kept"] for s in per_seed]
    answers = [a for s in per_seed for a in s["answers"]]
    return {"key": method.key, "setting": method.name, "config": method.config.to_dict(),
            "accuracy": round(statistics.fmean(accuracies), 2),
            "spread": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else 0.0,
            "per_seed": [round(a, 2) for a in accuracies],
            "object_kept": None if kept[0] is None else round(statistics.fmean(kept), 1),
            **{key: round(statistics.fmean(s[key] for s in per_seed), 3)
               for key in ("image_tokens", "vision_crops", "vision_gflops", "total_gflops")},
            "peak_memory_mb": None if memory is None else round(memory, 1),
            "answers": dict(Counter(answers).most_common()), "note": answer_note(answers),
            "seconds": [s["seconds"] for s in per_seed]}


def model_rows(model, processor, evals: list[Path], image_folder: Path, batch_size: int,
               memory: dict[str, float]) -> list[dict]:
    """Every method on every evaluation set of one image size (``memory``: each method's peak MB), and chance."""
    config = load_pyramid_config(PYRAMID)
    sets = [json.loads(path.read_text()) for path in evals]
    rows = []
    for index, method in enumerate(methods(config, 0)):
        per_seed = [evaluate(model, processor, methods(config, seed)[index], records, image_folder, batch_size)
                    for seed, records in enumerate(sets)]
        rows.append(summarise(method, per_seed, memory.get(method.key)))
        print(f"[huge-demo] {method.name}: accuracy {rows[-1]['accuracy']:.1f} % ({rows[-1]['per_seed']}), "
              f"{rows[-1]['image_tokens']:.0f} image tokens", flush=True)
    return rows + [chance_row()]


def chance_row() -> dict:
    return {"key": "chance", "setting": "chance (uniform over colours)", "accuracy": round(100.0 / len(COLORS), 2),
            "spread": 0.0, "note": ""}


# --------------------------------------------------------------------------- output
def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[dict], seeds: int) -> str:
    """Accuracy mean ± sd, object kept, image tokens, vision-tower and total GFLOPs, peak memory."""
    head = (f"{'setting':<32} {f'accuracy % (±sd, {seeds} seeds)':>27} {'object kept %':>13} {'image tokens':>12} "
            f"{'vision GFLOPs':>13} {'all GFLOPs':>10} {'peak MB':>8}  note")
    lines = [head]
    for r in rows:
        lines.append(f"{r['setting']:<32} {r['accuracy']:>20.1f} ± {r['spread']:<4.1f} "
                     f"{_cell(r.get('object_kept'), '.0f'):>13} {_cell(r.get('image_tokens'), '.0f'):>12} "
                     f"{_cell(r.get('vision_gflops'), '.2f'):>13} {_cell(r.get('total_gflops'), '.2f'):>10} "
                     f"{_cell(r.get('peak_memory_mb'), '.0f'):>8}  {r.get('note', '')}")
    return "\n".join(lines)


def claims(rows: list[dict]) -> dict:
    """What the table says about coarse-to-fine (training-free) against the references, as numbers."""
    by = {r["key"]: r for r in rows}
    c2f, full = by["c2f"], by["full_grid"]
    return {"token_share_of_full_grid": round(c2f["image_tokens"] / full["image_tokens"], 4),
            "vision_flops_share_of_full_grid": round(c2f["vision_gflops"] / full["vision_gflops"], 4),
            "accuracy_minus_full_grid": round(c2f["accuracy"] - full["accuracy"], 2),
            "accuracy_minus_thumbnail": round(c2f["accuracy"] - by["thumbnail"]["accuracy"], 2),
            "accuracy_minus_random": round(c2f["accuracy"] - by["random"]["accuracy"], 2),
            "trained_minus_training_free": round(by["trained"]["accuracy"] - c2f["accuracy"], 2)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started, load = time.time(), os.getloadavg()[0]
    env = fix_determinism(args.seed)
    out = args.out.resolve()
    task = HugeImageTask(num_train=args.num_train, num_eval=args.num_eval)
    assets = prepare_assets(out / "assets", task, args.seed, args.eval_seeds, args.image_sizes)
    timings = {"assets": round(time.time() - started, 1)}
    happened, seconds = train_all(training_runs(out, assets, args, env))
    timings.update(seconds)
    model, processor = load_llava(str(out / "focus"), attn_implementation="eager")  # stage 2's weights + the module
    began = time.time()
    memory = peak_memories(model, processor, assets["evals"], assets["images"])
    timings["peak memory"] = round(time.time() - began, 1)
    sizes = {}
    for size in args.image_sizes:
        began = time.time()
        print(f"[huge-demo] {size} x {size} px, {args.eval_seeds} seeds x {args.num_eval} images", flush=True)
        rows = model_rows(model, processor, assets["evals"][size], assets["images"], args.batch_size, memory[size])
        sizes[str(size)] = {"rows": rows, "claims": claims(rows)}
        timings[f"evaluate {size} px"] = round(time.time() - began, 1)
    results = {"sizes": sizes, "eval_seeds": args.eval_seeds, "images_per_seed": args.num_eval,
               "task": task.to_dict(), "seed": args.seed, "runs": happened, "seconds": timings,
               "total_seconds": round(time.time() - started, 1),
               "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
               "machine": {"cpus": os.cpu_count(), "threads_per_process": torch.get_num_threads(),
                           "torch": torch.__version__}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for size, result in sizes.items():
        said = result["claims"]
        print(f"\n{size} x {size} px images ({args.eval_seeds} seeds x {args.num_eval} images, one 84 px object)")
        print(table(result["rows"], args.eval_seeds))
        print(f"coarse-to-fine: {said['token_share_of_full_grid']:.1%} of the full grid's image tokens, "
              f"{said['vision_flops_share_of_full_grid']:.1%} of its vision FLOPs")
    print(f"[huge-demo] {results['total_seconds']:.0f} s in all (load average {load:.1f} at the start); "
          f"results: {out / 'results.json'}")
    return results


if __name__ == "__main__":
    cli_main(main, prog="llava.huge_demo")
