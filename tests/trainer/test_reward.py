"""The engine's rule-based reward manager: a user's compute_score on each response's text."""

import numpy as np
import pytest
import torch

from verl.config import PPOConfig
from verl.protocol import DataProto
from verl.trainer.reward import RuleRewardManager, last_valid_positions
from verl.utils.tiny_model import build_tokenizer

SCORE = """
def compute_score(data_source, solution_str, ground_truth, extra_info):
    hit = float(ground_truth in solution_str)
    return {"score": hit, "length": len(solution_str), "source": data_source + str(extra_info["index"])}
"""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


def test_last_valid_positions():
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert last_valid_positions(mask).tolist() == [3, 0, 0]


def test_scores_land_on_the_last_sampled_token_with_the_functions_extras(tmp_path, tokenizer):
    (tmp_path / "score.py").write_text(SCORE)
    config = PPOConfig()
    config.custom_reward_function.path = str(tmp_path / "score.py")
    texts = ["it is Paris", "no idea"]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, ids)) + 2
    responses = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    batch = DataProto.from_dict(
        tensors={
            "prompts": torch.zeros(2, 2, dtype=torch.long),
            "responses": responses,
            "response_mask": mask,
            "attention_mask": torch.cat([torch.ones(2, 2, dtype=torch.long), mask], dim=1),
        },
        non_tensors={
            "data_source": ["nq", "nq"],
            "reward_model": [{"ground_truth": "Paris"}] * 2,
            "extra_info": [{"index": 0}, {"index": 1}],
        },
    )
    scores, extra = RuleRewardManager(config, tokenizer)(batch)
    assert scores[0, len(ids[0]) - 1] == 1.0 and scores.sum() == 1.0
    np.testing.assert_array_equal(extra["score"], [1.0, 0.0])
    assert extra["length"].tolist() == [len(t) for t in texts] and extra["source"].tolist() == ["nq0", "nq1"]


def test_without_a_reward_function_each_row_is_scored_by_its_data_source(tokenizer):
    texts = [
        "Natalia sold 48 + 24 = 72 clips.\n#### 72",
        "so 3 + 4 = 7\n#### 8",
        "The area is $\\boxed{\\dfrac{1}{2}}$.",
        "<answer>the Eiffel Tower</answer>",
        "no answer given",
    ]
    sources = ["openai/gsm8k", "openai/gsm8k", "lighteval/MATH", "searchR1_nq", "hotpotqa"]
    truths = ["72", "7", "\\frac12", {"target": ["Eiffel Tower", "la tour Eiffel"]}, {"target": ["Paris"]}]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, ids))
    responses = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    batch = DataProto.from_dict(
        tensors={
            "prompts": torch.zeros(len(ids), 1, dtype=torch.long),
            "responses": responses,
            "response_mask": mask,
            "attention_mask": torch.cat([torch.ones(len(ids), 1, dtype=torch.long), mask], dim=1),
        },
        non_tensors={
            "data_source": sources,
            "reward_model": [{"ground_truth": t} for t in truths],
            "extra_info": [{}] * len(ids),
        },
    )
    _, extra = RuleRewardManager(PPOConfig(), tokenizer)(batch)
    np.testing.assert_array_equal(extra["score"], [1.0, 0.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize(
    "source, response, truth, score",
    [
        ("openai/gsm8k", "#### 1,234", "1234", 1.0),
        ("openai/gsm8k", "#### 72.0", "She sold 72.\n#### 72", 1.0),
        ("openai/gsm8k", "the answer is 72", "72", 0.0),  # the #### format is part of the task
        ("openai/gsm8k", "#### 7 then #### 9", "9", 1.0),  # the last one counts
        ("openai/gsm8k", "#### 3.0", "3.0", 1.0),
        ("openai/gsm8k", "#### -$5.00", "-5", 1.0),  # numbers compare as numbers
        ("openai/gsm8k", "#### 5", "50", 0.0),
        ("lighteval/MATH", "\\boxed{\\frac{a}{b^{2}}}", "\\boxed{\\frac{a}{b^{2}}}", 1.0),
        ("lighteval/MATH", "\\boxed{x = 3}", "3", 1.0),
        ("lighteval/MATH", "\\boxed{90^\\circ}", "90", 1.0),
        ("HuggingFaceH4/MATH-500", "\\boxed{.5}", "0.5", 1.0),
        ("HuggingFaceH4/MATH-500", "\\boxed{\\sqrt2}", "\\sqrt{3}", 0.0),
        ("HuggingFaceH4/MATH-500", "\\boxed{\\leftarrow}", "\\rightarrow", 0.0),  # not sizing commands
        ("HuggingFaceH4/MATH-500", "\\boxed{\\left(1,2\\right)}", "(1,2)", 1.0),
        ("DigitalLearningGmbH/MATH-lighteval", "no box: 5", "5", 0.0),
        ("musique", "<answer>U.S.</answer>", {"target": ["us"]}, 1.0),
        ("bamboogle", "<answer>Paris, France</answer>", ["Paris"], 0.0),  # exact match, not cover
    ],
)
def test_built_in_scores(source, response, truth, score):
    from verl.utils.reward_score import default_compute_score

    result = default_compute_score(source, response, truth)
    assert (result["score"] if isinstance(result, dict) else result) == score


def test_a_data_source_without_a_score_is_named(tokenizer):
    from verl.utils.reward_score import default_compute_score

    with pytest.raises(ValueError, match="data_source='digits' has no built-in score.*custom_reward_function.path"):
        default_compute_score("digits", "1", "1")
