"""The scorers on hand-made fixtures in each benchmark's real annotation format (tests/eval/fixtures/).

Every expected number is worked out by hand in the comments next to it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from llava.eval import score as score_cli
from llava.eval.answers import check_ids, read_answers
from llava.eval.scorers import TASKS, get_task, gqa, mmbench, mme, pope, scienceqa, seed, vqa
from llava.eval.scorers.choice import parse_choice
from llava.eval.scorers.normalize import CONTRACTIONS, normalize_answer

FIXTURES = Path(__file__).parent / "fixtures"
VQAV2 = FIXTURES / "vqav2" / "v2_mscoco_val2014_annotations.json"
TEXTVQA = FIXTURES / "textvqa" / "TextVQA_0.5.1_val.json"
GQA = FIXTURES / "gqa" / "data" / "testdev_balanced_questions.json"
POPE_DIR = FIXTURES / "pope" / "coco"
POPE_QUESTIONS = FIXTURES / "pope" / "llava_pope_test.jsonl"
MME = FIXTURES / "MME" / "MME_Benchmark_release_version"
SQA = FIXTURES / "scienceqa" / "problems.json"
MMBENCH = FIXTURES / "mmbench" / "mmbench_dev_20230712.tsv"
SEED = FIXTURES / "seed_bench" / "SEED-Bench.json"
ANSWERS = {"vqav2": "vqav2", "textvqa": "textvqa", "gqa": "gqa", "pope": "pope", "mme": "MME", "sqa": "scienceqa",
           "mmbench": "mmbench/answers/mmbench_dev_20230712", "seed": "seed_bench"}
approx = pytest.approx


def answers_of(task: str) -> list[dict]:
    folder = ANSWERS[task]
    path = FIXTURES / folder / ("fixture.jsonl" if folder.endswith("20230712") else "answers/fixture.jsonl")
    return read_answers(path)


def answer(qid, text, prompt="q?") -> dict:
    return {"question_id": qid, "prompt": prompt, "text": text}


# ------------------------------------------------------------------ normalisation, letters

@pytest.mark.parametrize("raw,normal", [
    ("Two", "2"), ("a dog.", "dog"), ("A Dog", "dog"), ("The Ten cats", "10 cats"), ("none", "0"),
    ("2.5", "2.5"), ("yes!", "yes"), ("dont", "don't"), ("couldnt've", "couldn't've"), ("red, white", "red white"),
    ("black/white", "black white"), ("black / white", "black white"), ("10,000", "10000"), ("dog's", "dog 's"),
    ("  line\nbreak\t", "line break"), ("what?", "what"), ("x-ray", "x ray"), ("e.g", "eg"),
])
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal


def test_contractions_come_from_one_apostrophe_less_spelling():
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["yall'll"] == CONTRACTIONS["y'allll"] == "y'all'll"
    assert "couldntve" not in CONTRACTIONS  # the official table has no fully stripped double contraction
    assert "im" not in CONTRACTIONS  # its "Im" entry never matches lower-cased text


@pytest.mark.parametrize("text,picked", [
    ("B", 1), ("B.", 1), ("(B)", 1), ("B) a dog", 1), ("B. a dog", 1), ("(B) a dog", 1), ("The answer is B.", 1),
    ("the answer is (C)", 2), ("a dog", 1), ("A Dog.", 1), ("E", None), ("A fish", None), ("I don't know", None),
    ("The answer is A. The answer is B.", None), ("The answer is Blue", None), ("", None),
])
def test_parse_choice(text, picked):
    assert parse_choice(text, ["a cat", "a dog", "a bird"]) == picked


# ------------------------------------------------------------------ answers files

def test_read_answers_names_file_and_line_of_a_bad_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "text": "x"}\n\n{"question_id": 2, "text": \n')
    with pytest.raises(ValueError, match=r"a\.jsonl:3: not a JSON record"):
        read_answers(path)
    path.write_text('{"question_id": 1, "text": "x"}\n\n{"question_id": 2}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:3: answer has no 'text' field"):
        read_answers(path)
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:1: an answer must be a JSON object"):
        read_answers(path)


def test_check_ids_lists_duplicates_missing_and_extra():
    answers = [answer(i, "x") for i in (1, 2, 2, 9)]
    with pytest.raises(ValueError) as err:
        check_ids(answers, range(1, 10), "ann.json")
    message = str(err.value)
    assert "ann.json" in message
    assert "1 question(s) answered more than once: '2'" in message
    assert "6 of 9 question(s) not answered: '3', '4', '5', '6', '7', ... (6 in all)" in message
    answers = [answer(i, "x") for i in (1, 2, "extra")]
    with pytest.raises(ValueError, match=r"1 answer\(s\) to questions not in the annotations: 'extra'"):
        check_ids(answers, [1, "2"], "ann.json")  # ids compare as strings: 2 == "2"
    assert list(check_ids(answers[:2], ["1", 2], "ann.json")) == ["1", "2"]


@pytest.mark.parametrize("task", sorted(ANSWERS))
def test_a_missing_or_repeated_answer_is_an_error(task):
    annotations = {"vqav2": VQAV2, "textvqa": TEXTVQA, "gqa": GQA, "pope": POPE_DIR, "mme": MME, "sqa": SQA,
                   "mmbench": MMBENCH, "seed": SEED}[task]
    options = {"questions": POPE_QUESTIONS} if task == "pope" else {}
    answers = answers_of(task)
    with pytest.raises(ValueError, match=r"1 of \d+ question\(s\) not answered"):
        TASKS[task].score(answers[1:], annotations, **options)
    with pytest.raises(ValueError, match=r"answered more than once"):
        TASKS[task].score(answers + answers[:1], annotations, **options)


# ------------------------------------------------------------------ VQAv2 / TextVQA

def test_vqa_accuracy_averages_over_leave_one_out_subsets():
    humans = ["dog"] * 3 + ["cat"] * 7
    assert vqa.vqa_accuracy("dog", humans[:1] + ["cat"] * 9) == approx(0.3)  # not min(1/3, 1)
    assert vqa.vqa_accuracy("dog", humans[:2] + ["cat"] * 8) == approx(0.6)  # (2 * 1/3 + 8 * 2/3) / 10
    assert vqa.vqa_accuracy("dog", humans) == approx(0.9)  # (3 * 2/3 + 7 * 1) / 10
    assert vqa.vqa_accuracy("cat", humans) == 1.0
    assert vqa.vqa_accuracy("Two", ["2"] * 10) == 1.0 and vqa.vqa_accuracy("a dog.", ["dog"] * 10) == 1.0


def test_vqav2_scores_by_answer_type():
    result = vqa.score_vqav2(answers_of("vqav2"), VQAV2)
    # "Two" vs 10 x "2": 1.0; "a dog." vs dog, Dog, a dog + 7 others: 0.9; "Yes" vs 1 yes: 0.3;
    # "yes" vs 10 x no: 0; "red" vs 2 x red: 0.6
    assert result == {"accuracy": approx(56.0), "n": 5,
                      "by_answer_type": {"number": 100.0, "other": approx(75.0), "yes/no": approx(15.0)}}


def test_vqav2_submission_lists_every_test_question(tmp_path):
    out = vqa.convert_vqav2(answers_of("vqav2"), tmp_path / "up" / "run.json",
                            questions=FIXTURES / "vqav2" / "llava_vqav2_mscoco_test2015.jsonl")
    assert json.loads(out.read_text()) == [
        {"question_id": 1001, "answer": "2"}, {"question_id": 1002, "answer": "dog"}, {"question_id": 2001, "answer": ""},
        {"question_id": 1003, "answer": "yes"}, {"question_id": 1004, "answer": "yes"},
        {"question_id": 1005, "answer": "red"}, {"question_id": 2002, "answer": ""}]
    official = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    official.write_text(json.dumps({"questions": [{"question_id": 1001, "image_id": 1, "question": "?"}]}))
    with pytest.raises(ValueError, match=r"4 answer\(s\) to questions not in the annotations"):
        vqa.convert_vqav2(answers_of("vqav2"), tmp_path / "x.json", questions=official)
    only = vqa.convert_vqav2(answers_of("vqav2")[:2], tmp_path / "y.json")
    assert json.loads(only.read_text()) == [{"question_id": 1001, "answer": "2"}, {"question_id": 1002, "answer": "dog"}]


def test_textvqa_matches_llava_image_ids_by_question():
    answers = answers_of("textvqa")
    assert answers[0]["question_id"] == answers[1]["question_id"]  # LLaVA's ids are image ids
    # "Nikon." vs 3 x nikon: 0.9; copenhagen vs 10: 1.0; "5:40" vs 1 of 10: 0.3 -> 2.2 / 3
    assert vqa.score_textvqa(answers, TEXTVQA) == {"accuracy": approx(220 / 3), "n": 3}


def test_textvqa_matches_textvqa_question_ids():
    answers = [answer(34602, "dakota"), answer(34603, "Copenhagen"), answer(34604, "5:41")]
    assert vqa.score_textvqa(answers, TEXTVQA) == {"accuracy": approx(100.0), "n": 3}


# ------------------------------------------------------------------ GQA

def test_gqa_exact_match_per_type(tmp_path):
    result = gqa.score(answers_of("gqa"), GQA)
    # "Yes." -> yes (right), "The table" != table, left (right), yes != no, bowl (right)
    assert result == {"accuracy": approx(60.0), "n": 5,
                      "by_structural": {"choose": 100.0, "logical": 0.0, "query": 50.0, "verify": 100.0},
                      "by_semantic": {"attr": 100.0, "obj": 0.0, "rel": 100.0}}
    out = gqa.convert(answers_of("gqa"), tmp_path / "pred.json")
    assert json.loads(out.read_text())[:2] == [{"questionId": "201", "prediction": "yes"},
                                               {"questionId": "202", "prediction": "the table"}]


# ------------------------------------------------------------------ POPE

def test_pope_answer_reads_the_first_sentence_like_llava():
    assert pope.pope_answer("Yes, there is a dog.") and pope.pope_answer("Nothing there. no.")
    assert not pope.pope_answer("No") and not pope.pope_answer("There is not.") and not pope.pope_answer("no, none")
    assert pope.pope_answer("NO")  # LLaVA only matches no / No / not


def test_pope_all_yes_and_all_no():
    labels = [True, False, True, False]
    assert pope.pope_metrics([True] * 4, labels) == {"accuracy": 50.0, "precision": 50.0, "recall": 100.0,
                                                     "f1": approx(200 / 3), "yes_ratio": 100.0, "n": 4}
    assert pope.pope_metrics([False] * 4, labels) == {"accuracy": 50.0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                      "yes_ratio": 0.0, "n": 4}


def test_pope_per_split_with_llava_question_file():
    result = pope.score(answers_of("pope"), POPE_DIR, questions=POPE_QUESTIONS)
    # adversarial: TP, FN, TN, FP; popular: all yes on yes/no/yes/no; random: TP, FN, FN, FP
    assert result["by_split"] == {
        "adversarial": {"accuracy": 50.0, "precision": 50.0, "recall": 50.0, "f1": 50.0, "yes_ratio": 50.0, "n": 4},
        "popular": {"accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": approx(200 / 3), "yes_ratio": 100.0,
                    "n": 4},
        "random": {"accuracy": 25.0, "precision": 50.0, "recall": approx(100 / 3), "f1": approx(40.0),
                   "yes_ratio": 50.0, "n": 4}}
    assert result["f1"] == approx((50 + 200 / 3 + 40) / 3) and result["accuracy"] == approx(125 / 3)
    assert result["n"] == 12


def test_pope_one_split():
    result = pope.score(answers_of("pope"), POPE_DIR, questions=POPE_QUESTIONS, split="random")
    assert list(result["by_split"]) == ["random"] and result["f1"] == approx(40.0) and result["n"] == 4
    with pytest.raises(ValueError, match="no POPE split 'randm'"):
        pope.score(answers_of("pope"), POPE_DIR, questions=POPE_QUESTIONS, split="randm")


def test_pope_label_file_as_question_file():
    answers = [answer(i, text) for i, text in enumerate(["Yes", "No", "No", "Yes"], start=1)]
    result = pope.score(answers, POPE_DIR / "coco_pope_random.json")  # labels yes, yes, yes, no
    assert list(result["by_split"]) == ["random"] and result["accuracy"] == 25.0
    with pytest.raises(ValueError, match="needs the question file"):
        pope.score(answers, POPE_DIR)


# ------------------------------------------------------------------ MME

def test_mme_acc_plus_needs_both_questions_of_an_image():
    result = mme.score(answers_of("mme"), MME)
    # existence: image 1 both right, image 2 one of two -> acc 3/4, acc+ 1/2; artwork: both wrong;
    # code_reasoning ("Yes, it is." reads yes): both right
    assert result["by_subtask"] == {
        "artwork": {"acc": 0.0, "acc_plus": 0.0, "score": 0.0, "n": 2},
        "code_reasoning": {"acc": 100.0, "acc_plus": 100.0, "score": 200.0, "n": 2},
        "existence": {"acc": 75.0, "acc_plus": 50.0, "score": 125.0, "n": 4}}
    assert result["perception"] == 125.0 and result["cognition"] == 200.0


def test_mme_answer_parsing_like_the_mme_tool():
    assert [mme.mme_answer(t) for t in ("Yes", "no", "Yes, it is", "The answer is no", "Not really", "maybe")] == [
        "yes", "no", "yes", "other", "no", "other"]


def test_mme_tool_result_files(tmp_path):
    out = mme.convert(answers_of("mme"), tmp_path / "eval_tool" / "answers" / "run", MME)
    assert sorted(p.name for p in out.iterdir()) == ["artwork.txt", "code_reasoning.txt", "existence.txt"]
    lines = (out / "existence.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["000000006040.jpg"] * 2 + ["000000018150.jpg"] * 2
    assert lines[3].split("\t") == ["000000018150.jpg", "Is there a cow in this image?  Please answer yes or no.",
                                    "No", "Yes"]


# ------------------------------------------------------------------ ScienceQA

def test_scienceqa_letters_and_groups():
    result = scienceqa.score(answers_of("sqa"), SQA)
    # 1: B right; 2: "The answer is A." right; 3: C is past the 2 options, wrong; 4: "west" = option D, right;
    # 5 is a val problem, ignored
    assert result == {"accuracy": 75.0, "n": 4,
                      "by_subject": {"LAN": 0.0, "NAT": 100.0, "SOC": 100.0},
                      "by_context": {"IMG": 100.0, "NO": 0.0, "TXT": 100.0},
                      "by_grade": {"G1-6": 50.0, "G7-12": 100.0}}
    assert scienceqa.score(answers_of("sqa"), SQA.parent, split="val") == {
        "accuracy": 100.0, "n": 1, "by_subject": {"NAT": 100.0}, "by_context": {"NO": 100.0},
        "by_grade": {"G1-6": 100.0}}


# ------------------------------------------------------------------ MMBench

def test_mmbench_circular_needs_every_variant_right():
    result = mmbench.score(answers_of("mmbench"), MMBENCH)
    # question 0: 4 variants right ("B", "A. dog", "(D)", "dog"); 1: variant 1000001 wrong; 2: main row wrong
    assert result == {"circular": approx(100 / 3), "single_pass": approx(200 / 3), "n_questions": 3, "n_rows": 8,
                      "circular_by_category": {"attribute_recognition": 50.0, "image_emotion": 0.0},
                      "circular_by_l2_category": {"CP": 0.0, "FP-S": 50.0}}


def test_mmbench_submission_tsv(tmp_path):
    out = mmbench.convert(answers_of("mmbench"), tmp_path / "sub.tsv", MMBENCH)
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "answer", "prediction"]
    assert rows[2] == ["1", 'Is the sky "blue"?', "yes", "no", "", "", "A", "A"]
    assert rows[4] == ["1000000", "Which animal is shown?", "dog", "bird", "fish", "cat", "A", "A. dog"]
    test_split = tmp_path / "mmbench_test.tsv"  # no answer column: convert only
    test_split.write_text("\n".join("\t".join(r[:6]) for r in rows) + "\n")
    with pytest.raises(ValueError, match="no column 'answer'.*convert it for submission"):
        mmbench.score(answers_of("mmbench"), test_split)
    written = mmbench.convert(answers_of("mmbench"), tmp_path / "t.tsv", questions=test_split)
    assert written.read_text().splitlines()[0].split("\t") == ["index", "question", "A", "B", "C", "D", "prediction"]


# ------------------------------------------------------------------ SEED-Bench

def test_seed_per_question_and_data_type():
    result = seed.score(answers_of("seed"), SEED)
    # A right, C != B, "D. a car" right, video "The answer is C" right
    assert result == {"accuracy": 75.0, "n": 4, "by_data_type": {"image": approx(200 / 3), "video": 100.0},
                      "by_question_type": {"Action Recognition": 100.0, "Instance Identity": 100.0,
                                           "Scene Understanding": 50.0}}
    image = seed.score(answers_of("seed"), SEED, split="image")  # the video answer is ignored
    assert image["accuracy"] == approx(200 / 3) and image["n"] == 3


# ------------------------------------------------------------------ wrong annotation files

@pytest.mark.parametrize("task,annotations,message", [
    ("mme", POPE_DIR / "coco_pope_random.json", "not MME annotations: expected the MME_Benchmark_release_version"),
    ("mme", POPE_DIR, "not MME annotations: no <subtask>"),
    ("pope", GQA, "not POPE annotations: record 1 has no field 'question_id'"),
    ("vqav2", TEXTVQA, "not VQAv2 annotations: expected an object with a 'annotations' list"),
    ("textvqa", VQAV2, "not TextVQA annotations: expected an object with a 'data' list"),
    ("gqa", SEED, "not GQA annotations: record question_type has no field 'answer'"),
    ("sqa", GQA, "not ScienceQA annotations: record 201 has no field 'choices'"),
    ("seed", VQAV2, "not SEED-Bench annotations: expected an object with a 'questions' list"),
    ("mmbench", SQA, "not an MMBench TSV: no column 'index'"),
])
def test_wrong_annotation_file_names_file_record_and_field(task, annotations, message):
    with pytest.raises(ValueError, match=message) as err:
        TASKS[task].score(answers_of("pope"), annotations)
    assert str(annotations) in str(err.value)


def test_pope_question_file_record_missing_field(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 0, "image": "a.jpg", "text": "Is there a dog?"}\n{"question_id": 1}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl: not POPE question annotations: record 2 has no field 'image'"):
        pope.score([], POPE_DIR, questions=questions)


def test_mme_bad_line_names_file_and_line(tmp_path):
    shutil.copytree(MME, tmp_path / "mme")
    (tmp_path / "mme" / "existence" / "000000006040.txt").write_text("Is there a train?\tYes\nIs there a bed?\n")
    with pytest.raises(ValueError, match=r"000000006040\.txt:2: not MME annotations"):
        mme.score(answers_of("mme"), tmp_path / "mme")


# ------------------------------------------------------------------ registry and CLI

def test_registry_names():
    assert set(TASKS) == {"vqav2", "textvqa", "gqa", "pope", "mme", "sqa", "mmbench", "mmbench_cn", "seed", "lrs_vqa"}
    assert TASKS["mmbench_cn"].score is TASKS["mmbench"].score
    with pytest.raises(ValueError, match="unknown task 'vqa'"):
        get_task("vqa")


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    answers = tmp_path / "run.jsonl"
    shutil.copy(FIXTURES / "pope" / "answers" / "fixture.jsonl", answers)
    metrics = score_cli.main(["--task", "pope", "--answers", str(answers), "--annotations", str(POPE_DIR),
                              "--questions", str(POPE_QUESTIONS), "--split", "popular"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "pope" and printed[2].split() == ["f1", "66.67"]
    record = json.loads((tmp_path / "run.score.json").read_text())
    assert record["task"] == "pope" and record["metrics"] == metrics and record["options"]["split"] == "popular"
    assert record["headline"] == "f1"


def test_cli_convert_only_and_errors(tmp_path, capsys):
    answers = FIXTURES / "vqav2" / "answers" / "fixture.jsonl"
    out = tmp_path / "upload.json"
    assert score_cli.main(["--task", "vqav2", "--answers", str(answers), "--submission", str(out)]) is None
    assert len(json.loads(out.read_text())) == 5
    with pytest.raises(SystemExit):
        score_cli.main(["--task", "vqav2", "--answers", str(answers)])  # neither scoring nor converting
    with pytest.raises(SystemExit):
        score_cli.main(["--task", "gqa", "--answers", str(answers), "--annotations", str(GQA), "--split", "x"])
    assert "--split is not an option of task gqa" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="1"):
        score_cli.main(["--task", "gqa", "--answers", str(answers), "--annotations", str(GQA)])
    assert "score: answers do not match" in capsys.readouterr().err
