"""Question answering scores on normalised text (lowercase, no punctuation, no articles, single
spaces): exact match, cover exact match (a gold answer appears as whole words inside the
prediction) and token-level F1; and the score of a response whose answer is its last
``<answer>...</answer>`` (the QA data sources of Search-R1 and verl's search examples)."""

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

ARTICLES = frozenset({"a", "an", "the"})
Golds = str | Sequence[str] | np.ndarray  # one gold answer, or several


def _is_punctuation(char: str) -> bool:
    # ASCII punctuation as in SQuAD's evaluation, plus Unicode punctuation (curly quotes, dashes).
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(s: str) -> str:
    """Lowercase, delete punctuation (so "U.S." -> "us"), drop the articles a/an/the as whole words
    and join the remaining words with single spaces."""
    text = "".join(c for c in s.lower() if not _is_punctuation(c))
    return " ".join(word for word in text.split() if word not in ARTICLES)


def _normalized_golds(golden_answers: Golds) -> list[str]:
    # A gold answer that normalises to nothing (e.g. "The") would match every prediction.
    golds = [golden_answers] if isinstance(golden_answers, str) else golden_answers
    return [g for g in map(normalize_answer, golds) if g]


def exact_match(prediction: str | None, golden_answers: Golds) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == gold for gold in _normalized_golds(golden_answers)))


def cover_exact_match(prediction: str | None, golden_answers: Golds) -> float:
    """1.0 if any normalised gold answer occurs in the normalised prediction on word boundaries:
    "paris" covers "paris france" but "1889" does not cover "18890" and "art" not "cartier"."""
    if prediction is None:
        return 0.0
    padded = f" {normalize_answer(prediction)} "
    return float(any(f" {gold} " in padded for gold in _normalized_golds(golden_answers)))


def f1_score(prediction: str | None, golden_answers: Golds) -> float:
    """Token-level F1 between the normalised prediction and each gold answer, the best of them."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in _normalized_golds(golden_answers):
        gold_tokens = gold.split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


METRICS = {"em": exact_match, "cover_em": cover_exact_match, "f1": f1_score}


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def last_answer(solution_str: str) -> str | None:
    """The content of the response's last complete ``<answer>`` tag, or None."""
    found = _ANSWER.findall(solution_str)
    return found[-1].strip() if found else None


def golden_targets(ground_truth: Any) -> list[str]:
    """Gold answers as QA rows hold them: ``{"target": [...]}`` (Search-R1), a list or one string."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("golden_answers"))
    if isinstance(ground_truth, str):
        return [ground_truth]
    if ground_truth is None:
        return []
    return [str(g) for g in ground_truth]


def compute_score(solution_str: str, ground_truth: Any) -> dict[str, float]:
    """Exact match of the last ``<answer>`` against the gold answers (``score``), with cover-EM and F1."""
    answer, golds = last_answer(solution_str), golden_targets(ground_truth)
    return {
        "score": exact_match(answer, golds),
        "cover_em": cover_exact_match(answer, golds),
        "f1": f1_score(answer, golds),
    }
