"""Every command line: a user's mistake is one error line and a non-zero exit, no traceback; ``--help`` and
``--json PATH`` read the same everywhere (llava/cli.py).

Most commands run in-process through :func:`llava.cli.cli_main` (what their ``__main__`` calls, checked for
every module); a few run as ``python -m`` where the exit status and stderr of the real process are the point.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.bench import flops, speed
from llava.cli import cli_main, check_model_source, unknown_flags_message
from llava.data import synthetic
from llava.eval import chunks, infer, model_vqa_loader, run, score
from llava.model import assemble, convert
from llava import quicklook, release
from llava.train import settings, train
from tests.conftest import save_assembled_llava

REPO = Path(__file__).resolve().parents[1]
NOT_OURS = {"llava/demo.py"}  # the demo's entry point belongs to the demo's owner (issue 13, section 1)


def entry_points() -> list[Path]:
    """Modules with a ``__main__`` block (an ``if __name__ == "__main__":`` statement, not a docstring mention)."""
    found = []
    for path in sorted((REPO / "llava").rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body):
            found.append(path)
    return found


@pytest.mark.parametrize("path", entry_points(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_entry_point_goes_through_cli_main(path):
    if str(path.relative_to(REPO)) in NOT_OURS:
        pytest.skip("not this layer's entry point")
    tree = ast.parse(path.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))
    compat = "compat_main(" in path.read_text()  # LLaVA's thin eval modules: their main is cli_main's
    assert "cli_main(" in ast.unparse(block) or compat, "the __main__ block runs main through llava.cli.cli_main"


def one_line_error(capsys, main, argv, prog, code=1) -> str:
    """Run ``main(argv)`` as its ``__main__`` does: exit ``code``, one ``prog: error:`` line, no traceback."""
    with pytest.raises(SystemExit) as stop:
        cli_main(main, argv, prog)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]  # progress bars of a model load may precede
    assert stop.value.code == code and len(errors) == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == errors[0] and errors[0].startswith(f"{prog}: error: "), err
    return errors[0].removeprefix(f"{prog}: error: ")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "What?"}) + "\n")
    (tmp_path / "images").mkdir()
    return tmp_path


# --------------------------------------------------------------------------- evaluation
def test_eval_errors_come_before_the_model_loads(files, capsys):
    """The model path does not exist either: each error below is found first, without loading anything."""
    base = ["--model_path", str(files / "no-model"), "--answers_file", str(files / "a.jsonl")]
    q, images = ["--question_file", str(files / "q.jsonl")], ["--image_folder", str(files / "images")]
    cases = [
        (["--question_file", str(files / "missing.jsonl"), *images], "question file", "missing.jsonl does not exist"),
        ([*q, "--image_folder", str(files / "nope")], "image folder", "nope does not exist"),
        ([*q, *images, "--conv_mode", "mpt"], "conv mode", "has no equivalent here"),
        ([*q, *images], "model folder", "no-model does not exist (not a folder here"),
    ]
    for argv, what, message in cases:
        assert message in one_line_error(capsys, run.main, base + argv, "llava.eval.run"), what
    infer_argv = ["--model_path", "x/y", "--image", "nope.png", "--question", "?"]
    assert "nope.png: image file does not exist" in one_line_error(capsys, infer.main, infer_argv, "llava.eval.infer")
    message = one_line_error(capsys, model_vqa_loader.main, ["--model-path", "m", "--question-file", "none.jsonl",
                                                             "--answers-file", "a"], "llava.eval.model_vqa_loader")
    assert message == "question file none.jsonl does not exist"


def test_bad_schedules_are_one_line(assets, files, capsys):
    """Schedules are checked against the model, once it is known: still one line."""
    save_assembled_llava(assets, files / "ckpt")
    base = ["--model_path", str(files / "ckpt"), "--question_file", str(files / "q.jsonl"), "--answers_file",
            str(files / "a.jsonl"), "--device", "cpu"]
    for schedule, message in ((["--layer_list", "[1,2]"], "must be given together"),
                              (["--layer_list", "[1,2,9]", "--image_token_ratio_list", "[0.5,0.25,0.125]"],
                               "boundary 9")):
        assert message in one_line_error(capsys, run.main, base + schedule, "llava.eval.run")


def test_unknown_flags_are_one_line_with_the_closest_flag(capsys):
    message = one_line_error(capsys, run.main, ["--model_path", "m", "--question_file", "q", "--answers_file", "a",
                                                "--max_new_tokns", "4"], "llava.eval.run", code=2)
    assert message == ("unrecognized arguments: --max_new_tokns 4 (did you mean --max_new_tokens?) "
                       "(--help lists the flags)")
    message = one_line_error(capsys, train.main, ["--model_name_or_path", "m", "--data_path", "d", "--output_dir", "o",
                                                  "--lerning_rate", "1"], "llava.train.train")
    assert message == "unrecognized arguments: --lerning_rate 1 (did you mean --learning_rate?)"
    assert unknown_flags_message(["--model-pth", "x"], ["--model_path"]).endswith("(did you mean --model_path?)")


def test_score_and_merge_name_missing_files(files, capsys):
    answers = files / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 1, "prompt": "p", "text": "yes"}) + "\n")
    with pytest.raises(SystemExit) as stop:
        cli_main(score.main, ["--task", "pope", "--answers", str(answers), "--annotations", str(files / "coco")],
                 "llava.eval.score")
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err and "coco" in err and len(err.strip().splitlines()) == 1
    assert "missing.jsonl" in one_line_error(capsys, chunks.main, ["--out", str(files / "m.jsonl"),
                                                                   str(files / "missing.jsonl")], "llava.eval.chunks")


# --------------------------------------------------------------------------- training
def test_train_errors_are_one_line(assets, tmp_path, capsys, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "d.json"
    data.write_text("[]")
    base = ["--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--report_to", "none"]
    cases = [
        (["--model_name_or_path", str(tmp_path / "llm"), "--data_path", str(data)], "--model_name_or_path"),
        (["--model_name_or_path", "org/llm", "--data_path", str(tmp_path / "missing.json")], "--data_path"),
        (["--model_name_or_path", "org/llm", "--data_path", str(data), "--image_folder", str(tmp_path / "x")],
         "--image_folder"),
        (["--model_name_or_path", str(assets["llm"]), "--vision_tower", str(assets["vision"]), "--data_path",
          str(data), "--pdrop_lambda", "0.5", "--layer_list", "[1]", "--image_token_ratio_list", "[0.5]"],
         "each describe the whole schedule"),  # found once the model's depth is known
    ]
    for argv, message in cases:
        assert message in one_line_error(capsys, train.main, base + argv, "llava.train.train")
    assert "global_batch_size=12 is not a multiple" in one_line_error(
        capsys, settings.main, ["--world_size", "5", "--", "--global_batch_size", "12", "--per_device_train_batch_size",
                                "2"], "llava.train.settings")


def test_a_train_error_under_python_m_is_one_line(tmp_path):
    """The real process: exit status 1, the error line, no traceback."""
    result = subprocess.run([sys.executable, "-m", "llava.train.train", "--model_name_or_path", "org/llm",
                             "--data_path", str(tmp_path / "missing.json"), "--output_dir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"llava.train.train: error: --data_path {tmp_path}/missing.json " \
                                                     "does not exist"


# --------------------------------------------------------------------------- the other commands
def test_model_release_data_and_quicklook_errors(tmp_path, capsys):
    assert "does not exist" in one_line_error(capsys, release.main, ["--checkpoint", str(tmp_path / "none"),
                                                                     "--repo_id", "me/x", "--dry_run"], "llava.release")
    assert "no config.json" in one_line_error(capsys, convert.main, ["--src", str(tmp_path), "--dst",
                                                                     str(tmp_path / "o")], "llava.model.convert")
    assert "--llm ./no-llm does not exist" in one_line_error(
        capsys, assemble.main, ["--llm", "./no-llm", "--vision_tower", "org/clip", "--out", str(tmp_path / "o")],
        "llava.model.assemble")
    (tmp_path / "file").write_text("")
    one_line_error(capsys, synthetic.main, ["--out", str(tmp_path / "file" / "tiny")], "llava.data.synthetic")
    assert "boundary 9" in one_line_error(capsys, quicklook.main, ["--layer_list", "[9]", "--image_token_ratio_list",
                                                                   "[0.5]"], "llava.quicklook")


def test_bench_errors(tmp_path, capsys):
    assert "no model config 'nope'" in one_line_error(capsys, flops.main, ["--preset", "nope"], "llava.bench.flops",
                                                      code=2)
    assert "folder" in one_line_error(capsys, flops.main, ["--json", str(tmp_path / "no" / "f.json")],
                                      "llava.bench.flops", code=2)
    assert one_line_error(capsys, speed.main, ["--preset", "tiny-llava", "--json", str(tmp_path / "no" / "s.json")],
                          "llava.bench", code=2) == f"--json {tmp_path}/no/s.json: folder {tmp_path}/no does not exist"


def test_model_sources():
    check_model_source("lmsys/vicuna-7b-v1.5", "m")  # a Hub id: left to the Hub
    check_model_source("gpt2", "m")
    for local in ("/no/such/model", "./model", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            check_model_source(local, "--model_path")


# --------------------------------------------------------------------------- --help and --json
HELP = [("llava.eval.run", run.main), ("llava.eval.infer", infer.main), ("llava.eval.model_vqa_loader",
        model_vqa_loader.main), ("llava.train.train", train.main), ("llava.train.settings", settings.main),
        ("llava.bench", speed.main), ("llava.bench.flops", flops.main), ("llava.quicklook", quicklook.main),
        ("llava.release", release.main), ("llava.model.convert", convert.main), ("llava.model.assemble", assemble.main),
        ("llava.data.synthetic", synthetic.main), ("llava.eval.chunks", chunks.main), ("llava.eval.score", score.main)]


@pytest.mark.parametrize("module, main", HELP, ids=[m for m, _ in HELP])
def test_help_says_how_to_run_it(module, main, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith(f"usage: python -m {module}")


def test_bench_help_names_presets_and_defaults(capsys):
    for main in (speed.main, flops.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "llava-1.5-7b" in out and "tiny-llava" in out and "--json PATH" in out
    assert "(default: llava-1.5-7b)" in out and "'-': print the JSON" in out


def test_json_path_means_the_same_in_flops_and_bench(tmp_path, capsys):
    report = flops.main(["--preset", "tiny-llava", "--json", str(tmp_path / "f.json")])
    out = capsys.readouterr().out
    assert "paper (image only)" in out and f"results written to {tmp_path / 'f.json'}" in out
    assert json.loads((tmp_path / "f.json").read_text())["paper_ratio"] == pytest.approx(report.paper_ratio)
    flops.main(["--preset", "tiny-llava", "--json", "-"])
    assert json.loads(capsys.readouterr().out)["preset"] == "tiny-llava"  # '-': JSON alone on stdout
    results = speed.main(["--preset", "tiny-llava", "--device", "cpu", "--methods", "none", "--tasks", "prefill",
                          "--warmup", "0", "--repeats", "1", "--max_new_tokens", "1",
                          "--json", str(tmp_path / "s.json")])
    assert f"results written to {tmp_path / 's.json'}" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["command"] == results["command"]


def test_python_m_help_has_the_module_name():
    result = subprocess.run([sys.executable, "-m", "llava.eval.model_vqa", "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m llava.eval.model_vqa ")
