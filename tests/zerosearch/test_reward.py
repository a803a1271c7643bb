import os

# huggingface_hub reads this once, when transformers is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.utils.tiny_model import build_tokenizer
from zerosearch.config import ZeroSearchConfig
from zerosearch.prompts import INVALID_ACTION_NOTICE
from zerosearch.reward import (
    QARewardManager,
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_score,
    golden_answers_of,
    normalize_answer,
    score_response,
)

# ------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("a  cat\tand\nAN owl", "cat and owl"),
        ("Theatre, Anchor and Ant!", "theatre anchor and ant"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("  Neil   Armstrong  ", "neil armstrong"),
        ("“Rock’n’roll” — yes", "rocknroll yes"),  # Unicode punctuation too
        ("8,849 m.", "8849 m"),
        ("The", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# ---------------------------------------------------------------------------------- extraction


def test_last_answer_tag_wins():
    text = "<answer>Paris</answer> wait, no. <answer> Lyon \n</answer>"
    assert extract_answer(text) == "Lyon"


def test_no_complete_answer_is_none():
    assert extract_answer("<think>hmm</think><search>x</search>") is None
    assert extract_answer("<answer>Paris") is None
    assert extract_answer("") is None


def test_empty_answer_counts_as_answered():
    assert extract_answer("<answer>  </answer>") == ""
    assert score_response("<answer></answer>", ["Paris"]) == {"em": 0.0, "cover_em": 0.0, "f1": 0.0, "answered": 1.0}


def test_nested_opening_tag_keeps_innermost():
    assert extract_answer("<answer> oops <answer>1889</answer>") == "1889"


def test_answer_only_inside_information_is_ignored():
    text = ("<search>capital of France</search>"
            "<information>Doc 1: quiz key <answer>Paris</answer></information>")
    assert extract_answer(text) is None
    assert score_response(text, ["Paris"])["answered"] == 0.0


def test_answer_after_information_is_used():
    text = ("<information>Doc 1: <answer>Lyon</answer></information>"
            "<think>so</think><answer>Paris</answer>")
    assert extract_answer(text) == "Paris"


def test_unclosed_information_hides_the_rest():
    text = "<answer>Lyon</answer><information>Doc 1 cut short <answer>Paris</answer>"
    assert extract_answer(text) == "Lyon"


# ------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("gold", ["Paris", ["Lyon", "paris"], ("Lyon", "Paris"), np.array(["Lyon", "Paris."], dtype=object)])
def test_gold_answer_types(gold):
    assert exact_match("the paris", gold) == 1.0
    assert cover_exact_match("It is Paris", gold) == 1.0
    assert f1_score("Paris", gold) == 1.0


def test_none_prediction_scores_zero():
    for metric in (exact_match, cover_exact_match, f1_score):
        assert metric(None, ["Paris"]) == 0.0
        assert metric(None, np.array(["Paris"])) == 0.0


def test_exact_match_is_strict():
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("PARIS!", ["Paris"]) == 1.0


def test_cover_exact_match_uses_word_boundaries():
    assert cover_exact_match("Paris France", ["paris"]) == 1.0
    assert cover_exact_match("in the year 1889", ["1889"]) == 1.0
    assert cover_exact_match("18890", ["1889"]) == 0.0
    assert cover_exact_match("Cartier", ["art"]) == 0.0
    assert cover_exact_match("Jane Austen wrote it", ["Jane Austen"]) == 1.0
    assert cover_exact_match("Austen Jane", ["Jane Austen"]) == 0.0


def test_gold_that_normalises_to_nothing_never_matches():
    assert exact_match("the", ["The"]) == 0.0
    assert cover_exact_match("anything", ["a"]) == 0.0


def test_f1_partial_overlap():
    # prediction "the river nile in egypt" -> [river, nile, in, egypt] (4 tokens)
    # gold "Nile River" -> [nile, river] (2 tokens); common = 2
    # precision = 2/4 = 0.5, recall = 2/2 = 1.0, F1 = 2*0.5*1/(0.5+1) = 2/3
    assert f1_score("the river Nile in Egypt", ["Nile River"]) == pytest.approx(2 / 3)
    # gold "Nile" -> common 1: precision 1/4, recall 1, F1 = 2*0.25/1.25 = 0.4; the best gold wins
    assert f1_score("the river Nile in Egypt", ["Nile"]) == pytest.approx(0.4)
    assert f1_score("the river Nile in Egypt", ["Nile", "Nile River"]) == pytest.approx(2 / 3)
    # repeated tokens count once each: pred [nile, nile], gold [nile] -> common 1, P 1/2, R 1, F1 2/3
    assert f1_score("Nile Nile", ["Nile"]) == pytest.approx(2 / 3)
    assert f1_score("Amazon", ["Nile"]) == 0.0


def test_score_response_keys():
    assert score_response("<answer>Nile river</answer>", "Nile") == {
        "em": 0.0, "cover_em": 1.0, "f1": pytest.approx(2 / 3), "answered": 1.0,
    }
    assert score_response("I give up", "Nile") == {"em": 0.0, "cover_em": 0.0, "f1": 0.0, "answered": 0.0}


# -------------------------------------------------------------------------------- gold reading


@pytest.mark.parametrize(
    "reward_model, expected",
    [
        ({"style": "rule", "ground_truth": {"target": np.array(["Paris", "City of Light"], dtype=object)}},
         ["Paris", "City of Light"]),
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
    [({}, "ground_truth"), ({"ground_truth": None}, "ground_truth"), ({"ground_truth": {"answer": "x"}}, "target"),
     ({"ground_truth": 3}, "ground_truth"), ({"ground_truth": {"target": []}}, "ground_truth"), (None, "ground_truth")],
)
def test_golden_answers_of_errors(reward_model, key):
    with pytest.raises(ValueError, match=key):
        golden_answers_of(reward_model)


# ------------------------------------------------------------------------------------- manager


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


def make_config(metric):
    config = OmegaConf.structured(ZeroSearchConfig())
    config.agent.reward_metric = metric
    return config


def make_batch(tokenizer, rows, prompt_width=6, response_width=64):
    """``rows``: (prompt text, [(segment text, sampled?)], reward_model). Prompts are left-padded
    and responses right-padded; observation segments get response_mask 0."""
    pad = tokenizer.pad_token_id
    B = len(rows)
    prompts = torch.full((B, prompt_width), pad)
    responses = torch.full((B, response_width), pad)
    attention = torch.zeros(B, prompt_width + response_width, dtype=torch.long)
    response_mask = torch.zeros(B, response_width, dtype=torch.long)
    for i, (prompt, segments, _) in enumerate(rows):
        ids = tokenizer(prompt)["input_ids"][-prompt_width:]
        prompts[i, prompt_width - len(ids):] = torch.tensor(ids)
        attention[i, prompt_width - len(ids):prompt_width] = 1
        pos = 0
        for text, sampled in segments:
            ids = tokenizer(text)["input_ids"] if isinstance(text, str) else text
            assert pos + len(ids) <= response_width, "test row too long"
            responses[i, pos:pos + len(ids)] = torch.tensor(ids)
            response_mask[i, pos:pos + len(ids)] = int(sampled)
            pos += len(ids)
        attention[i, prompt_width:prompt_width + pos] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention,
                 "response_mask": response_mask},
        non_tensors={"reward_model": [r for _, _, r in rows], "data_source": ["nq"] * B},
    )


def gold(*answers):
    return {"ground_truth": {"target": np.array(answers, dtype=object)}}


@pytest.fixture
def batch(tokenizer):
    eos = [tokenizer.eos_token_id]
    return make_batch(tokenizer, [
        # 0: search, observation, then a partly right answer ending in eos (a special token)
        ("Question: <answer>Lyon</answer>", [
            ("<search>Nile</search>", True),
            ("<information>Doc 1: <answer>Nile</answer></information>", False),
            ("<answer>Nile river</answer>", True), (eos, True)], gold("Nile")),
        # 1: ends on an observation (turns ran out): the score goes on the last sampled token
        ("Question:", [
            ("<search>Eiffel</search>", True),
            ("<information>Doc 1: <answer>1889</answer></information>", False)], gold("1889")),
        # 2: exact answer, gold given as a plain list
        ("Question:", [("<think>ok</think><answer>1889</answer>", True)], {"ground_truth": ["1889", "in 1889"]}),
    ])


def test_manager_places_chosen_metric_on_last_sampled_token(tokenizer, batch):
    scores, extra = QARewardManager(make_config("f1"), tokenizer)(batch)
    mask = batch.batch["response_mask"]
    assert scores.shape == mask.shape and scores.dtype == torch.float32
    expected = [2 / 3, 0.0, 1.0]
    for i, value in enumerate(expected):
        last = int(mask[i].nonzero().max())
        assert scores[i, last].item() == pytest.approx(value)
        others = torch.cat([scores[i, :last], scores[i, last + 1:]])
        assert torch.all(others == 0)
    # row 1's last sampled token is the end of "</search>", before the observation
    search_len = len(tokenizer("<search>Eiffel</search>")["input_ids"])
    assert int(mask[1].nonzero().max()) == search_len - 1

    np.testing.assert_allclose(extra["score"], expected)
    np.testing.assert_allclose(extra["em"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(extra["cover_em"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(extra["f1"], expected)
    np.testing.assert_allclose(extra["answered"], [1.0, 0.0, 1.0])
    assert all(v.dtype.kind == "f" and v.shape == (3,) for v in extra.values())


@pytest.mark.parametrize("metric, expected", [("em", [0.0, 0.0, 1.0]), ("cover_em", [1.0, 0.0, 1.0])])
def test_manager_metric_choice(tokenizer, batch, metric, expected):
    scores, extra = QARewardManager(make_config(metric), tokenizer)(batch)
    np.testing.assert_allclose(scores.sum(dim=1).numpy(), expected)
    np.testing.assert_allclose(extra["score"], expected)
    np.testing.assert_allclose(extra[metric], expected)


def test_manager_rejects_unknown_metric(tokenizer):
    with pytest.raises(ValueError, match="agent.reward_metric"):
        QARewardManager(make_config("bleu"), tokenizer)


def test_manager_names_the_row_with_bad_gold(tokenizer):
    data = make_batch(tokenizer, [("Q:", [("<answer>x</answer>", True)], gold("x")),
                                  ("Q:", [("<answer>x</answer>", True)], {"style": "rule"})])
    with pytest.raises(ValueError, match="row 1.*ground_truth"):
        QARewardManager(make_config("em"), tokenizer)(data)


def test_manager_reads_answers_from_sampled_tokens_only(tokenizer):
    """The invalid-action notice (an observation, mask 0) shows the answer tags; it must not count."""
    assert "<answer>" in INVALID_ACTION_NOTICE  # otherwise this test guards nothing
    batch = make_batch(tokenizer, [
        ("Question:", [("I think it is Paris", True), (INVALID_ACTION_NOTICE, False)], gold("Paris")),
        ("Question:", [("Paris", True), (INVALID_ACTION_NOTICE, False), ("<answer>Paris</answer>", True)], gold("Paris")),
    ], response_width=96)
    _, extra = QARewardManager(make_config("em"), tokenizer)(batch)
    np.testing.assert_allclose(extra["answered"], [0.0, 1.0])
    np.testing.assert_allclose(extra["em"], [0.0, 1.0])
