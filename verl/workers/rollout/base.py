"""The rollout interface: token ids in, sampled token ids (with log-probs) out.

Backends (transformers ``generate``, an in-process vLLM engine) receive the actor's weights through
``update_weights`` and never see text, so the sampled ids reach the trainer exactly as they were
sampled, with the log-probs of the distribution they were drawn from. ``generate_batch`` runs any
backend on a left-padded batch and packs the results (``build_sequences``): the workers and the
evaluation both call it.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from verl.protocol import DataProto
from verl.utils.batch_schema import Key, sequence_tensors
from verl.utils.torch_functional import right_pad


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k filtering
    n: int = 1  # samples per prompt, returned next to each other
    stop: list[str] = field(default_factory=list)  # generation of a row ends after any of these strings
    greedy: bool = False


@dataclass
class GenerationResult:
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each sampled token under the sampling distribution
    finish_reason: Literal["stop", "length"]  # stop: eos or a stop string; length: max_new_tokens


class BaseRollout(ABC):
    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationResult]:
        """Returns ``len(prompts) * params.n`` results: the n samples of prompt i at i*n … i*n+n-1."""

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Loads the actor's current full weights (Hugging Face parameter names)."""

    @abstractmethod
    def sleep(self) -> None:
        """Frees what the engine can give up while the actor trains."""

    @abstractmethod
    def wake_up(self) -> None:
        """Takes back what ``sleep`` freed; called before generating."""

    def needs_weights(self) -> bool:
        """Whether ``sleep`` dropped the weights, so that a sync must come before the next generation."""
        return False


def build_sequences(prompts: DataProto, results, n: int, response_length: int, pad_id: int) -> DataProto:
    """Packs rollout results next to their (left-padded) prompts, right-padding the responses."""
    prompt_ids = prompts.batch[Key.INPUT_IDS].repeat_interleave(n, dim=0)
    prompt_mask = prompts.batch[Key.ATTENTION_MASK].repeat_interleave(n, dim=0)
    sampled = [r.token_ids for r in results]
    responses = right_pad(sampled, response_length, pad_id, torch.long)
    response_mask = right_pad([[1] * len(ids) for ids in sampled], response_length, 0, torch.long)
    tensors = sequence_tensors(prompt_ids, prompt_mask, responses, response_mask)
    tensors[Key.ROLLOUT_LOG_PROBS] = right_pad([r.logprobs for r in results], response_length, 0.0, torch.float32)
    out = DataProto.from_dict(
        tensors=tensors,
        non_tensors={"finish_reason": np.array([r.finish_reason for r in results], dtype=object)},
        meta_info=dict(prompts.meta_info),
    )
    extra = {k: v for k, v in prompts.non_tensor_batch.items()}
    if extra:
        out = out.union(DataProto.from_dict(non_tensors=extra).repeat(n, interleave=True))
    return out


def generate_batch(rollout, prompts: DataProto, params: SamplingParams) -> DataProto:
    """Runs a rollout engine on a left-padded prompt batch and packs the results. A row without a
    prompt token is not generated for and gets an empty response: a multi-turn loop sends its
    finished rows that way, so every row stays on the worker whose engine cached its context."""
    mask = prompts.batch[Key.ATTENTION_MASK].bool()
    rows = [row[m].tolist() for row, m in zip(prompts.batch[Key.INPUT_IDS], mask, strict=True)]
    generated = iter(rollout.generate([row for row in rows if row], params))
    nothing = GenerationResult(token_ids=[], logprobs=[], finish_reason="stop")
    results = [next(generated) if row else nothing for row in rows for _ in range(params.n)]
    return build_sequences(prompts, results, params.n, params.max_new_tokens, rollout.pad_id)
