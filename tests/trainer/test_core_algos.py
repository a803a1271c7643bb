import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from verl.algos import core_algos
from verl.algos.core_algos import (
    AdaptiveKLController,
    FixedKLController,
    TurnRewards,
    agg_loss,
    compute_gae_advantage_return,
    compute_grpo_outcome_advantage,
    compute_grpo_turn_advantage,
    compute_policy_loss,
    compute_reinforce_outcome_advantage,
    compute_reinforce_plus_plus_outcome_advantage,
    compute_rloo_outcome_advantage,
    compute_value_loss,
    get_adv_estimator_fn,
    get_kl_controller,
    get_policy_loss_fn,
    kl_penalty,
    normalize_turn_scores,
    register_adv_est,
    register_policy_loss,
)
from verl.utils.torch_functional import entropy_from_logits

# rows with observation tokens (zeros) between generated tokens, plus trailing padding
MIXED_MASK = torch.tensor(
    [
        [1, 1, 0, 0, 1, 1, 0],
        [1, 0, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 0, 1, 0, 1, 0],
    ]
)


def _random_rewards_values(seed):
    gen = torch.Generator().manual_seed(seed)
    shape = MIXED_MASK.shape
    rewards = torch.randn(shape, generator=gen, dtype=torch.float64)
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    return rewards, values


def _whiten_valid(rows, mask_rows):
    """Plain-Python whitening over valid entries (unbiased std, eps 1e-8)."""
    valid = [x for row, m in zip(rows, mask_rows, strict=True) for x, k in zip(row, m, strict=True) if k]
    mean = statistics.mean(valid)
    std = math.sqrt(statistics.variance(valid) + 1e-8)
    return [
        [(x - mean) / std if k else 0.0 for x, k in zip(row, m, strict=True)]
        for row, m in zip(rows, mask_rows, strict=True)
    ]


def _reference_gae(rewards, values, mask, gamma, lam):
    """Backward GAE over the valid positions of one row; masked positions are skipped."""
    adv = [0.0] * len(rewards)
    next_value, running = 0.0, 0.0
    for t in reversed(range(len(rewards))):
        if not mask[t]:
            continue
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        next_value = values[t]
        adv[t] = running
    return adv


def _reference_reward_to_go(rewards, mask, gamma):
    out = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        if mask[t]:
            running = rewards[t] + gamma * running
            out[t] = running
    return out


# ---------------------------------------------------------------- registry


def test_registry_contains_all_estimators():
    assert get_adv_estimator_fn("gae") is compute_gae_advantage_return
    assert get_adv_estimator_fn("grpo") is compute_grpo_outcome_advantage
    assert get_adv_estimator_fn("reinforce") is compute_reinforce_outcome_advantage
    assert get_adv_estimator_fn("reinforce_plus_plus") is compute_reinforce_plus_plus_outcome_advantage
    assert get_adv_estimator_fn("rloo") is compute_rloo_outcome_advantage


def test_unknown_estimator_error_names_it_and_lists_known():
    with pytest.raises(ValueError) as err:
        get_adv_estimator_fn("remax_typo")
    message = str(err.value)
    assert "remax_typo" in message
    for name in ("gae", "grpo", "reinforce", "reinforce_plus_plus", "rloo"):
        assert repr(name) in message


def test_register_adv_est_adds_and_rejects_a_clashing_name(monkeypatch):
    monkeypatch.setattr(core_algos, "ADV_ESTIMATOR_REGISTRY", dict(core_algos.ADV_ESTIMATOR_REGISTRY))

    @register_adv_est("custom")
    def custom(token_level_rewards, response_mask):
        return token_level_rewards, token_level_rewards

    assert get_adv_estimator_fn("custom") is custom
    with pytest.raises(ValueError, match="'grpo' is already registered"):
        register_adv_est("grpo")(custom)


