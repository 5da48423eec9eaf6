"""Our model under lmms-eval (skipped where lmms-eval is not installed: it is not a dependency).

A tiny generation task over the synthetic pictures runs through ``lmms_eval.evaluator`` with
``--model pdrop_llava``; its answers must equal :mod:`llava.eval.run`'s for the same questions.
"""

from __future__ import annotations

import json

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from llava.eval import chunks, run  # noqa: E402
from tests.eval.test_run import checkpoint  # noqa: E402,F401  (the tiny saved checkpoint fixture)

TASK_YAML = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
task: tiny_color
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""
TASK_UTILS = """from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image_path"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(results[0].split(" ")[0] == doc["answer"])}
"""


def test_lmms_eval_runs_our_model_and_agrees_with_our_evaluator(checkpoint, assets, tmp_path):  # noqa: F811
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    records = json.loads((assets["data"] / "eval.json").read_text())[:6]
    docs = [{"id": r["id"], "image_path": str(assets["data"] / "images" / r["image"]), "question": r["question"],
             "answer": r["answer"]} for r in records]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "tiny_color.yaml").write_text(TASK_YAML.format(data=data))
    (task_dir / "utils.py").write_text(TASK_UTILS)
    out = simple_evaluate(model="pdrop_llava", tasks=["tiny_color"], batch_size=3, log_samples=True,
                          model_args=f"pretrained={checkpoint},attn_implementation=eager,device=cpu,max_new_tokens=4",
                          task_manager=TaskManager(include_path=str(task_dir)))
    assert "accuracy,none" in out["results"]["tiny_color"]
    theirs = {s["doc"]["id"]: s["filtered_resps"][0] for s in out["samples"]["tiny_color"]}

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": d["id"], "image": d["image_path"], "text": d["question"]})
                                 + "\n" for d in docs))
    run.main(["--model_path", str(checkpoint), "--question_file", str(questions), "--answers_file",
              str(tmp_path / "a.jsonl"), "--max_new_tokens", "4", "--attn_implementation", "eager", "--device", "cpu"])
    ours = {r["question_id"]: r["text"] for r in chunks.read_jsonl(tmp_path / "a.jsonl")}
    assert theirs == ours
