"""The rollout interface: token ids in, sampled token ids (with log-probs) out.

Backends (transformers ``generate``, an in-process vLLM engine) receive the actor's weights through
``update_weights`` and never see text, so the sampled ids reach the trainer exactly as they were
sampled, with the log-probs of the distribution they were drawn from.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch


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
        """Takes back what ``sleep`` freed; called before generating and before a weight sync."""