def test_policy_losses_are_registered_by_name(monkeypatch):
    """vanilla (verl's name) is the clipped surrogate; an unknown name lists the known ones; a name
    is taken once."""
    assert get_policy_loss_fn("vanilla") is compute_policy_loss
    with pytest.raises(ValueError, match=r"unknown policy loss 'clip_cov'; known policy losses: \[.*'vanilla'"):
        get_policy_loss_fn("clip_cov")
    monkeypatch.setattr(core_algos, "POLICY_LOSS_REGISTRY", dict(core_algos.POLICY_LOSS_REGISTRY))

    @register_policy_loss("custom")
    def custom(old_log_prob, log_prob, advantages, response_mask, **_):
        return compute_policy_loss(old_log_prob, log_prob, advantages, response_mask, cliprange=0.1)

    assert get_policy_loss_fn("custom") is custom
    assert register_policy_loss("custom")(custom) is custom  # the same function again is no clash
    with pytest.raises(ValueError, match="'vanilla' is already registered"):
        register_policy_loss("vanilla")(custom)


# ---------------------------------------------------------------- GAE


def test_gae_skips_masked_token_by_hand():
    rewards = torch.tensor([[0.0, 5.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.2]])
    mask = torch.tensor([[1, 0, 1]])
    # gamma 0.9, lam 0.8; the masked token's reward 5 and value 9 must not matter
    # t=2: delta = 1 + 0.9*0 - 0.2 = 0.8, A2 = 0.8
    # t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32, A0 = -0.32 + 0.9*0.8*0.8 = 0.256
    # returns = A + V: 0.256 + 0.5 = 0.756, 0.8 + 0.2 = 1.0
    adv, ret = compute_gae_advantage_return(rewards, mask, values=values, gamma=0.9, lam=0.8)
    torch.testing.assert_close(ret, torch.tensor([[0.756, 0.0, 1.0]]))
    # two valid points whiten to -+1/sqrt(2)
    torch.testing.assert_close(adv, torch.tensor([[-0.707107, 0.0, 0.707107]]), rtol=0, atol=1e-5)


def test_gae_matches_loop_reference():
    rewards, values = _random_rewards_values(0)
    gamma, lam = 0.97, 0.9
    adv, ret = compute_gae_advantage_return(rewards, MIXED_MASK, values=values, gamma=gamma, lam=lam)

    raw = [
        _reference_gae(r, v, m, gamma, lam)
        for r, v, m in zip(rewards.tolist(), values.tolist(), MIXED_MASK.tolist(), strict=True)
    ]
    expected_ret = [
        [a + v if k else 0.0 for a, v, k in zip(ra, rv, m, strict=True)]
        for ra, rv, m in zip(raw, values.tolist(), MIXED_MASK.tolist(), strict=True)
    ]
    torch.testing.assert_close(ret, torch.tensor(expected_ret, dtype=torch.float64))
    torch.testing.assert_close(adv, torch.tensor(_whiten_valid(raw, MIXED_MASK.tolist()), dtype=torch.float64))


def test_gae_observation_tokens_act_as_if_absent():
    rewards, values = _random_rewards_values(1)
    row_mask = MIXED_MASK[0]
    _, ret = compute_gae_advantage_return(rewards[:1], row_mask[None], values=values[:1], gamma=0.95, lam=0.7)
    keep = row_mask.bool()
    _, compact_ret = compute_gae_advantage_return(
        rewards[:1, keep], torch.ones(1, int(keep.sum())), values=values[:1, keep], gamma=0.95, lam=0.7
    )
    torch.testing.assert_close(ret[0, keep], compact_ret[0])


# ---------------------------------------------------------------- REINFORCE / REINFORCE++


def test_reinforce_reward_to_go_by_hand():
    rewards = torch.tensor([[1.0, 7.0, 0.0, 2.0]])
    mask = torch.tensor([[1, 0, 1, 1]])
    # gamma 0.5: t=3: 2; t=2: 0 + 0.5*2 = 1; t=1 masked (reward 7 ignored); t=0: 1 + 0.5*1 = 1.5
    adv, ret = compute_reinforce_outcome_advantage(rewards, mask, gamma=0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.5, 0.0, 1.0, 2.0]]))
    torch.testing.assert_close(ret, adv)


