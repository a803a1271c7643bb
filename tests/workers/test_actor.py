"""The PPO update on one process (no FSDP): gradient accumulation and the KL-loss sign."""

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl.algos import core_algos
from verl.config import ActorConfig, PolicyLossConfig, RefConfig
from verl.protocol import DataProto, RolloutSettings
from verl.utils.tiny_model import build_tiny_model
from verl.workers.actor import DataParallelPPOActor


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), vocab_size=300, hidden_size=32, intermediate_size=64)


def make_batch(rows: int, prompt_width: int = 5, response_width: int = 6, seed: int = 0) -> DataProto:
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, 300, (rows, prompt_width), generator=g)
    responses = torch.randint(3, 300, (rows, response_width), generator=g)
    prompt_mask = torch.ones(rows, prompt_width, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding
    response_mask = torch.ones(rows, response_width, dtype=torch.long)
    response_mask[1, 4:] = 0  # a short response
    response_mask[2, 2] = 0  # an observation token in the middle of a response
    attention = torch.cat(
        [
            prompt_mask,
            (
                response_mask + (torch.arange(response_width) == 2).long() * (torch.arange(rows) == 2).long()[:, None]
            ).clamp(max=1),
        ],
        1,
    )
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "response_mask": response_mask,
            "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": attention,
            "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
            "old_log_probs": -torch.rand(rows, response_width, generator=g) * 5,
            "advantages": torch.randn(rows, response_width, generator=g),
            "ref_log_prob": -torch.rand(rows, response_width, generator=g) * 5,
        }
    )


