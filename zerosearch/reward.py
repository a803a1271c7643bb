"""Outcome reward of a search trajectory: the final ``<answer>`` scored against the gold answers.

Three metrics, all on normalised text (lowercase, no punctuation, no articles, single spaces):
exact match, cover exact match (a gold answer appears as whole words inside the prediction) and
token-level F1. ``agent.reward_metric`` picks the one that trains; all are logged. A response
without a complete answer tag scores 0 on every metric.
"""

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from verl.protocol import DataProto
from verl.trainer.reward import last_valid_positions

ARTICLES = frozenset({"a", "an", "the"})
# An answer tag may not contain another opening tag, so "<answer> <answer>x</answer>" yields "x".
ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
# For texts that include observations: an <information> block, even one left unclosed (cut at a
# length limit), hides everything in it, so text a search engine wrote never counts as an answer.
# The reward manager scores the policy's own tokens only.
INFORMATION_RE = re.compile(r"<information>.*?(?:</information>|\Z)", re.DOTALL)


def _is_punctuation(char: str) -> bool:
    # ASCII punctuation as in SQuAD's evaluation, plus Unicode punctuation (curly quotes, dashes).
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(s: str) -> str:
    """Lowercase, delete punctuation (so "U.S." -> "us"), drop the articles a/an/the as whole words
    and join the remaining words with single spaces."""
    text = "".join(c for c in s.lower() if not _is_punctuation(c))
    return " ".join(word for word in text.split() if word not in ARTICLES)


def extract_answer(response_text: str) -> str | None:
    """Content of the last complete ``<answer> … </answer>`` outside ``<information>`` blocks,
    stripped; ``None`` when there is none. Takes the response only, never the prompt, so an
    example answer in the instruction cannot count."""
    text = INFORMATION_RE.sub(" ", response_text)
    matches = ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def _gold_list(golden_answers) -> list[str]:
    if isinstance(golden_answers, str):
        return [golden_answers]
    if isinstance(golden_answers, np.ndarray):
        golden_answers = golden_answers.ravel().tolist()
    if isinstance(golden_answers, Sequence):
        return [str(g) for g in golden_answers]
    raise TypeError(f"golden answers must be a str, list, tuple or numpy array, got {type(golden_answers).__name__}")


def _normalized_golds(golden_answers) -> list[str]:
    # A gold answer that normalises to nothing (e.g. "The") would match every prediction.
    return [g for g in map(normalize_answer, _gold_list(golden_answers)) if g]


def exact_match(prediction: str | None, golden_answers) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == gold for gold in _normalized_golds(golden_answers)))


def cover_exact_match(prediction: str | None, golden_answers) -> float:
    """1.0 if any normalised gold answer occurs in the normalised prediction on word boundaries:
    "paris" covers "paris france" but "1889" does not cover "18890" and "art" not "cartier"."""
    if prediction is None:
        return 0.0
    padded = f" {normalize_answer(prediction)} "
    return float(any(f" {gold} " in padded for gold in _normalized_golds(golden_answers)))


def f1_score(prediction: str | None, golden_answers) -> float:
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


def score_response(response_text: str, golden_answers) -> dict[str, float]:
    """All metrics of one response: ``em``, ``cover_em``, ``f1`` and ``answered`` (1.0/0.0)."""
    answer = extract_answer(response_text)
    scores = {name: metric(answer, golden_answers) for name, metric in METRICS.items()}
    scores["answered"] = float(answer is not None)
    return scores


def golden_answers_of(reward_model) -> list[str]:
    """Gold answers of a dataset row from its ``reward_model`` entry: Search-R1's
    ``{"ground_truth": {"target": [...]}}``, ``{"ground_truth": [...]}`` / ``{"ground_truth": "..."}``,
    or a plain string."""
    truth = reward_model
    if isinstance(reward_model, Mapping):
        truth = reward_model.get("ground_truth")
        if truth is None:
            raise ValueError(f"reward_model has no 'ground_truth' (keys: {sorted(reward_model)}); "
                             "write the gold answers as reward_model.ground_truth.target")
        if isinstance(truth, Mapping):
            if truth.get("target") is None:
                raise ValueError(f"reward_model.ground_truth has no 'target' (keys: {sorted(truth)}); "
                                 "write the gold answers as reward_model.ground_truth.target")
            truth = truth["target"]
    try:
        answers = _gold_list(truth)
    except TypeError as e:
        raise ValueError(f"reward_model.ground_truth is unreadable: {e}") from e
    if not answers:
        raise ValueError("reward_model.ground_truth lists no gold answers")
    return answers


class QARewardManager:
    """Engine reward plug-in (``reward_model.reward_manager=zerosearch.reward:QARewardManager``):
    scores each row's final answer and puts the ``agent.reward_metric`` score on the row's last
    sampled token."""

    def __init__(self, config, tokenizer):
        metric = config.agent.reward_metric
        if metric not in METRICS:
            raise ValueError(f"agent.reward_metric={metric!r} is not one of {sorted(METRICS)}")
        self.metric = metric
        self.tokenizer = tokenizer

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Batch: ``prompts`` [B, P], ``responses`` [B, R], ``attention_mask`` [B, P+R],
        ``response_mask`` [B, R] (0 on observations). Returns scores [B, R] float32 and per-row
        float arrays [B] ``score``, ``em``, ``cover_em``, ``f1``, ``answered``."""
        responses = data.batch["responses"]
        response_mask = data.batch["response_mask"]
        # Only the policy's own tokens can hold its answer: documents and notices (mask 0) may
        # show answer tags too.
        texts = self.tokenizer.batch_decode(
            [row[keep].tolist() for row, keep in zip(responses, response_mask.bool())], skip_special_tokens=True
        )
        scores = torch.zeros(responses.shape, dtype=torch.float32)
        last = last_valid_positions(response_mask)
        rows = []
        for i, text in enumerate(texts):
            try:
                golds = golden_answers_of(data.non_tensor_batch["reward_model"][i])
            except ValueError as e:
                source = data.non_tensor_batch["data_source"][i] if "data_source" in data.non_tensor_batch else "?"
                raise ValueError(f"QARewardManager: batch row {i} (data_source={source}): {e}") from e
            row = score_response(text, golds)
            row["score"] = row[self.metric]
            rows.append(row)
            if response_mask[i].any():
                scores[i, last[i]] = row["score"]
        extra = {key: np.array([row[key] for row in rows], dtype=np.float64)
                 for key in ("score", "em", "cover_em", "f1", "answered")}
        return scores, extra
