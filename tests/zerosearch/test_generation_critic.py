"""The multi-turn manager with the critic LLM: turn rewards from the retrospective critic and
critiques from the interactive one, against a scripted policy and a fake search backend."""

import pytest
import torch

from tests.zerosearch.test_generation import make_batch, make_config, make_manager
from verl.protocol import RolloutSettings
from verl.trainer.ray_trainer import initial_rewards, turn_rewards
from zerosearch import prompts
from zerosearch.critic.critics import RuleCritic

SCRIPTS = {
    # documents quote the query (FakeBackend): the first search holds the gold answer, the second not
    "Who wrote Hamlet?": [
        "<think>who</think><search> William Shakespeare </search>",
        "<search> hamlet </search>",
        "<answer> Shakespeare </answer>",
    ],
    "Capital of France?": ["<answer> Paris </answer>"],
}
ANSWERS = ["William Shakespeare", "Paris"]


def critic_config(**critictor):
    config = make_config(max_turns=3)
    config.critictor.backend = "rule"
    for key, value in critictor.items():
        section, _, name = key.rpartition("__")
        setattr(getattr(config.critictor, section) if section else config.critictor, name, value)
    return config


def sampled_turns(out, row):
    """The token spans [start, end) of each turn the policy sampled, from the response mask."""
    mask = out.batch["response_mask"][row].tolist() + [0]
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_retrospective_grades_become_turn_rewards(tokenizer, monkeypatch):
    config = critic_config(retrospective__enable=True)
    manager, _ = make_manager(config, tokenizer, SCRIPTS, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))

    turns = turn_rewards(out)
    assert turns is not None
    spans = sampled_turns(out, 0)
    assert len(spans) == 3
    expected_ids = torch.full_like(turns.turn_ids[0], -1)
    expected_scores = torch.zeros_like(turns.scores[0])
    for k, (start, end) in enumerate(spans):
        expected_ids[start:end] = k
    expected_scores[spans[0][1] - 1], expected_scores[spans[1][1] - 1] = 0.1, -0.1  # useful, useless
    assert torch.equal(turns.turn_ids[0], expected_ids)  # -1 on observations and padding
    assert torch.allclose(turns.scores[0], expected_scores)
    assert torch.equal(turns.graded[0].nonzero().flatten(), torch.tensor([spans[0][1] - 1, spans[1][1] - 1]))
    assert turns.graded[1].sum() == 0 and turns.scores[1].abs().sum() == 0  # answered without searching
    records = out.non_tensor_batch["turns"][0]
    assert [(r["kind"], r["content"], r["verdict"]) for r in records] == [
        ("search", "William Shakespeare", True),
        ("search", "hamlet", False),
        ("answer", "Shakespeare", None),
    ]
    assert records[0]["reason"] and "dump_keys" in out.meta_info
    metrics = out.meta_info["metrics"]
    assert metrics["critictor/useful_rate"] == 0.5 and metrics["critictor/graded_rate"] == 1.0
    assert metrics["critictor/turn_reward_mean"] == pytest.approx(0.0)
    assert metrics["critictor/agreement"] == 1.0 and metrics["critictor/kappa"] == 1.0  # the path judge itself
    assert metrics["critictor/majority_baseline"] == 0.5 and metrics["critictor/failures"] == 0
    # the outcome stays on the last token: the trainer adds the turn rewards to the reward's scores
    out.batch["token_level_scores"] = torch.zeros_like(turns.scores)
    initial_rewards(out)
    assert torch.equal(out.batch["token_level_rewards"], turns.scores)


def test_useless_searches_cost_nothing_when_not_penalised_and_validation_is_ungraded(tokenizer, monkeypatch):
    config = critic_config(retrospective__enable=True, retrospective__penalize_useless=False)
    manager, _ = make_manager(config, tokenizer, SCRIPTS, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))
    assert sorted(out.batch["turn_scores"][0][out.batch["turn_graded"][0].bool()].tolist()) == pytest.approx([0.0, 0.1])

    batch = make_batch(tokenizer, list(SCRIPTS), ANSWERS)
    batch.meta_info["rollout"] = RolloutSettings(validate=True, step=3, total_steps=10)
    out = manager.generate_sequences(batch)
    assert turn_rewards(out) is None and not any(k.startswith("critictor/") for k in out.meta_info["metrics"])


