"""A critic LLM's tuning data from recorded trajectories (rollout dumps, evaluation trajectories),
labelled by the rule oracle, and how often a critic's verdicts agree with that oracle."""

import dataclasses
import json
import random
from collections.abc import Sequence

from zerosearch import prompts
from zerosearch.critic.critics import LLMCritic, Trajectory
from zerosearch.critic.turns import Turn, oracle_useful


def oracle_verdicts(trajectory: Trajectory) -> list[tuple[bool, str]]:
    return [(oracle_useful(t.documents or [], trajectory.golden_answers), "") for t in trajectory.searches()]


def tuning_rows(
    trajectories: Sequence[Trajectory], style: str = "sft", contrast: bool = False, seed: int = 0
) -> list[dict]:
    """``main_sft`` rows (``prompt`` as chat messages, ``response``) for every trajectory that
    searched: its grading request and the verdict lines the rule oracle gives its searches.
    Repeated trajectories stay, so the rows follow what the critic will be asked.

    With ``contrast``, each such trajectory also comes back twice with another gold answer drawn
    from the other trajectories' gold answers: once one that a document of its searches states
    (when there is one), once one that none does, each labelled by the oracle again. The same
    documents then earn both verdicts, so a small critic learns to compare the answer with the
    documents instead of guessing from the question or the query."""
    rng = random.Random(seed)
    pool = sorted({a for r in trajectories for a in r.golden_answers})
    rows = []
    for r in trajectories:
        if not r.searches():
            continue
        variants = [r]
        if contrast:
            documents = [d for t in r.searches() for d in t.documents or []]
            stated = [a for a in pool if a not in r.golden_answers and any(oracle_useful([d], [a]) for d in documents)]
            absent = [
                a for a in pool if a not in r.golden_answers and not any(oracle_useful([d], [a]) for d in documents)
            ]
            variants += [dataclasses.replace(r, golden_answers=(rng.choice(c),)) for c in (stated, absent) if c]
        for v in variants:
            searches = [(t.thought(), t.content, t.documents or []) for t in v.searches()]
            messages = prompts.grading_messages(v.question, v.golden_answers, searches, v.final_answer, style)
            rows.append({"prompt": messages, "response": prompts.format_verdicts(oracle_verdicts(v))})
    return rows


def oracle_agreement(critic: LLMCritic, trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Share of search turns whose verdict equals the oracle's; a reply that does not parse
    disagrees on all its turns. Also how many turns, the oracle's share of useful ones (the
    agreement of always answering the majority is max(share, 1 - share)) and the share of
    unreadable replies."""
    searched = [r for r in trajectories if r.searches()]
    matches, turns, useful, unreadable = 0, 0, 0, 0
    for r, verdicts in zip(searched, critic.grade(searched), strict=True):
        labels = [useful for useful, _ in oracle_verdicts(r)]
        turns += len(labels)
        useful += sum(labels)
        if verdicts is None:
            unreadable += 1
            continue
        matches += sum(v == label for (v, _), label in zip(verdicts, labels, strict=True))
    return {
        "agreement": matches / max(turns, 1),
        "turns": turns,
        "oracle_useful_share": useful / max(turns, 1),
        "unreadable_rate": unreadable / max(len(searched), 1),
    }


def read_trajectories(path: str, questions: dict[str, str] | None = None) -> list[Trajectory]:
    """Trajectories from a JSONL of evaluation trajectories or rollout dumps. A dump row names no
    question: it is read off the prompt and looked up in ``questions`` (question -> answer), which
    must hold it."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            row = json.loads(line)
            if "question" in row:
                question, answers = row["question"], tuple(row["golden_answers"])
            else:
                question = next((q for q in questions or {} if f"Question: {q}\n" in row["prompt"]), None)
                if question is None:
                    raise ValueError(f"{path}, line {number}: the prompt holds none of the questions given")
                answers = (questions[question],) if questions else ()
            turns = [Turn.from_record(turn) for turn in row["turns"]]
            rows.append(Trajectory(question, answers, turns, row.get("accepted_answer", row.get("answer"))))
    return rows
