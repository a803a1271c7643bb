"""Reading a QA row's question and gold answers, in this project's layout or ZeroSearch's."""

import numpy as np
import pytest

from zerosearch.data.fields import golden_answers_of, row_golden_answers, row_question


@pytest.mark.parametrize(
    "reward_model, expected",
    [
        (
            {"style": "rule", "ground_truth": {"target": np.array(["Paris", "City of Light"], dtype=object)}},
            ["Paris", "City of Light"],
        ),
        ({"ground_truth": {"target": ["Paris"]}}, ["Paris"]),
        ({"ground_truth": ["Paris", "Lutetia"]}, ["Paris", "Lutetia"]),
        ({"ground_truth": "Paris"}, ["Paris"]),
        ("Paris", ["Paris"]),
    ],
)
def test_golden_answers_of(reward_model, expected):
    assert golden_answers_of(reward_model) == expected


@pytest.mark.parametrize(
    "reward_model, key",
    [
        ({}, "ground_truth"),
        ({"ground_truth": None}, "ground_truth"),
        ({"ground_truth": {"answer": "x"}}, "target"),
        ({"ground_truth": 3}, "ground_truth"),
        ({"ground_truth": {"target": []}}, "ground_truth"),
        (None, "ground_truth"),
    ],
)
def test_golden_answers_of_errors(reward_model, key):
    with pytest.raises(ValueError, match=key):
        golden_answers_of(reward_model)


def test_rows_in_zerosearch_layout():
    """ZeroSearch's released data keeps question and golden_answers as top-level columns."""
    columns = {
        "question": np.array(["Who wrote Hamlet?"], dtype=object),
        "golden_answers": np.array([np.array(["Shakespeare", "William Shakespeare"], dtype=object)], dtype=object),
        "extra_info": np.array([{"index": 0}], dtype=object),
    }
    assert row_question(columns, 0) == "Who wrote Hamlet?"
    assert row_golden_answers(columns, 0) == ["Shakespeare", "William Shakespeare"]
    ours = {
        "extra_info": [{"question": " Q? "}],
        "reward_model": [{"ground_truth": {"target": ["A"]}}],
        "golden_answers": [["ignored"]],
    }
    assert row_question(ours, 0) == "Q?" and row_golden_answers(ours, 0) == ["A"]  # reward_model wins


@pytest.mark.parametrize(
    "columns, match",
    [
        ({"golden_answers": [1889]}, "golden_answers must be a string"),
        ({"golden_answers": [[1889]]}, "strings only"),
        ({"golden_answers": [[]]}, "no gold answers"),
        ({"golden_answers": [None]}, "neither reward_model.ground_truth nor"),
        ({"reward_model": [{"style": "rule"}]}, "ground_truth"),
        ({}, "neither reward_model.ground_truth nor"),
    ],
)
def test_row_golden_answers_errors(columns, match):
    with pytest.raises(ValueError, match=match):
        row_golden_answers(columns, 0)