def test_turn_rewards_are_normalised_over_the_prompts_group(tokenizer, monkeypatch):
    scripts = {**SCRIPTS, "Capital of France?": ["<search> Paris </search>", "<answer> Paris </answer>"]}
    config = critic_config(retrospective__enable=True, turn_reward_norm="group_mean")
    manager, _ = make_manager(config, tokenizer, scripts, monkeypatch)

    def graded_scores(uids):
        batch = make_batch(tokenizer, list(scripts), ANSWERS)
        batch.non_tensor_batch["uid"][:] = uids
        out = manager.generate_sequences(batch)
        scores, graded = out.batch["turn_scores"], out.batch["turn_graded"].bool()
        return [row[mask].tolist() for row, mask in zip(scores, graded, strict=True)]

    # one group of useful, useless, useful (mean 0.1/3); then each row alone
    assert graded_scores(["g", "g"]) == [pytest.approx([0.2 / 3, -0.4 / 3]), pytest.approx([0.2 / 3])]
    assert graded_scores(["g", "h"]) == [pytest.approx([0.1, -0.1]), [0.0]]


def observations(out, row):
    span = out.batch["attention_mask"][row, out.batch["prompts"].shape[1] :].bool()
    ids, mask = out.batch["responses"][row][span].tolist(), out.batch["response_mask"][row][span].tolist()
    return ids, mask


@pytest.mark.parametrize("vague", [0.0, 1.0])
def test_critiques_are_observations_with_mask_zero(tokenizer, monkeypatch, vague):
    config = critic_config(
        interactive__enable=True,
        interactive__privileged=True,
        interactive__vague_start=vague,
        interactive__vague_end=vague,
    )
    manager, _ = make_manager(config, tokenizer, SCRIPTS, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))

    ids, mask = observations(out, 0)
    observed = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m == 0])
    sampled = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m == 1])
    lines = [RuleCritic.VAGUE] * 2 if vague else [RuleCritic.CLEAR["path"][True], RuleCritic.CLEAR["path"][False]]
    for line in lines:
        assert prompts.format_critique(line).strip() in observed
    assert "critique" not in sampled
    assert observed.index("<critique>") > observed.index("</information>")  # after the documents
    records = out.non_tensor_batch["turns"][0]
    assert [r["critique"] for r in records] == [*lines, None] and [r["vague"] for r in records[:2]] == [vague] * 2
    metrics = out.meta_info["metrics"]
    assert metrics["critictor/critiques_mean"] == 1.0 and metrics["critictor/vague_rate"] == vague
    assert "turn_scores" not in out.batch.keys()  # the retrospective critic is off


def test_a_repeated_search_is_critiqued_as_bringing_nothing_new(tokenizer, monkeypatch):
    # the same query twice: the same documents, with the answer in them both times
    scripts = {"Who wrote Hamlet?": ["<search> William Shakespeare </search>"] * 2 + ["<answer> Shakespeare </answer>"]}
    config = critic_config(interactive__enable=True, interactive__privileged=True)
    manager, _ = make_manager(config, tokenizer, scripts, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(scripts), ANSWERS[:1]))
    records = out.non_tensor_batch["turns"][0]
    assert [r["critique"] for r in records] == [RuleCritic.CLEAR["path"][True], RuleCritic.CLEAR["path"][False], None]


def test_critiques_are_drawn_with_the_configured_probability(tokenizer, monkeypatch):
    config = critic_config(interactive__enable=True, interactive__privileged=True, interactive__probability=0.0)
    manager, _ = make_manager(config, tokenizer, SCRIPTS, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))
    assert "<critique>" not in tokenizer.decode(observations(out, 0)[0])
    assert out.meta_info["metrics"]["critictor/critiques_mean"] == 0.0


def test_the_rule_oracle_cannot_comment_without_the_gold_answers():
    config = critic_config(interactive__enable=True)
    with pytest.raises(ValueError, match="privileged"):
        config.critictor.check("critictor")