def test_reinforce_outcome_reward_reaches_every_valid_token():
    rewards = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]])
    adv, _ = compute_reinforce_outcome_advantage(rewards, mask)
    torch.testing.assert_close(adv, torch.tensor([[3.0, 3.0, 3.0, 0.0], [-1.0, 0.0, -1.0, -1.0]]))


def test_reinforce_matches_loop_reference():
    rewards, _ = _random_rewards_values(2)
    adv, ret = compute_reinforce_outcome_advantage(rewards, MIXED_MASK, gamma=0.9)
    expected = [_reference_reward_to_go(r, m, 0.9) for r, m in zip(rewards.tolist(), MIXED_MASK.tolist(), strict=True)]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(ret, adv)


def test_reinforce_plus_plus_matches_loop_reference():
    rewards, _ = _random_rewards_values(3)
    adv, ret = compute_reinforce_plus_plus_outcome_advantage(rewards, MIXED_MASK, gamma=0.8)
    to_go = [_reference_reward_to_go(r, m, 0.8) for r, m in zip(rewards.tolist(), MIXED_MASK.tolist(), strict=True)]
    torch.testing.assert_close(ret, torch.tensor(to_go, dtype=torch.float64))
    torch.testing.assert_close(adv, torch.tensor(_whiten_valid(to_go, MIXED_MASK.tolist()), dtype=torch.float64))


# ---------------------------------------------------------------- GRPO / RLOO

GROUP_INDEX = np.array(["a", "a", "a", "b", "c", "c"], dtype=object)
GROUP_MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]])
# scores: a -> 1, 0, 4 (row 0 is dense 0.5 + 0.5; its masked 9 is not part of the response),
# b -> 5 (alone), c -> 1, 3
GROUP_REWARDS = torch.tensor(
    [
        [0.5, 0.5, 9.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 4.0],
        [0.0, 0.0, 5.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 3.0],
    ]
)


def _broadcast(per_row):
    return torch.tensor(per_row)[:, None] * GROUP_MASK


def test_grpo_normalised_by_hand():
    # group a: mean 5/3, unbiased std sqrt(((2/3)^2 + (5/3)^2 + (7/3)^2) / 2) = 2.0816660
    #   -> (1 - 5/3) / 2.0816670 = -0.320256, (0 - 5/3) / .. = -0.800640, (4 - 5/3) / .. = 1.120896
    # group b: single row -> 0
    # group c: mean 2, std sqrt((1 + 1) / 1) = 1.4142136 -> -0.707106, 0.707106
    adv, ret = compute_grpo_outcome_advantage(GROUP_REWARDS, GROUP_MASK, index=GROUP_INDEX)
    expected = _broadcast([-0.320256, -0.800640, 1.120896, 0.0, -0.707106, 0.707106])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ret, adv)


def test_grpo_mean_only():
    # group a: 1 - 5/3, 0 - 5/3, 4 - 5/3; b: 0; c: 1 - 2, 3 - 2
    adv, _ = compute_grpo_outcome_advantage(GROUP_REWARDS, GROUP_MASK, index=GROUP_INDEX, norm_adv_by_std_in_grpo=False)
    expected = _broadcast([-2 / 3, -5 / 3, 7 / 3, 0.0, -1.0, 1.0])
    torch.testing.assert_close(adv, expected)


def test_rloo_by_hand():
    # group a: 1 - (0+4)/2 = -1, 0 - (1+4)/2 = -2.5, 4 - (1+0)/2 = 3.5; b alone: 0; c: 1 - 3, 3 - 1
    adv, ret = compute_rloo_outcome_advantage(GROUP_REWARDS, GROUP_MASK, index=GROUP_INDEX)
    expected = _broadcast([-1.0, -2.5, 3.5, 0.0, -2.0, 2.0])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, adv)


@pytest.mark.parametrize("estimator", [compute_grpo_outcome_advantage, compute_rloo_outcome_advantage])
def test_group_estimators_reject_mismatched_index(estimator):
    with pytest.raises(ValueError, match="index has 5 entries but the batch has 6 rows"):
        estimator(GROUP_REWARDS, GROUP_MASK, index=GROUP_INDEX[:5])
    with pytest.raises(ValueError, match="needs index"):
        estimator(GROUP_REWARDS, GROUP_MASK, index=None)


