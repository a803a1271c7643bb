"""Reward managers: turn a batch of responses into token-level scores (a plug-in,
``reward_model.reward_manager``).

A reward manager is built as ``Manager(config, tokenizer)`` and called on a batch; it returns
``(scores [B, R], extra)`` where ``extra`` maps metric names to one value per row and holds at
least ``score`` (each row's scalar outcome).
"""

from typing import Any, Protocol

import numpy as np
import torch

from verl.protocol import DataProto
from verl.utils.batch_schema import Key
from verl.utils.import_utils import load_function_from
from verl.utils.reward_score import default_compute_score


class RewardManager(Protocol):
    """The reward plug-in: a finished batch in; token-level scores [B, R] (float32, dense or on
    the last sampled token) and per-row metrics out, ``extra["score"]`` the row's outcome."""

    def __init__(self, config: Any, tokenizer: Any) -> None: ...

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]: ...


def last_valid_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last sampled token (0 for an empty response), [B]."""
    positions = torch.arange(response_mask.shape[1]).expand_as(response_mask)
    return (positions * response_mask.long()).max(dim=1).values


class RuleRewardManager:
    """Scores each response with ``compute_score(data_source, solution_str, ground_truth, extra_info)``,
    which returns a float or a dict with a ``score`` key and further per-row metrics: the
    ``custom_reward_function``, or without one the built-in score of the row's data source
    (``verl.utils.reward_score``). The score is placed on the response's last sampled token."""

    def __init__(self, config, tokenizer):
        cfg = config.custom_reward_function
        self.compute_score = (
            load_function_from(cfg.path, cfg.name, "custom_reward_function") if cfg.path else default_compute_score
        )
        self.tokenizer = tokenizer

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        responses = data.batch[Key.RESPONSES]
        response_mask = data.batch[Key.RESPONSE_MASK]
        prompt_width = data.batch[Key.PROMPTS].shape[1]
        # Text of the whole response, observations included (attention mask), as the task sees it.
        response_attention = data.batch[Key.ATTENTION_MASK][:, prompt_width:].bool()
        scores = torch.zeros(responses.shape, dtype=torch.float32)
        last = last_valid_positions(response_mask)
        extra: dict[str, list] = {}
        for i in range(len(data)):
            text = self.tokenizer.decode(responses[i][response_attention[i]], skip_special_tokens=True)
            reward_model = data.non_tensor_batch["reward_model"][i] or {}
            result = self.compute_score(
                data_source=data.non_tensor_batch["data_source"][i],
                solution_str=text,
                ground_truth=reward_model.get("ground_truth"),
                extra_info=data.non_tensor_batch["extra_info"][i],
            )
            result = dict(result) if isinstance(result, dict) else {"score": result}
            score = float(result["score"])
            for key, value in result.items():
                extra.setdefault(key, []).append(value)
            if response_mask[i].any():
                scores[i, last[i]] = score
        return scores, {k: np.array(v) for k, v in extra.items()}