def test_llm_critic_requests_carry_their_own_rows_and_failures_give_no_reward(tokenizer, monkeypatch, chat_server):
    def reply(prompt):
        if "Who wrote Hamlet?" in prompt:
            assert 'query "William Shakespeare"' in prompt and "Correct answer: William Shakespeare" in prompt
            return "Search 1: useful | names him\nSearch 2: useless | nothing"
        assert "Which river" in prompt and 'query "cairo river"' in prompt and "Correct answer: Nile" in prompt
        return "I cannot say."  # unreadable: retried, then no turn reward

    server = chat_server(reply)
    scripts = {
        **SCRIPTS,
        "Which river flows through Cairo?": ["<search> cairo river </search>", "<answer> Nile </answer>"],
    }
    del scripts["Capital of France?"]
    config = critic_config(
        retrospective__enable=True,
        backend="server",
        server_urls=[server.url],
        retry__max_retries=1,
        retry__backoff_s=0.01,
    )
    manager, _ = make_manager(config, tokenizer, scripts, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(scripts), ["William Shakespeare", "Nile"]))

    assert len(server.bodies) == 1 + 2  # one request for Hamlet, two attempts for the river
    assert out.batch["turn_graded"][0].sum() == 2 and out.batch["turn_graded"][1].sum() == 0
    assert [r["verdict"] for r in out.non_tensor_batch["turns"][1]] == [None, None]
    metrics = out.meta_info["metrics"]
    assert metrics["critictor/failures"] == 1 and metrics["critictor/retries"] == 1
    assert metrics["critictor/graded_rate"] == pytest.approx(2 / 3)


def test_a_graded_batch_follows_the_batch_schema(tokenizer, monkeypatch):
    from verl.utils.batch_schema import Key, Stage, check_batch

    manager, _ = make_manager(critic_config(retrospective__enable=True), tokenizer, SCRIPTS, monkeypatch)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))
    check_batch(out, Stage.ROLLOUT)  # the turn tensors' dtypes and shapes included
    assert {Key.TURN_IDS, Key.TURN_SCORES, Key.TURN_GRADED} <= set(out.batch.keys())


TIMINGS = ("seconds", "wait_s", "idle_frac", "wall_s", "floor_s")


def test_batch_and_async_scheduling_give_the_same_rollout(tokenizer, monkeypatch):
    """Searches, noise draws, critiques, grades and every tensor agree: each draw is keyed by the
    trajectory and its turn, never by the order in which turns reach the environment."""
    scripts = dict(SCRIPTS)
    scripts["Who painted it?"] = ["no tags here", "<search> painter </search>", "<answer> Brandt </answer>"]
    outputs = []
    for scheduling in ("batch", "async"):
        config = critic_config(retrospective__enable=True, interactive__enable=True, interactive__privileged=True)
        config.actor_rollout_ref.rollout.n = 2
        config.actor_rollout_ref.rollout.agent.scheduling = scheduling
        config.search.curriculum.start_threshold = config.search.curriculum.end_threshold = 0.5
        manager, _ = make_manager(config, tokenizer, scripts, monkeypatch)
        outputs.append(manager.generate_sequences(make_batch(tokenizer, list(scripts), ANSWERS + ["Ilsa Brandt"])))
    batch, asynchronous = outputs
    assert set(batch.batch.keys()) == set(asynchronous.batch.keys()) and "turn_scores" in batch.batch.keys()
    for key in batch.batch.keys():
        assert torch.equal(batch.batch[key], asynchronous.batch[key]), key
    for key in ("num_turns", "num_searches", "accepted_answer", "turns"):
        assert list(batch.non_tensor_batch[key]) == list(asynchronous.non_tensor_batch[key]), key
    same = {k: v for k, v in batch.meta_info["metrics"].items() if not k.endswith(TIMINGS)}
    assert same == {k: asynchronous.meta_info["metrics"][k] for k in same}
    assert same["critictor/critiques_mean"] > 0 and 0 < same["search/noisy_rate"] < 1


@pytest.mark.parametrize("scheduling", ["batch", "async"])
def test_a_dropped_manager_frees_its_rollout_at_once(tokenizer, monkeypatch, scheduling):
    """No reference cycle keeps the rollout alive until a later garbage collection: an in-process
    vLLM engine freed under a newer one would tear down the parallel state the newer one uses."""
    import gc
    import weakref

    config = critic_config(retrospective__enable=True, interactive__enable=True, interactive__privileged=True)
    config.actor_rollout_ref.rollout.agent.scheduling = scheduling
    manager, wg = make_manager(config, tokenizer, SCRIPTS, monkeypatch)
    manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))
    gc.disable()
    try:
        freed = weakref.ref(wg)
        del manager, wg
        assert freed() is None
    finally:
        gc.enable()