@pytest.mark.parametrize("name", ["gae", "grpo", "reinforce", "reinforce_plus_plus", "rloo", "grpo_turn"])
def test_every_estimator_takes_the_one_calling_convention(name):
    """The trainer calls every estimator alike; each takes the keywords it needs."""
    gen = torch.Generator().manual_seed(6)
    rewards, values = torch.randn(GROUP_MASK.shape, generator=gen), torch.randn(GROUP_MASK.shape, generator=gen)
    advantages, returns = get_adv_estimator_fn(name)(
        rewards,
        GROUP_MASK,
        index=GROUP_INDEX,
        values=values,
        turns=None,
        gamma=0.9,
        lam=0.95,
        norm_adv_by_std_in_grpo=True,
    )
    assert advantages.shape == returns.shape == rewards.shape
    assert torch.all(advantages[GROUP_MASK == 0] == 0) and torch.all(returns[GROUP_MASK == 0] == 0)


# ---------------------------------------------------------------- KL penalty

LOGPROB = torch.tensor([-1.0, -2.0])
REF_LOGPROB = torch.tensor([-1.5, -1.0])  # logprob - ref = 0.5, -1.0


@pytest.mark.parametrize(
    "name, expected",
    [
        ("kl", [0.5, -1.0]),
        ("k1", [0.5, -1.0]),
        ("abs", [0.5, 1.0]),
        ("mse", [0.125, 0.5]),  # 0.5 * 0.25, 0.5 * 1
        ("k2", [0.125, 0.5]),
        # d = ref - logprob = -0.5, 1: e^-0.5 + 0.5 - 1 = 0.106531, e - 1 - 1 = 0.718282
        ("low_var_kl", [0.106531, 0.718282]),
        ("k3", [0.106531, 0.718282]),
    ],
)
def test_kl_penalty_types(name, expected):
    torch.testing.assert_close(kl_penalty(LOGPROB, REF_LOGPROB, name), torch.tensor(expected), rtol=0, atol=1e-6)


def test_low_var_kl_is_clamped():
    # d = -10 - (-30) = 20: e^20 - 21 is far above 10
    assert kl_penalty(torch.tensor([-30.0]), torch.tensor([-10.0]), "low_var_kl").item() == 10.0


def test_low_var_kl_of_an_impossible_token_is_finite_with_a_finite_gradient():
    """A -inf policy log-prob (e.g. a masked position, or a token the policy now rules out) must not
    turn into inf - inf = NaN, in the value or in the gradient."""
    logprob = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0]])
    kl = kl_penalty(logprob, ref, "low_var_kl")
    assert torch.isfinite(kl).all() and kl[0, 1].item() == 10.0
    agg_loss(kl, torch.tensor([[1.0, 0.0]]), "token-mean").backward()
    assert torch.isfinite(logprob.grad).all()
    # d = -1.5 - (-1) = -0.5 at the valid position: d/dlogprob (e^d - d - 1) = -(e^d - 1) = 1 - e^-0.5
    assert logprob.grad[0, 0].item() == pytest.approx(1 - math.exp(-0.5), abs=1e-6)


def test_kl_penalty_unknown_name():
    with pytest.raises(ValueError) as err:
        kl_penalty(LOGPROB, REF_LOGPROB, "full")
    assert "'full'" in str(err.value)
    assert "'low_var_kl'" in str(err.value) and "'k3'" in str(err.value)


# ---------------------------------------------------------------- agg_loss

LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
LOSS_MASK = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 27.0 / 5.0),  # (1 + 2 + 7 + 8 + 9) / 5
        ("seq-mean-token-sum", 13.5),  # empty row skipped: (3 + 24) / 2
        ("seq-mean-token-mean", 4.75),  # empty row skipped: (1.5 + 8) / 2
    ],
)
def test_agg_loss_modes(mode, expected):
    assert agg_loss(LOSS_MAT, LOSS_MASK, mode).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_agg_loss_empty_mask_is_zero_with_finite_grad(mode):
    loss_mat = LOSS_MAT.clone().requires_grad_(True)
    loss = agg_loss(loss_mat, torch.zeros_like(LOSS_MASK), mode)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(loss_mat.grad, torch.zeros_like(loss_mat))


