"""Outcome reward of a search trajectory: the final ``<answer>`` scored against the gold answers.

Three metrics, all on normalised text (lowercase, no punctuation, no articles, single spaces):
exact match, cover exact match (a gold answer appears as whole words inside the prediction) and
token-level F1. ``agent.reward_metric`` picks the one that trains; all are logged.

The answer scored is the one the rollout accepted (``accepted_answer``, recorded by the generation
manager when a turn's first action is a complete ``<answer>``), never one re-parsed from the
joined response text: a row the rollout finished without an answer scores 0 on every metric.
"""

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from verl.protocol import DataProto
from verl.trainer.reward import last_valid_positions
from verl.utils.batch_schema import Key
from verl.utils.reward_score.qa import METRICS, Golds
from zerosearch.data.fields import row_golden_answers

if TYPE_CHECKING:  # the config module lists this module's metrics
    from zerosearch.config import ZeroSearchConfig


def score_answer(answer: str | None, golden_answers: Golds) -> dict[str, float]:
    """All metrics of one accepted answer (``None``: the row gave none): ``em``, ``cover_em``, ``f1``
    and ``answered`` (1.0/0.0)."""
    scores = {name: metric(answer, golden_answers) for name, metric in METRICS.items()}
    scores["answered"] = float(answer is not None)
    return scores


class QARewardManager:
    """Engine reward plug-in (``reward_model.reward_manager=zerosearch.reward:QARewardManager``):
    scores each row's accepted answer and puts the ``agent.reward_metric`` score on the row's last
    sampled token."""

    def __init__(self, config: "ZeroSearchConfig", tokenizer: Any):
        metric = config.agent.reward_metric
        if metric not in METRICS:
            raise ValueError(f"agent.reward_metric={metric!r} is not one of {sorted(METRICS)}")
        self.metric = metric

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Batch: ``responses`` [B, R], ``response_mask`` [B, R] (0 on observations), and per row
        ``accepted_answer`` (str or None) and the gold answers. Returns scores [B, R] float32 and
        per-row float arrays [B] ``score``, ``em``, ``cover_em``, ``f1``, ``answered``."""
        columns = data.non_tensor_batch
        if "accepted_answer" not in columns:
            raise ValueError(
                "QARewardManager scores the answer the rollout accepted, but the batch has no "
                "'accepted_answer'; use actor_rollout_ref.rollout.generation_manager="
                "zerosearch.generation:SearchGenerationManager"
            )
        response_mask = data.batch[Key.RESPONSE_MASK]
        scores = torch.zeros(response_mask.shape, dtype=torch.float32)
        last = last_valid_positions(response_mask)
        rows = []
        for i in range(len(data)):
            try:
                golds = row_golden_answers(columns, i)
            except ValueError as e:
                source = columns["data_source"][i] if "data_source" in columns else "?"
                raise ValueError(f"QARewardManager: batch row {i} (data_source={source}): {e}") from e
            row = score_answer(columns["accepted_answer"][i], golds)
            row["score"] = row[self.metric]
            rows.append(row)
            if response_mask[i].any():
                scores[i, last[i]] = row["score"]
        extra = {
            key: np.array([row[key] for row in rows], dtype=np.float64)
            for key in ("score", "em", "cover_em", "f1", "answered")
        }
        return scores, extra
