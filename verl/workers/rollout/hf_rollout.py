"""Rollout with transformers ``generate`` on an unsharded copy of the policy (CPU or GPU)."""

import typing
from collections.abc import Iterable

import torch
from transformers import (
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

    def _stop_criteria(self, stop: tuple[str, ...]) -> StopStringCriteria:
        # Building the token tables is costly; a run uses a handful of stop-string sets.
        if stop not in self._stop_cache:
            self._stop_cache[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_cache[stop]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        targets = self.model.state_dict()  # shares storage with the parameters and buffers
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in targets:
                    raise KeyError(f"rollout model has no parameter or buffer {name!r}")
                targets[name].copy_(tensor.to(targets[name].device, targets[name].dtype))

    def sleep(self) -> None:
        """Nothing to free: generate() holds no cache between calls, and the copy stays where it is."""

    def wake_up(self) -> None:
        """Nothing was freed."""

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

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationResult]:
        if not prompts:
            return []
        rows = [p for p in prompts for _ in range(params.n)]
        width = max(len(p) for p in rows)
        device = next(self.model.parameters()).device
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, p in enumerate(rows):  # left padding keeps every row's last prompt token aligned
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
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
        )
        new_tokens = sequences[:, width:]
        recorder.collect(new_tokens[:, -1])
        new_tokens = new_tokens.cpu()
        logprobs = torch.stack(recorder.logprobs, dim=1)
        results = []
        for i in range(len(rows)):
            end = tracker.finished_at[i]
            length = end if end is not None else new_tokens.shape[1]
            results.append(
                GenerationResult(
                    token_ids=new_tokens[i, :length].tolist(),
                    logprobs=logprobs[i, :length].tolist(),
                    finish_reason="stop" if end is not None else "length",
                )
            )
        return results