def test_agg_loss_unknown_mode():
    with pytest.raises(ValueError) as err:
        agg_loss(LOSS_MAT, LOSS_MASK, "seq-sum")
    assert "'seq-sum'" in str(err.value) and "'seq-mean-token-mean'" in str(err.value)


# ---------------------------------------------------------------- policy loss

# ratios 1.5, 0.5, 0.5, 5, and a masked token with a garbage ratio
RATIOS = torch.tensor([[1.5, 0.5, 0.5, 5.0, 100.0]])
ADVANTAGES = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0]])
POLICY_MASK = torch.tensor([[1, 1, 1, 1, 0]])


def _policy_loss(**kwargs):
    log_prob = RATIOS.log().requires_grad_(True)
    out = compute_policy_loss(torch.zeros_like(RATIOS), log_prob, ADVANTAGES, POLICY_MASK, **kwargs)
    return log_prob, out


def test_policy_loss_clip_and_dual_clip_branches():
    log_prob, (pg_loss, clipfrac, ppo_kl, clipfrac_lower) = _policy_loss(
        cliprange=0.2, cliprange_high=0.3, clip_ratio_c=3.0
    )
    # clip window [0.8, 1.3]
    # t0 A=+1 r=1.5: max(-1.5, -1.3) = -1.3   (clipped)
    # t1 A=+1 r=0.5: max(-0.5, -0.8) = -0.5
    # t2 A=-1 r=0.5: max(0.5, 0.8) = 0.8      (clipped), below dual bound 3
    # t3 A=-1 r=5:   max(5, 1.3) = 5 -> min(5, 3) = 3 (dual clip)
    # token-mean: (-1.3 - 0.5 + 0.8 + 3) / 4 = 0.5
    assert pg_loss.item() == pytest.approx(0.5)
    assert clipfrac.item() == pytest.approx(0.5)  # t0, t2
    assert clipfrac_lower.item() == pytest.approx(0.25)  # t3
    # -(ln 1.5 + ln 0.5 + ln 0.5 + ln 5) / 4
    assert ppo_kl.item() == pytest.approx(-0.157152, abs=1e-6)

    pg_loss.backward()
    # only t1 is unclipped: d(-A * r)/d log r = -A * r = -0.5, over 4 tokens
    torch.testing.assert_close(log_prob.grad, torch.tensor([[0.0, -0.125, 0.0, 0.0, 0.0]]))


def test_policy_loss_symmetric_cliprange_and_seq_mode():
    _, (pg_loss, clipfrac, _, _) = _policy_loss(cliprange=0.2)
    # window [0.8, 1.2]: -1.2, -0.5, 0.8, 3 -> 2.1 / 4
    assert pg_loss.item() == pytest.approx(0.525)
    assert clipfrac.item() == pytest.approx(0.5)

    _, (pg_loss, _, _, _) = _policy_loss(cliprange=0.2, loss_agg_mode="seq-mean-token-sum")
    assert pg_loss.item() == pytest.approx(2.1)


def test_policy_loss_huge_log_ratio_keeps_gradient_finite():
    old = torch.zeros(1, 2)
    log_prob = torch.tensor([[1000.0, 1000.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0]])
    pg_loss, _, _, _ = compute_policy_loss(old, log_prob, advantages, torch.ones(1, 2), cliprange=0.2)
    # -1.2 (upper clip) and 3 (dual clip)
    assert pg_loss.item() == pytest.approx(0.9)
    pg_loss.backward()
    assert torch.isfinite(log_prob.grad).all()


def test_policy_loss_rejects_bad_settings():
    with pytest.raises(ValueError, match="clip_ratio_c must be greater than 1"):
        _policy_loss(cliprange=0.2, clip_ratio_c=1.0)
    with pytest.raises(ValueError, match="needs cliprange"):
        _policy_loss(cliprange_low=0.2)


# ---------------------------------------------------------------- value / entropy loss


