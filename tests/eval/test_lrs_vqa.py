"""The LRS-VQA scorer on a hand-made question file (tests/eval/fixtures/lrs_vqa/); numbers worked out by hand.

Right by exact match after normalisation: FAIR1M_1_0 ("Three" -> "3"), FAIR1M_2_0 ("White." -> "white"),
6 ("Yes"), 8, s10. Wrong: FAIR1M_1_1 (4 vs 5), FAIR1M_2_1 (blue vs red), 7 (yes vs no).
Right only with WordNet synonyms: FAIR1M_3_0 (grey / gray), s9 ("An automobile" -> "automobile" / car).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from llava.eval import score as score_cli
from llava.eval.answers import read_answers
from llava.eval.scorers import TASKS, lrs_vqa

FIXTURE = Path(__file__).parent / "fixtures" / "lrs_vqa"
QUESTIONS = FIXTURE / "LRS_VQA_merged.jsonl"
approx = pytest.approx


def answers():
    return read_answers(FIXTURE / "answers" / "fixture.jsonl")


def fake_wordnet(monkeypatch):
    pairs = [{"gray", "grey"}, {"car", "automobile"}]
    monkeypatch.setattr(lrs_vqa, "load_synonym_matcher", lambda: (lambda a, b: {a, b} in pairs, "wordnet"))


def test_exact_match_only_without_wordnet(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # as if nltk were not installed
    metrics = lrs_vqa.score(answers(), QUESTIONS)
    assert metrics["synonym_matching"].startswith("off: nltk is not installed") and metrics["synonym_matches"] == 0
    fair, bridge, star = (metrics["by_source"][s] for s in ("FAIR", "GLH-Bridge", "STAR"))
    # FAIR: count 1/2 = 50, color 1/3 = 33.33; OA 2/5 = 40, AA (50 + 33.33) / 2 = 41.67
    assert fair == {"oa": 40.0, "aa": approx(125 / 3), "n": 5, "by_category": {"color": approx(100 / 3), "count": 50.0}}
    # GLH-Bridge: existence 1/2, shape 1/1; OA 2/3, AA 75.  STAR: reasoning 0/1, rural_or_urban 1/1; OA 50, AA 50
    assert bridge["oa"] == approx(200 / 3) and bridge["aa"] == 75.0 and bridge["n"] == 3
    assert star == {"oa": 50.0, "aa": 50.0, "n": 2, "by_category": {"reasoning": 0.0, "rural_or_urban": 100.0}}
    # overall: OA 5/10 = 50; AA the mean of the sources' AA: (41.67 + 75 + 50) / 3 = 55.56
    assert metrics["oa"] == 50.0 and metrics["aa"] == approx((125 / 3 + 75 + 50) / 3) and metrics["n"] == 10


def test_wordnet_synonyms_count_when_available(monkeypatch):
    fake_wordnet(monkeypatch)
    metrics = lrs_vqa.score(answers(), QUESTIONS)
    assert metrics["synonym_matching"] == "wordnet" and metrics["synonym_matches"] == 2
    # FAIR color 2/3 -> OA 3/5 = 60, AA (50 + 66.67) / 2 = 58.33; STAR 2/2 -> 100; overall OA 7/10, AA (58.33+75+100)/3
    assert metrics["by_source"]["FAIR"]["oa"] == 60.0 and metrics["by_source"]["FAIR"]["aa"] == approx(175 / 3)
    assert metrics["by_source"]["STAR"]["aa"] == 100.0
    assert metrics["oa"] == 70.0 and metrics["aa"] == approx((175 / 3 + 75 + 100) / 3)


def test_real_wordnet_when_nltk_and_its_data_are_installed():
    pytest.importorskip("nltk")
    matcher, status = lrs_vqa.load_synonym_matcher()
    if matcher is None:
        pytest.skip(status)
    assert matcher("car", "automobile") and matcher("gray", "grey") and not matcher("red", "blue")


def test_missing_wordnet_data_is_reported(monkeypatch):
    class NoData:
        @staticmethod
        def synsets(word):
            raise LookupError("Resource wordnet not found")

    corpus = type(sys)("nltk.corpus")
    corpus.wordnet = NoData
    monkeypatch.setitem(sys.modules, "nltk", type(sys)("nltk"))
    monkeypatch.setitem(sys.modules, "nltk.corpus", corpus)
    matcher, status = lrs_vqa.load_synonym_matcher()
    assert matcher is None and status == "off: NLTK's WordNet data is not installed (python -m nltk.downloader wordnet)"


@pytest.mark.parametrize("record,source", [
    ({"question_id": 1, "image": "FAIR1M/x.tif"}, "FAIR"),
    ({"question_id": "GLH-Bridge_3", "image": "a.png"}, "GLH-Bridge"),
    ({"question_id": "glh_bridge_3"}, "GLH-Bridge"), ({"question_id": 2, "image": "data/STAR/P1.png"}, "STAR"),
    ({"question_id": 2, "image": "x.png", "dataset": "fair"}, "FAIR"), ({"question_id": 2, "source": "Other"}, "Other"),
])
def test_source_of_a_question(record, source):
    assert lrs_vqa.source_of(record) == source


def test_bad_annotations_name_the_question(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": 1, "image": "x.png", "category": "count", "ground_truth": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"question 1 names no source dataset: give it a 'source' field"):
        lrs_vqa.score([{"question_id": 1, "text": "1"}], path)
    path.write_text(json.dumps({"question_id": 1, "image": "STAR/x.png", "category": "count"}) + "\n")
    with pytest.raises(ValueError, match=r"question 1 has no 'ground_truth' \(or 'answer'\) field"):
        lrs_vqa.score([{"question_id": 1, "text": "1"}], path)
    path.write_text(json.dumps({"question_id": 1, "image": "STAR/x.png", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"record 1 has no field 'category'"):
        lrs_vqa.score([{"question_id": 1, "text": "1"}], path)
    with pytest.raises(ValueError, match=r"1 of 10 question\(s\) not answered: 's10'"):
        lrs_vqa.score(answers()[:-1], QUESTIONS)


def test_registered_and_scored_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nltk", None)
    assert TASKS["lrs_vqa"].headline == "oa"
    out = tmp_path / "score.json"
    metrics = score_cli.main(["--task", "lrs_vqa", "--answers", str(FIXTURE / "answers" / "fixture.jsonl"),
                              "--annotations", str(QUESTIONS), "--out", str(out)])
    printed = capsys.readouterr().out
    assert metrics["oa"] == 50.0 and json.loads(out.read_text())["metrics"]["aa"] == approx(metrics["aa"])
    assert "by_source.STAR.aa" in printed and "off: nltk is not installed" in printed
