"""A critic LLM's tuning data from recorded trajectories (rollout dumps, evaluation trajectories),
labelled by the path judge, and how far a critic's verdicts agree with that judge."""

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence

from zerosearch import prompts
from zerosearch.critic.critics import LLMCritic, Trajectory
from zerosearch.critic.judges import Fact, agreement
from zerosearch.critic.turns import Turn


def judge_verdicts(trajectory: Trajectory) -> list[tuple[bool, str]]:
    return [(useful, "") for useful in trajectory.judged("path")]


def tuning_rows(
    trajectories: Sequence[Trajectory], style: str = "sft", contrast: bool = False, seed: int = 0
) -> list[dict]:
    """``main_sft`` rows (``prompt`` as chat messages, ``response``) for every trajectory that
    searched: its grading request and the verdict lines the path judge gives its searches.
    Repeated trajectories stay, so the rows follow what the critic will be asked.

    With ``contrast``, each such trajectory also comes back twice with the gold answer and path of
    another trajectory: once one whose facts a document of its searches states (when there is one),
    once one whose facts none does, each labelled by the judge again. The same documents then earn
    both verdicts, so a small critic learns to compare the path with the documents instead of
    guessing from the question or the query."""
    rng = random.Random(seed)
    pool = sorted({(r.golden_answers, r.supporting) for r in trajectories})
    rows = []
    for r in trajectories:
        if not r.searches():
            continue
        variants = [r]
        if contrast:
            others = [dataclasses.replace(r, golden_answers=a, supporting=s) for a, s in pool if a != r.golden_answers]
            stated = [v for v in others if any(v.judged("path"))]
            absent = [v for v in others if not any(v.judged("path"))]
            variants += [rng.choice(group) for group in (stated, absent) if group]
        for v in variants:
            searches = [(t.thought(), t.content, t.documents or []) for t in v.searches()]
            messages = prompts.grading_messages(
                v.question, v.golden_answers, searches, v.final_answer, style, v.supporting
            )
            rows.append({"prompt": messages, "response": prompts.format_verdicts(judge_verdicts(v))})
    return rows


def judge_agreement(critic: LLMCritic, trajectories: Sequence[Trajectory]) -> dict[str, float | None]:
    """The critic's verdicts against the path judge's over every search of ``trajectories``
    (``judges.agreement``: agreement, the majority-class baseline, kappa, precision and recall of
    "useless"); a reply that does not parse disagrees on all its searches. Also the share of
    unreadable replies, and the answer judge's agreement with the path judge on the same searches."""
    searched = [r for r in trajectories if r.searches()]
    predicted: list[bool] = []
    reference: list[bool] = []
    answer: list[bool] = []
    unreadable = 0
    for r, verdicts in zip(searched, critic.grade(searched), strict=True):
        labels = r.judged("path")
        reference += labels
        answer += r.judged("answer")
        if verdicts is None:
            unreadable += 1
            predicted += [not label for label in labels]
        else:
            predicted += [useful for useful, _ in verdicts]
    return {
        **agreement(predicted, reference),
        "unreadable_rate": unreadable / max(len(searched), 1),
        "answer_judge_agreement": agreement(answer, reference)["agreement"],
    }


def read_trajectories(
    path: str, questions: Mapping[str, tuple[str, tuple[Fact, ...]]] | None = None
) -> list[Trajectory]:
    """Trajectories from a JSONL of evaluation trajectories or rollout dumps. A dump row names no
    question: it is read off the prompt and looked up in ``questions`` (question -> (answer,
    supporting facts)), which must hold it. Evaluation rows carry their own."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            row = json.loads(line)
            if "question" in row:
                question, answers = row["question"], tuple(row["golden_answers"])
                supporting = tuple(tuple(fact) for fact in row.get("supporting", ()))
            else:
                question = next((q for q in questions or {} if f"Question: {q}\n" in row["prompt"]), None)
                if question is None:
                    raise ValueError(f"{path}, line {number}: the prompt holds none of the questions given")
                answer, supporting = (questions or {})[question]
                answers = (answer,)
            turns = [Turn.from_record(turn) for turn in row["turns"]]
            rows.append(Trajectory(question, answers, turns, row.get("accepted_answer", row.get("answer")), supporting))
    return rows
