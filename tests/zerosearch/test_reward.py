import os

# huggingface_hub reads this once, when transformers is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.utils.reward_score.qa import cover_exact_match, exact_match, f1_score, normalize_answer
from verl.utils.tiny_model import build_tokenizer
from zerosearch.config import ZeroSearchConfig
from zerosearch.reward import QARewardManager, score_answer

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


# ------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    "gold", ["Paris", ["Lyon", "paris"], ("Lyon", "Paris"), np.array(["Lyon", "Paris."], dtype=object)]
)
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


def test_score_answer_keys():
    assert score_answer("Nile river", "Nile") == {
        "em": 0.0,
        "cover_em": 1.0,
        "f1": pytest.approx(2 / 3),
        "answered": 1.0,
    }
    assert score_answer(None, "Nile") == {"em": 0.0, "cover_em": 0.0, "f1": 0.0, "answered": 0.0}
    assert score_answer("", ["Paris"]) == {"em": 0.0, "cover_em": 0.0, "f1": 0.0, "answered": 1.0}


# ------------------------------------------------------------------------------------- manager


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


def make_config(metric):
    config = OmegaConf.structured(ZeroSearchConfig())
    config.agent.reward_metric = metric
    return config


def make_batch(tokenizer, rows, response_width=32):
    """``rows``: (sampled segment lengths with observations between them as negative lengths,
    accepted answer, reward_model). Only the masks matter to the manager: it never reads text."""
    B = len(rows)
    response_mask = torch.zeros(B, response_width, dtype=torch.long)
    for i, (segments, _, _) in enumerate(rows):
        pos = 0
        for length in segments:
            response_mask[i, pos : pos + abs(length)] = int(length > 0)
            pos += abs(length)
    answers = np.empty(B, dtype=object)
    answers[:] = [a for _, a, _ in rows]
    return DataProto.from_dict(
        tensors={"responses": torch.zeros(B, response_width, dtype=torch.long), "response_mask": response_mask},
        non_tensors={"reward_model": [r for _, _, r in rows], "data_source": ["nq"] * B, "accepted_answer": answers},
    )


def gold(*answers):
    return {"ground_truth": {"target": np.array(answers, dtype=object)}}


@pytest.fixture
def batch(tokenizer):
    return make_batch(
        tokenizer,
        [
            ([5, -10, 6], "Nile river", gold("Nile")),  # search, observation, a partly right answer
            ([5, -10], None, gold("1889")),  # turns ran out: no answer, the score sits on the last sampled token
            ([8], "1889", {"ground_truth": ["1889", "in 1889"]}),  # exact answer, gold given as a plain list
        ],
    )


def test_manager_places_chosen_metric_on_last_sampled_token(tokenizer, batch):
    scores, extra = QARewardManager(make_config("f1"), tokenizer)(batch)
    mask = batch.batch["response_mask"]
    assert scores.shape == mask.shape and scores.dtype == torch.float32
    expected = [2 / 3, 0.0, 1.0]
    for i, value in enumerate(expected):
        last = int(mask[i].nonzero().max())
        assert scores[i, last].item() == pytest.approx(value)
        others = torch.cat([scores[i, :last], scores[i, last + 1 :]])
        assert torch.all(others == 0)
    assert int(mask[0].nonzero().max()) == 20 and int(mask[1].nonzero().max()) == 4  # before the observation

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
    data = make_batch(tokenizer, [([3], "x", gold("x")), ([3], "x", {"style": "rule"})])
    with pytest.raises(ValueError, match="row 1.*ground_truth"):
        QARewardManager(make_config("em"), tokenizer)(data)


def test_manager_needs_the_accepted_answers(tokenizer, batch):
    batch.non_tensor_batch.pop("accepted_answer")
    with pytest.raises(ValueError, match="accepted_answer.*SearchGenerationManager"):
        QARewardManager(make_config("em"), tokenizer)(batch)
