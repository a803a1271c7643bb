"""Rollout with transformers ``generate`` on an unsharded copy of the policy (CPU or GPU).

A multi-turn loop sends, each turn, its rows' whole context again (the last prompt, what was
sampled, the observation). The rollout keeps the KV cache of its last call: when every new prompt
begins with the tokens of one of the last call's rows, only the new tokens are computed and the
cached positions are reused, as vLLM's prefix cache does. Positions a row does not use (its left
padding, what was generated after its end) stay in the cache, masked.
"""

import inspect
import typing
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList, StopStringCriteria

from verl.utils.torch_functional import left_pad
from verl.workers.rollout.base import BaseRollout, GenerationResult, SamplingParams


class _SampledLogProbs(LogitsProcessor):
    """Last in the processor list: sees the distribution tokens are drawn from. It keeps one step's
    log-probs and reads off the sampled token at the next step, so memory stays at [B, V]
    instead of the [B, T, V] that ``output_scores`` would hold."""

    def __init__(self) -> None:
        self.pending: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []

    def collect(self, sampled: torch.Tensor) -> None:
        if self.pending is not None:
            self.logprobs.append(self.pending.gather(-1, sampled[:, None]).squeeze(-1).cpu())
            self.pending = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.collect(input_ids[:, -1])
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _FinishTracker(StoppingCriteria):
    """Stops a row at eos or a stop string and remembers how many tokens it had then, so padding
    written after the end is never mistaken for sampled tokens."""

    def __init__(self, prompt_width: int, batch_size: int, eos_ids: torch.Tensor, stop: StopStringCriteria | None):
        self.prompt_width = prompt_width
        self.eos_ids = eos_ids
        self.stop = stop
        self.finished_at: list[int | None] = [None] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.isin(input_ids[:, -1], self.eos_ids.to(input_ids.device))
        if self.stop is not None:
            done |= self.stop(input_ids, scores).to(done.device)
        n_new = input_ids.shape[1] - self.prompt_width
        for row in done.nonzero().flatten().tolist():
            if self.finished_at[row] is None:
                self.finished_at[row] = n_new
        finished = torch.tensor([f is not None for f in self.finished_at], device=input_ids.device)
        return typing.cast(torch.BoolTensor, finished)


@dataclass
class _KeptCache:
    """What one ``generate`` call leaves for the next: its KV cache, the token at every cached
    position, which positions hold a row's real tokens, and each row's real tokens in order."""

    cache: DynamicCache
    input_ids: torch.Tensor  # [rows, cached positions]
    mask: torch.Tensor  # [rows, cached positions], 1 on the row's real tokens
    tokens: list[list[int]]

    def match(self, rows: list[list[int]]) -> list[int] | None:
        """For each new row, the kept row whose tokens begin it with at least one token to spare;
        None unless every row has one. Rows are looked up in the order they were kept, as a
        multi-turn loop sends its still active rows (a row may repeat: n samples of one context)."""
        found, i = [], 0
        for row in rows:
            while i < len(self.tokens) and not (
                len(self.tokens[i]) < len(row) and row[: len(self.tokens[i])] == self.tokens[i]
            ):
                i += 1
            if i == len(self.tokens):
                return None
            found.append(i)
        return found


def rollout_copy(model: PreTrainedModel, device: str, dtype: torch.dtype) -> PreTrainedModel:
    """The rollout's copy of the policy on ``device`` with its parameters in ``dtype``. Buffers keep
    their precision: casting RoPE's ``inv_freq`` to bf16 would shift every rotation angle (by over a
    radian at a distance of 1000 tokens with Qwen2.5's theta of 1e6), and the actor, whose FSDP mixed
    precision casts parameters only, would score other log-probs than the rollout sampled with."""
    torch.nn.Module.to(model, device)  # transformers' own .to is typed for dtypes and quantisation
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model


