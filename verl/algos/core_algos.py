"""Advantage estimators, PPO losses and KL control used by the trainer.

Shape conventions: B is the number of responses in the batch and T the padded
response length. ``response_mask`` is [B, T] with non-zero entries at tokens the
policy generated; zeros mark padding and also observation tokens that the
environment spliced into a response, so zeros may sit between ones. Every
advantage estimator returns ``(advantages, returns)``, both [B, T] and zero
wherever the mask is zero.

Every registered estimator is called the same way,
``fn(token_level_rewards, response_mask, index=..., values=..., turns=..., gamma=..., lam=...,
norm_adv_by_std_in_grpo=...)``, and takes the keywords it needs (``**_`` absorbs the rest):
``index`` is the [B] group key of each response (its prompt's uid), ``values`` the [B, T]
critic values (None without a critic), ``turns`` the turn-level rewards of multi-turn responses
(``TurnRewards``; None without them), which are also part of ``token_level_rewards``.

Every registered policy loss is called the same way too, ``fn(old_log_prob, log_prob, advantages,
response_mask, cliprange=..., cliprange_low=..., cliprange_high=..., clip_ratio_c=...,
loss_agg_mode=...)`` (all [B, T] tensors; a loss that needs fewer keywords absorbs the rest with
``**_``), and returns ``(pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower)``, scalars.

Over 400 lines on purpose: the method's math stays in one place (estimators, losses, KL), each
function checked against hand-computed values in tests; trainer and workers only call it.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from verl.utils.import_utils import load_object
from verl.utils.torch_functional import masked_mean, masked_sum, masked_whiten

AdvantageEstimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
PolicyLoss = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TurnRewards:
    """Rewards of single turns of multi-turn responses (e.g. a critic's grade of each search), all
    [B, T]: ``scores`` holds a graded turn's reward on its last sampled token and 0 elsewhere,
    ``graded`` is 1 on those tokens, ``turn_ids`` numbers the turn each sampled token belongs to
    (0, 1, ...) and is -1 on observation tokens and padding."""

    scores: torch.Tensor
    graded: torch.Tensor
    turn_ids: torch.Tensor


Fn = TypeVar("Fn", bound=Callable[..., Any])
ADV_ESTIMATOR_REGISTRY: dict[str, AdvantageEstimator] = {}


def _registering(registry: dict[str, Fn], what: str, name: str) -> Callable[[Fn], Fn]:
    """A decorator adding a function to ``registry`` as ``name``; a name taken by another is refused."""

    def decorator(fn: Fn) -> Fn:
        if registry.get(name, fn) is not fn:
            raise ValueError(f"{what} {name!r} is already registered")
        registry[name] = fn
        return fn

    return decorator


def _registered(registry: dict[str, Fn], what: str, plural: str, name: str) -> Fn:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known {plural}: {sorted(registry)}")
    return registry[name]


def register_adv_est(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator that makes an advantage estimator reachable by ``name``."""
    return _registering(ADV_ESTIMATOR_REGISTRY, "advantage estimator", name)


def get_adv_estimator_fn(name: str) -> AdvantageEstimator:
    """Return the advantage estimator registered as ``name``."""
    return _registered(ADV_ESTIMATOR_REGISTRY, "advantage estimator", "estimators", name)


def _zero_masked(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(response_mask.bool(), values, torch.zeros_like(values))


def _discounted_reward_to_go(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """[B, T] sum_{k >= t, valid} gamma^(number of valid tokens between t and k) * r_k.

    Masked positions are skipped: they add no reward and do not advance the
    discount. The result at masked positions is zero.
    """
    valid = response_mask.bool()
    running = torch.zeros_like(token_level_rewards[:, 0])
    columns = []
    for t in reversed(range(token_level_rewards.shape[1])):
        running = torch.where(valid[:, t], token_level_rewards[:, t] + gamma * running, running)
        columns.append(running)
    return _zero_masked(torch.stack(columns[::-1], dim=1), response_mask)


def _sequence_scores(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B] total reward of each response, counting valid tokens only."""
    return masked_sum(token_level_rewards, response_mask, axis=-1)


def _group_ids(index: Sequence[Any] | np.ndarray | None, scores: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[B] dense integer id per distinct entry of ``index``, and the number of groups."""
    if index is None:
        raise ValueError("this estimator compares responses to the same prompt: it needs index (the prompt uids)")
    # tolist() turns numpy/torch scalars into hashable Python values
    keys = index.tolist() if isinstance(index, (np.ndarray, torch.Tensor)) else list(index)
    if len(keys) != scores.shape[0]:
        raise ValueError(f"index has {len(keys)} entries but the batch has {scores.shape[0]} rows")
    ids: dict[Any, int] = {}
    group = [ids.setdefault(key, len(ids)) for key in keys]
    return torch.tensor(group, dtype=torch.long, device=scores.device), len(ids)


def _group_sum(per_row: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[B] sum of ``per_row`` over each row's group, broadcast back to the rows."""
    totals = torch.zeros(num_groups, dtype=per_row.dtype, device=per_row.device)
    return totals.index_add(0, group, per_row)[group]


@register_adv_est("gae")
@torch.no_grad()
def compute_gae_advantage_return(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    values: torch.Tensor | None,
    gamma: float,
    lam: float,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, whitened over valid tokens.

    Runs backwards over the valid tokens only: at a masked position the next
    value and the running advantage pass through unchanged, so an observation
    token inside a response behaves as if it were absent.

    Args:
        token_level_rewards: [B, T].
        response_mask: [B, T].
        values: [B, T] critic values.
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        advantages: [B, T] whitened GAE.
        returns: [B, T] un-whitened GAE + values.
    """
    if values is None:
        raise ValueError("gae needs the critic's values")
    values = values.to(token_level_rewards.dtype)
    valid = response_mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    running_adv = torch.zeros_like(values[:, 0])
    columns = []
    for t in reversed(range(values.shape[1])):
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        running_adv = torch.where(valid[:, t], delta + gamma * lam * running_adv, running_adv)
        next_value = torch.where(valid[:, t], values[:, t], next_value)
        columns.append(running_adv)
    advantages = torch.stack(columns[::-1], dim=1)
    returns = _zero_masked(advantages + values, response_mask)
    advantages = _zero_masked(masked_whiten(advantages, response_mask), response_mask)
    return advantages, returns


@register_adv_est("grpo")
@torch.no_grad()
def compute_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: np.ndarray | None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantage: each response's score against its group's.

    Args:
        token_level_rewards: [B, T]; a response's score is the sum over its
            valid tokens.
        response_mask: [B, T].
        index: [B] group key per response (e.g. the prompt uid).
        epsilon: added to the group std before dividing.
        norm_adv_by_std_in_grpo: divide by the (unbiased) group std; if False
            only the group mean is subtracted.

    Returns:
        advantages: [B, T] the row's advantage on every valid token; 0 for a
            response alone in its group.
        returns: [B, T] equal to advantages.
    """
    scores = _sequence_scores(token_level_rewards, response_mask)
    group, num_groups = _group_ids(index, scores)
    count = _group_sum(torch.ones_like(scores), group, num_groups)
    centered = scores - _group_sum(scores, group, num_groups) / count
    if norm_adv_by_std_in_grpo:
        # a singleton has no spread; var 0 leaves its (zero) centred score at 0
        var = _group_sum(centered**2, group, num_groups) / (count - 1).clamp_min(1)
        centered = centered / (var.sqrt() + epsilon)
    advantages = _zero_masked(centered.unsqueeze(-1).expand_as(token_level_rewards), response_mask)
    return advantages, advantages


@register_adv_est("reinforce")
@torch.no_grad()
def compute_reinforce_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain REINFORCE: the discounted reward-to-go, no baseline, no normalisation.

    Args:
        token_level_rewards: [B, T].
        response_mask: [B, T]; masked positions add no reward and do not
            advance the discount.
        gamma: discount factor.

    Returns:
        advantages: [B, T] reward-to-go.
        returns: [B, T] equal to advantages.
    """
    returns = _discounted_reward_to_go(token_level_rewards, response_mask, gamma)
    return returns, returns


@register_adv_est("reinforce_plus_plus")
@torch.no_grad()
def compute_reinforce_plus_plus_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: the discounted reward-to-go, whitened over valid tokens.

    Args:
        token_level_rewards: [B, T].
        response_mask: [B, T]; masked positions add no reward and do not
            advance the discount.
        gamma: discount factor.

    Returns:
        advantages: [B, T] whitened reward-to-go.
        returns: [B, T] reward-to-go.
    """
    returns = _discounted_reward_to_go(token_level_rewards, response_mask, gamma)
    advantages = _zero_masked(masked_whiten(returns, response_mask), response_mask)
    return advantages, returns


@register_adv_est("rloo")
@torch.no_grad()
def compute_rloo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: np.ndarray | None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out baseline: score minus the mean score of the group's other rows.

    Args:
        token_level_rewards: [B, T]; a response's score is the sum over its
            valid tokens.
        response_mask: [B, T].
        index: [B] group key per response (e.g. the prompt uid).

    Returns:
        advantages: [B, T] the row's advantage on every valid token; 0 for a
            response alone in its group.
        returns: [B, T] equal to advantages.
    """
    scores = _sequence_scores(token_level_rewards, response_mask)
    group, num_groups = _group_ids(index, scores)
    count = _group_sum(torch.ones_like(scores), group, num_groups)
    others_mean = (_group_sum(scores, group, num_groups) - scores) / (count - 1).clamp_min(1)
    per_row = torch.where(count > 1, scores - others_mean, torch.zeros_like(scores))
    advantages = _zero_masked(per_row.unsqueeze(-1).expand_as(token_level_rewards), response_mask)
    return advantages, advantages


TURN_REWARD_NORMS = ("none", "group_mean", "group_z")


@torch.no_grad()
def normalize_turn_scores(
    scores: torch.Tensor,
    graded: torch.Tensor,
    index: Sequence[Any] | np.ndarray | None,
    norm: str,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Turn rewards normalised over the graded turns of each group (the responses to one prompt).

    With s the graded turns' rewards of group g (every graded turn of every response of g):

        none:       s                                   (the weight is a real weight)
        group_mean: s - mean_g s                        (a search is rewarded against the group's
                                                         typical one: the share of useless searches
                                                         no longer moves searching as a whole)
        group_z:    (s - mean_g s) / (std_g s + eps)    (unbiased std; the weight cancels)

    A group with one graded turn gets 0 under both; ungraded tokens stay 0.

    Args:
        scores: [B, T] a graded turn's reward on its last sampled token, 0 elsewhere.
        graded: [B, T] 1 on those tokens.
        index: [B] group key per response (the prompt uid); unused with ``none``.
        norm: one of ``TURN_REWARD_NORMS``.

    Returns:
        [B, T] the normalised rewards, on the same tokens.
    """
    if norm not in TURN_REWARD_NORMS:
        raise ValueError(f"turn reward norm must be one of {TURN_REWARD_NORMS}, got {norm!r}")
    if norm == "none":
        return scores
    group, num_groups = _group_ids(index, scores)
    is_graded = graded.bool()
    count = _group_sum(is_graded.sum(-1).to(scores.dtype), group, num_groups)
    mean = _group_sum((scores * is_graded).sum(-1), group, num_groups) / count.clamp_min(1)
    centred = (scores - mean[:, None]) * is_graded
    if norm == "group_mean":
        return centred
    variance = _group_sum((centred**2).sum(-1), group, num_groups) / (count - 1).clamp_min(1)
    return centred / (variance.sqrt()[:, None] + epsilon)


@register_adv_est("grpo_turn")
@torch.no_grad()
def compute_grpo_turn_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: np.ndarray | None,
    turns: TurnRewards | None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO with turn rewards: the group-normalised outcome advantage plus, on every sampled token
    of turn t, the sum of the turn rewards of turn t and every later turn.

    With R_i the outcome of response i (its token-level rewards minus its turn rewards, summed)
    and s_{i,k} the reward of its graded turn k (already scaled by its weight, e.g. λ · (±1)),
    over the group g of i's prompt:

        A_{i,t} = (R_i - mean_g R) / (std_g R + eps) + sum_{k >= t, graded} s_{i,k}

    The turn term is not normalised: its weight stays the weight it was given (a z-score over the
    group would cancel it), and a group whose graded turns all earn the same reward still learns
    from them. Turns after the last graded one get the outcome term only; observation tokens and
    padding get 0.

    Args:
        token_level_rewards: [B, T], turn rewards included.
        response_mask: [B, T].
        index: [B] group key per response (the prompt uid).
        turns: the turn rewards inside ``token_level_rewards``; None: plain GRPO.
        epsilon: added to the outcome's std before dividing.
        norm_adv_by_std_in_grpo: divide the outcome term by the group std; if False only the mean is
            subtracted.

    Returns:
        advantages: [B, T]; returns: [B, T] equal to advantages.
    """
    outcome = token_level_rewards if turns is None else token_level_rewards - turns.scores
    advantages = compute_grpo_outcome_advantage(
        outcome, response_mask, index=index, epsilon=epsilon, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo
    )[0]
    if turns is None:
        return advantages, advantages
    valid = response_mask.bool()
    graded = turns.graded.bool() & valid
    turn_ids = torch.where(valid, turns.turn_ids.long(), torch.full_like(turns.turn_ids.long(), -1))
    per_turn = torch.zeros(len(turn_ids), int(turn_ids.max().clamp_min(0)) + 1, dtype=advantages.dtype)
    rows, columns = graded.nonzero(as_tuple=True)
    per_turn.index_put_(
        (rows, turn_ids[rows, columns]), turns.scores[rows, columns].to(advantages.dtype), accumulate=True
    )
    to_go = per_turn.flip(-1).cumsum(-1).flip(-1)  # sum over this turn and every later one
    turn_part = to_go.gather(1, turn_ids.clamp_min(0)) * (turn_ids >= 0)
    advantages = _zero_masked(advantages + turn_part, response_mask)
    return advantages, advantages


KL_PENALTY_TYPES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled log-probs.

    Args:
        logprob: [B, T] policy log-probs of the sampled tokens.
        ref_logprob: [B, T] reference log-probs of the same tokens.
        kl_penalty: "kl"/"k1" (log-ratio), "abs" (its magnitude), "mse"/"k2"
            (half squared log-ratio) or "low_var_kl"/"k3" (exp(d) - d - 1 with
            d = ref - policy clamped to [-20, 20], the result clamped to [-10, 10]).

    Returns:
        [B, T] penalty per token.
    """
    log_ratio = logprob - ref_logprob
    if kl_penalty in ("kl", "k1"):
        return log_ratio
    if kl_penalty == "abs":
        return log_ratio.abs()
    if kl_penalty in ("mse", "k2"):
        return 0.5 * log_ratio.square()
    if kl_penalty in ("low_var_kl", "k3"):
        # d is clamped before exp(): a -inf policy log-prob would otherwise give inf - inf = NaN, and
        # a NaN gradient even where the mask later zeroes the value.
        d = torch.clamp(-log_ratio, min=-20, max=20)
        return torch.clamp(torch.exp(d) - d - 1, min=-10, max=10)
    raise ValueError(f"unknown kl_penalty {kl_penalty!r}; valid names: {list(KL_PENALTY_TYPES)}")


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    Args:
        loss_mat: [B, T] per-token loss.
        loss_mask: [B, T].
        loss_agg_mode: "token-mean" (mean over all valid tokens),
            "seq-mean-token-sum" (mean over rows of each row's token sum) or
            "seq-mean-token-mean" (mean over rows of each row's token mean).
            The seq-mean modes skip rows without a valid token.

    Returns:
        Scalar; 0 when no token is valid.
    """
    if loss_agg_mode == "token-mean":
        return masked_mean(loss_mat, loss_mask)
    if loss_agg_mode == "seq-mean-token-sum":
        per_row = masked_sum(loss_mat, loss_mask, axis=-1)
    elif loss_agg_mode == "seq-mean-token-mean":
        per_row = masked_mean(loss_mat, loss_mask, axis=-1)
    else:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; valid modes: {list(LOSS_AGG_MODES)}")
    return masked_mean(per_row, loss_mask.bool().any(dim=-1))


POLICY_LOSS_REGISTRY: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator that makes a policy loss reachable by ``name`` (``actor.policy_loss.loss_mode``)."""
    return _registering(POLICY_LOSS_REGISTRY, "policy loss", name)


def get_policy_loss_fn(name: str) -> PolicyLoss:
    """Return the policy loss registered as ``name``, or the function ``module:function`` names:
    workers import that module themselves, where a loss registered in the driver's script is unknown."""
    if ":" in name:
        loss: PolicyLoss = load_object(name, "actor_rollout_ref.actor.policy_loss.loss_mode")
        return loss
    return _registered(POLICY_LOSS_REGISTRY, "policy loss", "policy losses", name)


@register_policy_loss("vanilla")
def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float | None = None,
    cliprange_low: float | None = None,
    cliprange_high: float | None = None,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate with asymmetric clipping and dual clip.

    ratio = exp(log_prob - old_log_prob) is clipped to
    [1 - cliprange_low, 1 + cliprange_high]. For negative advantages the loss
    is further capped at -advantage * clip_ratio_c, so a huge ratio on a bad
    token cannot dominate the update.

    Args:
        old_log_prob: [B, T] log-probs under the policy that sampled the data.
        log_prob: [B, T] log-probs under the current policy.
        advantages: [B, T].
        response_mask: [B, T].
        cliprange: default for both clip bounds.
        cliprange_low: lower clip bound; falls back to ``cliprange``.
        cliprange_high: upper clip bound; falls back to ``cliprange``.
        clip_ratio_c: dual-clip constant, must exceed 1.
        loss_agg_mode: see ``agg_loss``.

    Returns:
        pg_loss: scalar loss.
        pg_clipfrac: scalar, fraction of valid tokens where the clipped term won.
        ppo_kl: scalar, masked mean of old_log_prob - log_prob.
        pg_clipfrac_lower: scalar, fraction of valid tokens where the dual clip
            bound was active.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be greater than 1, got {clip_ratio_c}")
    low = cliprange if cliprange_low is None else cliprange_low
    high = cliprange if cliprange_high is None else cliprange_high
    if low is None or high is None:
        raise ValueError("compute_policy_loss needs cliprange or both cliprange_low and cliprange_high")

    log_ratio = log_prob - old_log_prob
    # exp of an unbounded log-ratio can overflow to inf and poison the gradient
    ratio = torch.exp(torch.clamp(log_ratio, min=-20.0, max=20.0))
    ppo_kl = masked_mean(-log_ratio.detach(), response_mask)

    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - low, 1.0 + high)
    clip_max = torch.maximum(unclipped, clipped)
    pg_clipfrac = masked_mean((clipped > unclipped).float(), response_mask)

    dual_bound = -advantages * clip_ratio_c
    negative = advantages < 0
    pg_losses = torch.where(negative, torch.minimum(clip_max, dual_bound), clip_max)
    pg_clipfrac_lower = masked_mean((negative & (clip_max > dual_bound)).float(), response_mask)

    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode)
    return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower


def compute_value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: the new prediction may move at most ``cliprange_value``
    away from the rollout-time value before the loss stops rewarding the move.

    Args:
        vpreds: [B, T] current critic predictions.
        returns: [B, T] regression targets.
        values: [B, T] critic values recorded at rollout time.
        response_mask: [B, T].
        cliprange_value: half-width of the clip window around ``values``.
        loss_agg_mode: see ``agg_loss``.

    Returns:
        vf_loss: scalar, 0.5 * agg(max(unclipped, clipped) squared error).
        vf_clipfrac: scalar, fraction of valid tokens where the clipped error won.
    """
    vpred_clipped = values + torch.clamp(vpreds - values, -cliprange_value, cliprange_value)
    unclipped = (vpreds - returns).square()
    clipped = (vpred_clipped - returns).square()
    vf_loss = 0.5 * agg_loss(torch.maximum(unclipped, clipped), response_mask, loss_agg_mode)
    vf_clipfrac = masked_mean((clipped > unclipped).float(), response_mask)
    return vf_loss, vf_clipfrac


class FixedKLController:
    """Constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """The coefficient is fixed; observations are ignored."""


class AdaptiveKLController:
    """Proportional controller steering the observed KL towards ``target_kl``."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int):
        self.value = init_kl_coef
        self.target = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Scale the coefficient by 1 + clip(kl / target - 1, ±0.2) * n_steps / horizon."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class KLControlSettings(Protocol):
    """What a KL controller is built from (``verl.config.KLControlConfig`` has these fields: the
    config imports this module to check names against its registries, never the other way)."""

    type: str
    kl_coef: float
    target_kl: float
    horizon: int


def get_kl_controller(kl_ctrl: KLControlSettings) -> FixedKLController | AdaptiveKLController:
    """Build a KL controller from ``algorithm.kl_ctrl``."""
    if kl_ctrl.type == "fixed":
        return FixedKLController(kl_coef=kl_ctrl.kl_coef)
    if kl_ctrl.type == "adaptive":
        if kl_ctrl.horizon <= 0:
            raise ValueError(f"adaptive KL control needs horizon > 0, got {kl_ctrl.horizon}")
        return AdaptiveKLController(init_kl_coef=kl_ctrl.kl_coef, target_kl=kl_ctrl.target_kl, horizon=kl_ctrl.horizon)
    raise ValueError(f"unknown kl_ctrl.type {kl_ctrl.type!r}; valid types: ['fixed', 'adaptive']")