def test_value_loss_clipping_by_hand():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    vpreds = torch.tensor([[1.5, 1.1, 0.2, 3.0, 9.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    # clip window values +- 0.2 = [0.8, 1.2]
    # t0: (1.5-2)^2 = 0.25 vs (1.2-2)^2 = 0.64 -> 0.64 (clipped)
    # t1: 1.1 inside window: 1.21 both
    # t2: 0.04 vs (0.8-0)^2 = 0.64 -> 0.64 (clipped)
    # t3: 9 vs 1.44 -> 9
    # 0.5 * (0.64 + 1.21 + 0.64 + 9) / 4 = 1.43625
    vf_loss, vf_clipfrac = compute_value_loss(vpreds, returns, values, mask, cliprange_value=0.2)
    assert vf_loss.item() == pytest.approx(1.43625)
    assert vf_clipfrac.item() == pytest.approx(0.5)

    vf_loss, _ = compute_value_loss(vpreds, returns, values, mask, 0.2, loss_agg_mode="seq-mean-token-sum")
    assert vf_loss.item() == pytest.approx(0.5 * 11.49)


def test_entropy_loss_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # (ln 2 + 0.562335) / 2, masked third token ignored: the entropy the actor aggregates
    assert agg_loss(entropy_from_logits(logits), mask, "token-mean").item() == pytest.approx(0.627741, abs=1e-6)


# ---------------------------------------------------------------- KL controllers


def test_fixed_kl_controller_never_moves():
    ctrl = FixedKLController(kl_coef=0.1)
    ctrl.update(current_kl=5.0, n_steps=100)
    assert ctrl.value == 0.1


def test_adaptive_kl_controller_updates():
    ctrl = AdaptiveKLController(init_kl_coef=0.2, target_kl=0.1, horizon=1000)
    ctrl.update(current_kl=0.11, n_steps=100)  # error 0.1 -> * (1 + 0.1 * 0.1) = 0.202
    assert ctrl.value == pytest.approx(0.202)
    ctrl.update(current_kl=1.0, n_steps=100)  # error 9 clipped to 0.2 -> * 1.02 = 0.20604
    assert ctrl.value == pytest.approx(0.20604)
    ctrl.update(current_kl=torch.tensor(0.0), n_steps=500)  # error -1 clipped to -0.2 -> * 0.9 = 0.185436
    assert ctrl.value == pytest.approx(0.185436)


def test_get_kl_controller():
    fixed = get_kl_controller(SimpleNamespace(type="fixed", kl_coef=0.05))
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.05

    adaptive = get_kl_controller(SimpleNamespace(type="adaptive", kl_coef=0.2, target_kl=0.1, horizon=1000))
    assert isinstance(adaptive, AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.2, 0.1, 1000)

    with pytest.raises(ValueError, match="horizon > 0"):
        get_kl_controller(SimpleNamespace(type="adaptive", kl_coef=0.2, target_kl=0.1, horizon=0))
    with pytest.raises(ValueError) as err:
        get_kl_controller(SimpleNamespace(type="pid", kl_coef=0.2, target_kl=0.1, horizon=1000))
    assert "'pid'" in str(err.value) and "'adaptive'" in str(err.value)


# ---------------------------------------------------------------- GRPO with turn rewards

# Row 0: search (graded useful), observation, search (graded useless), observation, answer (R=1).
# Row 1, same prompt: search (graded useful), observation, answer (R=0). Row 2, alone: answer (R=1).
TURN_MASK = torch.tensor(
    [[1, 1, 1, 0, 0, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]]
)
TURN_IDS = torch.tensor(
    [[0, 0, 0, -1, -1, 1, 1, -1, 2, 2], [0, 0, -1, -1, 1, 1, -1, -1, -1, -1], [0, 0, 0, -1, -1, -1, -1, -1, -1, -1]]
)
TURN_SCORES = torch.zeros(3, 10)
TURN_SCORES[0, 2], TURN_SCORES[0, 6], TURN_SCORES[1, 1] = 0.5, -0.5, 0.5
TURN_GRADED = (TURN_SCORES != 0).long()
TURN_OUTCOME = torch.zeros(3, 10)
TURN_OUTCOME[0, 9], TURN_OUTCOME[2, 2] = 1.0, 1.0
TURN_INDEX = np.array(["a", "a", "b"], dtype=object)


def test_grpo_turn_against_hand_computed_values():
    turns = TurnRewards(scores=TURN_SCORES, graded=TURN_GRADED, turn_ids=TURN_IDS)
    adv, ret = compute_grpo_turn_advantage(TURN_OUTCOME + TURN_SCORES, TURN_MASK, index=TURN_INDEX, turns=turns)
    # Outcome: group a scores 1 and 0 -> mean 0.5, std sqrt(0.5) -> ±1/sqrt(2); b is alone -> 0.
    # Turn rewards as given: row 0 turn 0: 0.5 - 0.5 = 0, turn 1: -0.5, turn 2: 0; row 1 turn 0: 0.5.
    s2 = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [s2] * 3 + [0, 0] + [s2 - 0.5] * 2 + [0] + [s2] * 2,
            [-s2 + 0.5] * 2 + [0, 0] + [-s2] * 2 + [0] * 4,
            [0.0] * 10,
        ]
    )
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ret, adv)


