"""The VQA answer normalisation: what the VQA / TextVQA evaluation servers compare.

``normalize_answer`` follows the EvalAI answer processor that LLaVA's VQAv2 submission converter and
its TextVQA evaluator apply (itself the official VQA ``processPunctuation`` + ``processDigitArticle``,
preceded by lower-casing and removing ``,`` and ``?``):

- lower-case; ``,`` and ``?`` removed; ``'s`` split off (``dog's`` -> ``dog 's``); newlines and tabs
  become spaces;
- punctuation: each mark of ``;/[]"{}()=+\\_-><@`,?!`` is deleted when it touches a space (or when the
  text has a digit-comma-digit group), otherwise replaced by a space; a period is deleted unless a
  digit follows it (``2.5`` stays, ``dog.`` loses it);
- number words ``none, zero .. ten`` become digits; the articles ``a, an, the`` are dropped;
- contractions written without their apostrophe are restored (``dont`` -> ``don't``);
- words are joined by single spaces.

    >>> normalize_answer("Two")
    '2'
    >>> normalize_answer("A dog.")
    'dog'
"""

from __future__ import annotations

import re

PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The official table maps the apostrophe-less spellings of these forms back to them: every spelling
# with exactly one apostrophe removed ("couldnt've" and "couldn'tve" -> "couldn't've", "dont" ->
# "don't"). Its dead entries (capitalised "Im", "Ive", identities such as "let's") are left out.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've
mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's
something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've
they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's
where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _spellings(form: str) -> list[str]:
    """``form`` with one of its apostrophes removed, for each apostrophe."""
    return [form[:i] + form[i + 1:] for i, char in enumerate(form) if char == "'"]


CONTRACTIONS = {spelling: form for form in _CONTRACTED for spelling in _spellings(form)}
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")


def strip_punctuation(text: str) -> str:
    """Delete or blank out punctuation as the VQA evaluation does (see the module docstring)."""
    glued = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or glued else " ")
    return _PERIOD.sub("", out)


def digits_articles_contractions(text: str) -> str:
    """Lower-cased words with number words as digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The normalised form of a predicted or human answer (see the module docstring)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_articles_contractions(strip_punctuation(text))