def updated_weights(
    model_path, data, micro: int, remove_padding: bool = False, mini: int | None = None, parts=None, **actor_kwargs
):
    """The weight change of an update over ``data`` in mini-batches of ``mini`` (all rows), or of one
    update per DataProto in ``parts``, one after the other."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = ActorConfig(ppo_micro_batch_size_per_gpu=micro, grad_clip=1e9, **actor_kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    actor = DataParallelPPOActor(config, model, optimizer, scheduler, remove_padding=remove_padding)
    before = copy.deepcopy(model.state_dict())
    for part in parts or [data]:
        metrics, _ = actor.update_policy(part, mini_batch_size=mini or len(part), temperature=1.0)
    return {k: v - before[k] for k, v in model.state_dict().items()}, metrics


def test_a_short_last_mini_batch_is_a_step_over_what_is_left(model_path):
    """ppo_mini_batch_responses need not divide the batch (ZeroSearch's and Search-R1's split): 5 rows
    in mini-batches of 4 are a step on the first 4, then a step on the one left, its loss its own."""
    data = make_batch(5)
    split, metrics = updated_weights(model_path, data, micro=2, mini=4)
    assert len(metrics["actor/grad_norm"]) == 2
    one_by_one, _ = updated_weights(model_path, data, micro=2, parts=[data[0:4], data[4:5]])
    assert_same_update(split, one_by_one)
    whole, _ = updated_weights(model_path, data, micro=2)
    assert not torch.allclose(whole["lm_head.weight"], split["lm_head.weight"])


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_short_trailing_micro_batch_gives_the_full_batch_gradient(model_path, loss_agg_mode):
    data = make_batch(5)
    whole, _ = updated_weights(model_path, data, micro=5, loss_agg_mode=loss_agg_mode)
    pieces, _ = updated_weights(model_path, data, micro=2, loss_agg_mode=loss_agg_mode)  # 2 + 2 + 1 rows
    for name in whole:
        assert torch.allclose(whole[name], pieces[name], atol=1e-6), name


def test_kl_loss_is_added_to_the_policy_loss(model_path):
    """With zero advantages only the KL term moves the weights. Minimising +KL(π‖ref) with
    ref = log π − 1 lowers log π of the sampled tokens; a subtracted KL would raise it."""
    data = make_batch(4)
    data.batch["advantages"].zero_()
    config = ActorConfig(ppo_micro_batch_size_per_gpu=4, use_kl_loss=True, kl_loss_coef=1.0, kl_loss_type="k1")
    model = AutoModelForCausalLM.from_pretrained(model_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    actor = DataParallelPPOActor(config, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    before, _ = actor.compute_log_prob(data, micro_batch_size=4, temperature=1.0)
    data.batch["old_log_probs"] = before.clone()
    data.batch["ref_log_prob"] = before - 1.0
    metrics, _ = actor.update_policy(data, mini_batch_size=4, temperature=1.0)
    assert metrics["actor/kl_loss"][0] == pytest.approx(1.0, abs=1e-4)
    after, _ = actor.compute_log_prob(data, micro_batch_size=4, temperature=1.0)
    mask = data.batch["response_mask"].bool()
    assert after[mask].sum() < before[mask].sum() - 1e-3


def assert_same_update(a: dict, b: dict) -> None:
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize(
    "variant",
    [
        {"use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": 25},  # 2-3 rows per micro-batch, by length
        {"remove_padding": True},
        {"remove_padding": True, "use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": 25},
    ],
    ids=["dynamic_bsz", "remove_padding", "both"],
)
def test_token_budget_and_padding_free_updates_equal_the_padded_one(model_path, loss_agg_mode, variant):
    """Same loss, same gradients (so the same weights after an SGD step) as one padded micro-batch,
    with rows of different lengths, left padding and an observation inside a response."""
    data = make_batch(7)
    data.batch["attention_mask"][3, :4] = 0  # another prompt length
    data.batch["response_mask"][4, 1:] = 0  # a one-token response
    data.batch["attention_mask"][4, 6:] = 0
    data.batch["position_ids"] = (data.batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    padded, padded_metrics = updated_weights(model_path, data, micro=7, loss_agg_mode=loss_agg_mode)
    other, other_metrics = updated_weights(model_path, data, micro=7, loss_agg_mode=loss_agg_mode, **variant)
    assert_same_update(padded, other)
    assert padded_metrics["actor/padding_fraction"][0] > 0.1  # left-padded prompts, short responses
    if variant.get("remove_padding"):
        assert other_metrics["actor/padding_fraction"] == [0.0]
    else:  # rows of similar length together: never more padding than one micro-batch of all rows
        assert 0 < other_metrics["actor/padding_fraction"][0] <= padded_metrics["actor/padding_fraction"][0]
    if variant.get("use_dynamic_bsz"):
        assert len(other_metrics["actor/pg_loss"]) > 1  # the budget did split the batch
    else:  # one micro-batch each: the same loss
        assert other_metrics["actor/pg_loss"] == pytest.approx(padded_metrics["actor/pg_loss"], abs=1e-6)


def test_padding_free_log_probs_equal_the_padded_ones(model_path):
    data = make_batch(6)
    data.batch["attention_mask"][3, :4] = 0
    data.batch["position_ids"] = (data.batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    padded = DataParallelPPOActor(RefConfig(), model)
    packed = DataParallelPPOActor(RefConfig(), model, remove_padding=True)
    lp, ent = padded.compute_log_prob(data, micro_batch_size=6, temperature=0.7, with_entropy=True)
    for kwargs in ({"micro_batch_size": 4}, {"micro_batch_size": 1, "max_token_len": 20}):
        lp2, ent2 = packed.compute_log_prob(data, temperature=0.7, with_entropy=True, **kwargs)
        attended = data.batch["attention_mask"][:, -6:].bool()
        torch.testing.assert_close(lp2[attended], lp[attended], rtol=0, atol=1e-5)
        torch.testing.assert_close(ent2[attended], ent[attended], rtol=0, atol=1e-5)


@pytest.mark.parametrize("shuffle", [False, True])
def test_an_on_policy_update_takes_the_old_log_probs_from_its_own_forward_pass(model_path, shuffle):
    """Without old_log_probs (one epoch, one mini-batch) the update equals the one given the
    separately computed old log-probs, and returns those log-probs in batch order."""
    data = make_batch(5)
    data.meta_info["rollout"] = RolloutSettings(step=3)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    old, entropy = DataParallelPPOActor(RefConfig(), model).compute_log_prob(
        data, micro_batch_size=5, temperature=1.0, with_entropy=True
    )
    data.batch["old_log_probs"] = old
    given, _ = updated_weights(model_path, data, micro=2, shuffle=shuffle)
    on_policy = data.select(batch_keys=[k for k in data.batch.keys() if k != "old_log_probs"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    actor = DataParallelPPOActor(
        ActorConfig(ppo_micro_batch_size_per_gpu=2, grad_clip=1e9, shuffle=shuffle),
        model,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
    )
    before = copy.deepcopy(model.state_dict())
    _, computed = actor.update_policy(on_policy, mini_batch_size=5, temperature=1.0, report_first_pass=True)
    assert_same_update(given, {k: v - before[k] for k, v in model.state_dict().items()})
    attended = data.batch["attention_mask"][:, -6:].bool()
    torch.testing.assert_close(computed.batch["old_log_probs"][attended], old[attended], rtol=0, atol=1e-5)
    torch.testing.assert_close(computed.batch["entropys"][attended], entropy[attended], rtol=0, atol=1e-5)
    assert computed.batch["measured"].all()
    with pytest.raises(ValueError, match="one epoch over one mini-batch"):
        actor.update_policy(on_policy, mini_batch_size=2, temperature=1.0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_first_pass_is_reported_for_the_first_mini_batch_only(model_path, shuffle):
    """Asked to (old log-probs from the rollout), an update with given old log-probs returns the
    log-probs its first mini-batch computed before any optimizer step: the policy's own, where it
    measured them."""
    data = make_batch(5)
    data.meta_info["rollout"] = RolloutSettings(step=3)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    own, entropy = DataParallelPPOActor(RefConfig(), model).compute_log_prob(
        data, micro_batch_size=5, temperature=1.0, with_entropy=True
    )
    data.batch["old_log_probs"] = own + 0.1  # stand-ins, as the rollout's would be
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    actor = DataParallelPPOActor(
        ActorConfig(ppo_micro_batch_size_per_gpu=2, ppo_epochs=2, shuffle=shuffle),
        model,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
    )
    _, first = actor.update_policy(data, mini_batch_size=2, temperature=1.0, report_first_pass=True)
    measured = first.batch["measured"]
    assert int(measured.sum()) == 2  # the first mini-batch's rows
    if not shuffle:
        assert measured.tolist() == [True, True, False, False, False]
    attended = data.batch["attention_mask"][:, -6:].bool() & measured[:, None]
    torch.testing.assert_close(first.batch["old_log_probs"][attended], own[attended], rtol=0, atol=1e-5)
    torch.testing.assert_close(first.batch["entropys"][attended], entropy[attended], rtol=0, atol=1e-5)
    assert (first.batch["old_log_probs"][~measured] == 0).all()
    assert actor.update_policy(data, mini_batch_size=2, temperature=1.0)[1] is None


def test_the_update_uses_the_policy_loss_the_config_names(model_path, monkeypatch):
    """A loss registered by name and chosen by actor.policy_loss.loss_mode is the one the update
    calls, once per micro-batch, with the actor's clip settings."""
    monkeypatch.setattr(core_algos, "POLICY_LOSS_REGISTRY", dict(core_algos.POLICY_LOSS_REGISTRY))
    calls = []

    @core_algos.register_policy_loss("constant")
    def constant(old_log_prob, log_prob, advantages, response_mask, **settings):
        calls.append(settings)
        zero = torch.zeros(())
        return (log_prob * 0).sum() + 7.0, zero, zero, zero

    data = make_batch(5)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    config = ActorConfig(ppo_micro_batch_size_per_gpu=2, clip_ratio_c=4.0, policy_loss=PolicyLossConfig("constant"))
    actor = DataParallelPPOActor(config, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    metrics, _ = actor.update_policy(data, mini_batch_size=5, temperature=1.0)
    assert metrics["actor/pg_loss"] == [7.0, 7.0, 7.0]  # 2 + 2 + 1 rows
    assert [c["clip_ratio_c"] for c in calls] == [4.0] * 3