def test_grpo_turn_weight_scales_the_turn_term_and_a_unanimous_group_still_learns():
    """Every graded search of the group useful: the turn term is not cancelled, and doubling the
    weight doubles it."""
    scores = torch.zeros(3, 10)
    scores[0, 2], scores[0, 6], scores[1, 1] = 1.0, 1.0, 1.0  # all useful, weight 1
    graded = (scores != 0).long()
    base, _ = compute_grpo_turn_advantage(TURN_OUTCOME, TURN_MASK, index=TURN_INDEX, turns=None)
    for weight in (0.1, 1.0, 10.0):
        turns = TurnRewards(scores=weight * scores, graded=graded, turn_ids=TURN_IDS)
        adv, _ = compute_grpo_turn_advantage(TURN_OUTCOME + weight * scores, TURN_MASK, index=TURN_INDEX, turns=turns)
        turn_term = adv - base
        assert turn_term[0, 0].item() == pytest.approx(2 * weight)  # two useful searches ahead
        assert turn_term[0, 5].item() == pytest.approx(weight) and turn_term[0, 8].item() == 0  # answer turn
        assert turn_term[1, 0].item() == pytest.approx(weight)
        assert (turn_term[TURN_MASK == 0] == 0).all()  # observations and padding


def test_grpo_turn_without_turn_rewards_is_grpo():
    plain, _ = compute_grpo_outcome_advantage(TURN_OUTCOME, TURN_MASK, index=TURN_INDEX)
    none, _ = compute_grpo_turn_advantage(TURN_OUTCOME, TURN_MASK, index=TURN_INDEX, turns=None)
    ungraded = TurnRewards(scores=torch.zeros(3, 10), graded=torch.zeros(3, 10), turn_ids=TURN_IDS)
    zero, _ = compute_grpo_turn_advantage(TURN_OUTCOME, TURN_MASK, index=TURN_INDEX, turns=ungraded)
    torch.testing.assert_close(none, plain)
    torch.testing.assert_close(zero, plain)