class HFRollout(BaseRollout):
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        self.model = model.eval()
        self.tokenizer = tokenizer
        eos = (
            model.generation_config.eos_token_id
            if model.generation_config.eos_token_id is not None
            else tokenizer.eos_token_id
        )
        self.eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.eos_ids[0])
        self._stop_cache: dict[tuple[str, ...], StopStringCriteria] = {}
        # generate() fills unset options from the checkpoint's generation config (repetition
        # penalty, min length, ...); those would make rollouts sample from another distribution
        # than the policy the trainer scores, so they are cleared here.
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_ids.tolist(), pad_token_id=self.pad_id)
        self._kept: _KeptCache | None = None
        # transformers 5.2x renamed generate's past_key_values to cache.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    def _stop_criteria(self, stop: tuple[str, ...]) -> StopStringCriteria:
        # Building the token tables is costly; a run uses a handful of stop-string sets.
        if stop not in self._stop_cache:
            self._stop_cache[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_cache[stop]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._kept = None  # computed with the old weights
        targets = self.model.state_dict()  # shares storage with the parameters and buffers
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in targets:
                    raise KeyError(f"rollout model has no parameter or buffer {name!r}")
                targets[name].copy_(tensor.to(targets[name].device, targets[name].dtype))

    def sleep(self) -> None:
        """Frees the kept KV cache; the model copy stays where it is."""
        self._kept = None

    def wake_up(self) -> None:
        """Nothing to take back: the next call starts a new cache."""

    @staticmethod
    def _warpers(params: SamplingParams, sample: bool) -> list[LogitsProcessor]:
        if not sample:
            return []
        warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k > 0:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        return warpers

    def _inputs(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
        """The call's input ids and attention mask, and the cache to extend: the kept one (reordered
        to the new rows, with only their new tokens as input) when every row continues a kept row."""
        kept, self._kept = self._kept, None
        found = kept.match(rows) if kept is not None else None
        if kept is None or found is None:
            ids, mask = left_pad(rows, self.pad_id)
            with_config = "config" in inspect.signature(DynamicCache.__init__).parameters
            return ids, mask, DynamicCache(config=self.model.config) if with_config else DynamicCache()
        index = typing.cast(torch.LongTensor, torch.tensor(found, device=kept.input_ids.device))
        kept.cache.reorder_cache(index)  # index_select on every layer: rows may drop out or repeat
        new_ids, new_mask = left_pad(
            [row[len(kept.tokens[i]) :] for row, i in zip(rows, found, strict=True)], self.pad_id
        )
        ids = torch.cat([kept.input_ids.index_select(0, index), new_ids.to(kept.input_ids.device)], dim=1)
        mask = torch.cat([kept.mask.index_select(0, index), new_mask.to(kept.mask.device)], dim=1)
        return ids, mask, kept.cache

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationResult]:
        if not prompts:
            return []
        rows = [p for p in prompts for _ in range(params.n)]
        device = next(self.model.parameters()).device
        input_ids, attention_mask, cache = self._inputs(rows)
        width = input_ids.shape[1]
        tracker = _FinishTracker(
            width, len(rows), self.eos_ids, self._stop_criteria(tuple(params.stop)) if params.stop else None
        )
        recorder = _SampledLogProbs()
        sample = not params.greedy and params.temperature > 0
        # Sampling filters are passed as processors, in this order, so the recorder sees exactly
        # the distribution a token is drawn from; generate() itself adds none (top_k=0).
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            top_k=0,
            eos_token_id=self.eos_ids.tolist(),
            pad_token_id=self.pad_id,
        )
        sequences = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList(self._warpers(params, sample) + [recorder]),
            stopping_criteria=StoppingCriteriaList([tracker]),
            **{self._cache_arg: cache},
        )
        new_tokens = sequences[:, width:]
        recorder.collect(new_tokens[:, -1])
        lengths = [end if end is not None else new_tokens.shape[1] for end in tracker.finished_at]
        self._keep(rows, sequences, attention_mask.to(device), lengths, cache)
        new_tokens = new_tokens.cpu()
        logprobs = torch.stack(recorder.logprobs, dim=1)
        return [
            GenerationResult(
                token_ids=new_tokens[i, :length].tolist(),
                logprobs=logprobs[i, :length].tolist(),
                finish_reason="stop" if tracker.finished_at[i] is not None else "length",
            )
            for i, length in enumerate(lengths)
        ]

    def _keep(
        self,
        rows: list[list[int]],
        sequences: torch.Tensor,
        attention_mask: torch.Tensor,
        lengths: list[int],
        cache: DynamicCache,
    ) -> None:
        """Keeps the call's cache for the next call. The last sampled token was never fed to the
        model, and a row that ended early was fed padding afterwards: neither counts as cached."""
        cached = cache.get_seq_length()
        width = attention_mask.shape[1]
        fed = torch.tensor([min(n, cached - width) for n in lengths], device=sequences.device)
        generated = (torch.arange(cached - width, device=sequences.device)[None, :] < fed[:, None]).long()
        self._kept = _KeptCache(
            cache=cache,
            input_ids=sequences[:, :cached],
            mask=torch.cat([attention_mask, generated], dim=1),
            tokens=[
                row + sequences[i, width : width + n].tolist()
                for i, (row, n) in enumerate(zip(rows, fed.tolist(), strict=True))
            ],
        )
