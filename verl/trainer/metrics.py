"""Per-step metrics computed on the driver from a finished batch."""

import time
from contextlib import contextmanager

import numpy as np
import torch

from verl.protocol import DataProto
from verl.utils.batch_schema import Key
from verl.utils.torch_functional import masked_mean


@contextmanager
def timer(name: str, timing: dict[str, float]):
    """Adds the seconds the block takes to ``timing[name]`` (so a name timed twice sums)."""
    start = time.perf_counter()
    yield
    timing[name] = timing.get(name, 0.0) + time.perf_counter() - start


def _stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    values = values.float()
    if values.numel() == 0:
        return {}
    return {
        f"{prefix}/mean": values.mean().item(),
        f"{prefix}/max": values.max().item(),
        f"{prefix}/min": values.min().item(),
    }


def compute_data_metrics(batch: DataProto, use_critic: bool) -> dict[str, float]:
    b = batch.batch
    response_mask = b[Key.RESPONSE_MASK].float()
    prompt_width = b[Key.PROMPTS].shape[1]
    prompt_length = b[Key.ATTENTION_MASK][:, :prompt_width].sum(-1)
    # Whole response span (sampled tokens and any observations) as it occupies the context.
    response_length = b[Key.ATTENTION_MASK][:, prompt_width:].sum(-1)
    valid = response_mask.bool()
    metrics = {
        **_stats("reward/score", b[Key.TOKEN_LEVEL_SCORES].sum(-1)),
        **_stats("reward/reward", b[Key.TOKEN_LEVEL_REWARDS].sum(-1)),
        **_stats("critic/advantages", b[Key.ADVANTAGES][valid]),
        **_stats("critic/returns", b[Key.RETURNS][valid]),
        **_stats("response_length", response_length),
        **_stats("prompt_length", prompt_length),
        "response_length/clip_ratio": (response_length >= b[Key.RESPONSES].shape[1]).float().mean().item(),
        "response_length/sampled_tokens_mean": response_mask.sum(-1).mean().item(),
    }
    if Key.ENTROPYS in b.keys():
        metrics["actor/entropy"] = masked_mean(b[Key.ENTROPYS], response_mask).item()
    if use_critic:
        values = b[Key.VALUES][valid]
        returns = b[Key.RETURNS][valid]
        metrics.update(_stats("critic/values", values))
        if returns.numel() > 1:
            metrics["critic/vf_explained_var"] = (1 - (returns - values).var() / (returns.var() + 1e-5)).item()
    return metrics


def compute_rollout_log_prob_metrics(batch: DataProto) -> dict[str, float]:
    """How far the log-probs the rollout sampled with lie from the actor's old log-probs of the same
    tokens: 0 up to numerics when both see one distribution; large when the rollout filtered
    (top-k/top-p, which the actor does not apply) or its weights or precision differ."""
    b = batch.batch
    if Key.ROLLOUT_LOG_PROBS not in b.keys():
        return {}
    return _log_prob_gap(b[Key.ROLLOUT_LOG_PROBS], b[Key.OLD_LOG_PROBS], b[Key.RESPONSE_MASK].bool())


def first_pass_metrics(batch: DataProto, first_pass: DataProto) -> dict[str, float]:
    """With the rollout's log-probs standing in for the old ones (old_log_prob=from_rollout), the same comparison
    against the actor's own log-probs where the update measured them before its first step (the
    rows of its first mini-batch, ``measured``), and the policy's entropy there."""
    mask = batch.batch[Key.RESPONSE_MASK].bool() & first_pass.batch[Key.MEASURED].bool()[:, None]
    if not mask.any():
        return {}
    return {
        **_log_prob_gap(batch.batch[Key.ROLLOUT_LOG_PROBS], first_pass.batch[Key.OLD_LOG_PROBS], mask),
        "actor/entropy": masked_mean(first_pass.batch[Key.ENTROPYS], mask).item(),
    }


def _log_prob_gap(rollout: torch.Tensor, actor: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    gap = (rollout - actor).abs()[mask]
    if gap.numel() == 0:
        return {}
    return {"rollout/log_prob_diff_mean": gap.mean().item(), "rollout/log_prob_diff_max": gap.max().item()}


def compute_throughput_metrics(batch: DataProto, step_seconds: float, world_size: int) -> dict[str, float]:
    tokens = batch.batch[Key.ATTENTION_MASK].sum().item()
    return {
        "perf/total_num_tokens": tokens,
        "perf/time_per_step": step_seconds,
        "perf/throughput": tokens / (step_seconds * world_size),
    }


def reward_extra_metrics(prefix: str, extra: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of the numeric per-row values a reward manager returned."""
    out = {}
    for key, values in extra.items():
        try:
            out[f"{prefix}/{key}/mean"] = float(np.mean(values.astype(np.float64)))
        except (TypeError, ValueError):
            continue  # non-numeric extras (e.g. predicted strings) are kept in rollout dumps only
    return out