def test_grpo_turn_subtracts_only_the_group_mean_when_asked():
    turns = TurnRewards(scores=TURN_SCORES, graded=TURN_GRADED, turn_ids=TURN_IDS)
    adv, _ = compute_grpo_turn_advantage(
        TURN_OUTCOME + TURN_SCORES, TURN_MASK, index=TURN_INDEX, turns=turns, norm_adv_by_std_in_grpo=False
    )
    # outcome ±0.5; row 0 turn 0: 0.5 + (0.5 - 0.5) = 0.5; row 1 turn 0: -0.5 + 0.5 = 0
    assert adv[0, 0].item() == pytest.approx(0.5, abs=1e-6)
    assert adv[1, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_turn_rewards_normalised_over_each_group_against_hand_computed_values():
    # group a's graded turns: 0.5, -0.5, 0.5 -> mean 1/6; group b has none
    centred = torch.zeros(3, 10)
    centred[0, 2], centred[0, 6], centred[1, 1] = 1 / 3, -2 / 3, 1 / 3
    same = normalize_turn_scores(TURN_SCORES, TURN_GRADED, TURN_INDEX, "none")
    assert same is TURN_SCORES
    torch.testing.assert_close(normalize_turn_scores(TURN_SCORES, TURN_GRADED, TURN_INDEX, "group_mean"), centred)
    # unbiased std over the three: sqrt((1/9 + 4/9 + 1/9) / 2) = 1/sqrt(3)
    z = normalize_turn_scores(TURN_SCORES, TURN_GRADED, TURN_INDEX, "group_z")
    torch.testing.assert_close(z, centred * math.sqrt(3), atol=1e-5, rtol=0)
    z_of_10x = normalize_turn_scores(10 * TURN_SCORES, TURN_GRADED, TURN_INDEX, "group_z")
    torch.testing.assert_close(z_of_10x, z)  # λ cancels
    mean_of_10x = normalize_turn_scores(10 * TURN_SCORES, TURN_GRADED, TURN_INDEX, "group_mean")
    torch.testing.assert_close(mean_of_10x, 10 * centred)  # λ stays a weight


def test_a_graded_turn_that_earned_zero_counts_in_its_groups_mean():
    # penalize_useless=false: a useless search is graded with reward 0; group a: 0.5, 0, 0.5 -> mean 1/3
    scores = torch.zeros(3, 10)
    scores[0, 2], scores[1, 1] = 0.5, 0.5
    graded = TURN_GRADED.clone()  # (0, 6) stays graded with its reward 0
    expected = torch.zeros(3, 10)
    expected[0, 2], expected[0, 6], expected[1, 1] = 1 / 6, -1 / 3, 1 / 6
    torch.testing.assert_close(normalize_turn_scores(scores, graded, TURN_INDEX, "group_mean"), expected)


def test_a_unanimous_group_or_a_lone_graded_turn_earns_nothing_once_normalised():
    unanimous = torch.zeros(3, 10)
    unanimous[0, 2], unanimous[0, 6], unanimous[1, 1], unanimous[2, 0] = -0.5, -0.5, -0.5, 0.5
    graded = (unanimous != 0).long()
    for norm in ("group_mean", "group_z"):
        normalised = normalize_turn_scores(unanimous, graded, TURN_INDEX, norm)
        assert (normalised == 0).all(), norm  # every search of a useless; b's one graded turn
    with pytest.raises(ValueError, match="turn reward norm"):
        normalize_turn_scores(unanimous, graded, TURN_INDEX, "batch_z")
    with pytest.raises(ValueError, match="index"):
        normalize_turn_scores(unanimous, graded, None, "group_mean")


def test_a_policy_loss_named_module_function_is_imported_where_it_is_used():
    assert get_policy_loss_fn("verl.algos.core_algos:compute_policy_loss") is compute_policy_loss
    with pytest.raises(AttributeError, match="policy_loss.loss_mode: module 'verl.algos.core_algos' has no attribute"):
        get_policy_loss_fn("verl.algos.core_algos:no_such_loss")


def test_a_policy_loss_registered_in_the_launching_script_is_refused_by_the_config_check(monkeypatch):
    from verl.algos import core_algos
    from verl.config import PolicyLossConfig

    monkeypatch.setattr(core_algos, "POLICY_LOSS_REGISTRY", dict(core_algos.POLICY_LOSS_REGISTRY))

    def scripted(old_log_prob, log_prob, advantages, response_mask, **_):
        return compute_policy_loss(old_log_prob, log_prob, advantages, response_mask, cliprange=0.1)

    scripted.__module__ = "__main__"  # as if defined in the script that starts the run
    register_policy_loss("scripted")(scripted)
    with pytest.raises(ValueError, match="registered in the launching script, which the workers do not import"):
        PolicyLossConfig("scripted").check("actor_rollout_ref.actor.policy_loss")
    PolicyLossConfig("verl.algos.core_algos:compute_policy_loss").check("actor_rollout_ref.actor.policy_loss")
