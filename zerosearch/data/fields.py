"""Where a QA row keeps its question and gold answers, in either layout users bring:

- this project's (and Search-R1's): ``extra_info.question`` and ``reward_model.ground_truth``
  (``{"target": [...]}``, a list or a string);
- ZeroSearch's released dataset: top-level ``question`` and ``golden_answers`` columns.

Multi-hop rows may also carry the facts of their gold reasoning path in ``extra_info.supporting``:
a list of facts, each a list of phrases that one document must all state (``zerosearch.critic.judges``).

The rollout, the reward and evaluation read rows through these functions only.
"""

from collections.abc import Mapping, Sequence

import numpy as np

HOW_TO_FIX = "prepare data with `python -m zerosearch.data.prepare`, or give a 'golden_answers' column"


def golden_answers_of(reward_model) -> list[str]:
    """Gold answers from a ``reward_model`` entry: Search-R1's ``{"ground_truth": {"target": [...]}}``,
    ``{"ground_truth": [...]}`` / ``{"ground_truth": "..."}``, or a plain string."""
    truth = reward_model
    if isinstance(reward_model, Mapping):
        truth = reward_model.get("ground_truth")
        if truth is None:
            raise ValueError(
                f"reward_model has no 'ground_truth' (keys: {sorted(reward_model)}); "
                "write the gold answers as reward_model.ground_truth.target"
            )
        if isinstance(truth, Mapping):
            if truth.get("target") is None:
                raise ValueError(
                    f"reward_model.ground_truth has no 'target' (keys: {sorted(truth)}); "
                    "write the gold answers as reward_model.ground_truth.target"
                )
            truth = truth["target"]
    return answer_list(truth, "reward_model.ground_truth")


def answer_list(value, column: str) -> list[str]:
    """A string or a non-empty list of strings as a list; anything else is refused, naming ``column``."""
    if isinstance(value, str):
        answers = [value]
    elif isinstance(value, np.ndarray | Sequence):
        answers = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
    else:
        raise ValueError(f"{column} must be a string or a list of strings, got {type(value).__name__} {value!r:.100}")
    if not answers:
        raise ValueError(f"{column} lists no gold answers")
    if not all(isinstance(a, str) for a in answers):
        raise ValueError(f"{column} must hold strings only, got {answers!r:.200}; write numbers as text, e.g. '1889'")
    return answers


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def row_golden_answers(columns: Mapping, i: int) -> list[str]:
    """Row ``i``'s gold answers: ``reward_model.ground_truth`` when the row has one, else the
    ``golden_answers`` column. ``columns`` maps column names to per-row values (a batch's
    non-tensor fields or a data frame)."""
    reward_model = columns["reward_model"][i] if "reward_model" in columns else None
    if isinstance(reward_model, Mapping) and _present(reward_model.get("ground_truth")):
        return golden_answers_of(reward_model)
    if "golden_answers" in columns and _present(columns["golden_answers"][i]):
        return answer_list(columns["golden_answers"][i], "golden_answers")
    if isinstance(reward_model, Mapping) and reward_model:
        return golden_answers_of(reward_model)  # names what the reward_model entry lacks
    raise ValueError(f"no gold answers: neither reward_model.ground_truth nor a 'golden_answers' column; {HOW_TO_FIX}")


def row_question(columns: Mapping, i: int) -> str:
    """Row ``i``'s question: ``extra_info.question``, else the ``question`` column; "" when neither."""
    info = columns["extra_info"][i] if "extra_info" in columns else None
    if isinstance(info, Mapping) and isinstance(info.get("question"), str) and info["question"].strip():
        return info["question"].strip()
    if "question" in columns and isinstance(columns["question"][i], str):
        return columns["question"][i].strip()
    return ""


def row_supporting(columns: Mapping, i: int) -> tuple[tuple[str, ...], ...]:
    """Row ``i``'s supporting facts (``extra_info.supporting``), each a tuple of phrases; () when the
    row has none. A fact may be written as one string. Anything else is refused."""
    info = columns["extra_info"][i] if "extra_info" in columns else None
    facts = info.get("supporting") if isinstance(info, Mapping) else None
    if facts is None:
        return ()
    if isinstance(facts, str) or not isinstance(facts, np.ndarray | Sequence):
        raise ValueError(f"extra_info.supporting must be a list of facts, got {facts!r:.200}")
    parsed = []
    for fact in facts:
        phrases = [fact] if isinstance(fact, str) else fact
        if (
            not isinstance(phrases, np.ndarray | Sequence)
            or not all(isinstance(p, str) and p.strip() for p in phrases)
            or len(phrases) == 0
        ):
            raise ValueError(
                f"extra_info.supporting: each fact must be a non-empty list of non-empty strings (phrases one "
                f"document states), got {fact!r:.200}"
            )
        parsed.append(tuple(p.strip() for p in phrases))
    return tuple(parsed)
