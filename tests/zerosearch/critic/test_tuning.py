"""A critic's tuning data from recorded trajectories, and its agreement with the path judge."""

import json
from collections import Counter

import pytest

from zerosearch import prompts
from zerosearch.critic import Trajectory, Turn
from zerosearch.critic.critics import LLMCritic
from zerosearch.critic.tuning import judge_agreement, read_trajectories, tuning_rows


def search(query, document):
    return Turn(0, 4, f"<search>{query}</search>", "search", query, [document])


PERU = Trajectory(
    "What is the capital of Peru?",
    ("Lima",),
    [search("peru", "Cusco was a capital."), search("peru cities", "Lima is the capital."), Turn(9, 12, "", "answer")],
    "Lima",
)
HAMLET = Trajectory("Who wrote Hamlet?", ("Shakespeare",), [search("hamlet", "Hamlet is by Shakespeare.")], None)
GUESS = Trajectory("Who?", ("x",), [Turn(0, 3, "<answer>y</answer>", "answer", "y")], "y")


def test_rows_are_the_path_judges_verdicts_for_every_trajectory_that_searched():
    rows = tuning_rows([PERU, HAMLET, GUESS, PERU])
    peru = "Search 1: useless\nSearch 2: useful"
    assert [row["response"] for row in rows] == [peru, "Search 1: useful", peru]
    assert rows[0]["prompt"] == prompts.grading_messages(
        PERU.question,
        ["Lima"],
        [("", "peru", ["Cusco was a capital."]), ("", "peru cities", ["Lima is the capital."])],
        "Lima",
        "sft",
    )


class ScriptedLLM:
    """Replies per question; the Hamlet reply does not parse."""

    def __init__(self):
        self.stats = Counter()

    def complete(self, conversations, max_tokens, temperature, accept=None):
        replies = []
        for messages in conversations:
            text = messages[0]["content"]
            replies.append("Search 1: useful\nSearch 2: useful" if "Peru" in text else "no idea")
        return [r if check(r) else None for r, check in zip(replies, accept, strict=True)]


def test_agreement_counts_unreadable_replies_as_disagreeing():
    result = judge_agreement(LLMCritic(ScriptedLLM(), 16, 0.0, 8, style="sft"), [PERU, HAMLET, GUESS])
    # Path judge: Peru useless, useful; Hamlet useful. Peru's reply gets one of two right; Hamlet's
    # does not parse and disagrees.
    assert result["agreement"] == pytest.approx(1 / 3) and result["turns"] == 3
    assert result["majority_baseline"] == pytest.approx(2 / 3) and result["unreadable_rate"] == 0.5
    assert result["useless_recall"] == 0.0 and result["answer_judge_agreement"] == 1.0


def test_trajectories_read_from_evaluation_files_and_rollout_dumps(tmp_path):
    turns = [turn.record() for turn in PERU.turns]
    evaluation = tmp_path / "trajectories.jsonl"
    evaluation.write_text(
        json.dumps({"question": PERU.question, "golden_answers": ["Lima"], "turns": turns, "answer": "Lima"}) + "\n"
    )
    assert read_trajectories(str(evaluation)) == [PERU]
    dump = tmp_path / "1.jsonl"
    row = {"prompt": f"user\nQuestion: {PERU.question}\nassistant", "turns": turns, "accepted_answer": "Lima"}
    dump.write_text(json.dumps(row) + "\n")
    assert read_trajectories(str(dump), {PERU.question: ("Lima", ()), "Who?": ("x", ())}) == [PERU]
    with pytest.raises(ValueError, match=r"1.jsonl, line 1: the prompt holds none"):
        read_trajectories(str(dump), {"Who?": ("x", ())})
    path = (("Peru", "Lima"),)
    evaluation.write_text(
        json.dumps({"question": "Q", "golden_answers": ["Lima"], "supporting": [["Peru", "Lima"]], "turns": turns})
        + "\n"
    )
    assert read_trajectories(str(evaluation))[0].supporting == path
    assert read_trajectories(str(dump), {PERU.question: ("Lima", path)})[0].supporting == path


def test_contrast_adds_one_stated_and_one_absent_answer_per_trajectory():
    moon = Trajectory("Moon landing?", ("1969",), [search("moon", "Apollo 11 landed in 1969, not in Lima.")], "1969")
    rows = tuning_rows([PERU, HAMLET, moon, GUESS], contrast=True, seed=3)
    got = [(row["prompt"][0]["content"].split("\n")[:2], row["response"]) for row in rows]
    answers = {"Lima", "Shakespeare", "1969", "x"}  # every trajectory's gold answers, GUESS's too
    assert [(q, r) for (q, _), r in got] == [
        ("Question: What is the capital of Peru?", "Search 1: useless\nSearch 2: useful"),  # as it was
        ("Question: What is the capital of Peru?", "Search 1: useless\nSearch 2: useless"),  # no other answer stated
        ("Question: Who wrote Hamlet?", "Search 1: useful"),
        ("Question: Who wrote Hamlet?", "Search 1: useless"),
        ("Question: Moon landing?", "Search 1: useful"),
        ("Question: Moon landing?", "Search 1: useful"),  # Lima: stated by its document
        ("Question: Moon landing?", "Search 1: useless"),
    ]
    assert got[5][0][1] == "Answer: Lima"
    absent = [answer.removeprefix("Answer: ") for (_, answer), _ in (got[1], got[3], got[6])]
    for drawn, others in zip(
        absent, (answers - {"Lima"}, answers - {"Shakespeare"}, {"Shakespeare", "x"}), strict=True
    ):
        assert drawn in others  # another trajectory's answer that the documents do not state
    assert rows == tuning_rows([PERU, HAMLET, moon, GUESS], contrast=True, seed=3)  # seeded
