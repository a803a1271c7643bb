"""Rollout with transformers ``generate`` on an unsharded copy of the policy (CPU or GPU)."""

from functools import lru_cache
from typing import Iterable

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.stopping_criteria import StopStringCriteria, StoppingCriteria, StoppingCriteriaList

from verl.workers.rollout.base import BaseRollout, GenerationResult, SamplingParams


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
        return torch.tensor([f is not None for f in self.finished_at], device=input_ids.device)


class HFRollout(BaseRollout):
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        self.model = model.eval()
        self.tokenizer = tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.eos_ids[0])

    @lru_cache(maxsize=8)
    def _stop_criteria(self, stop: tuple[str, ...]) -> StopStringCriteria:
        # Building the token tables is costly; a run uses a handful of stop-string sets.
        return StopStringCriteria(self.tokenizer, list(stop))

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        targets = self.model.state_dict()  # shares storage with the parameters and buffers
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in targets:
                    raise KeyError(f"rollout model has no parameter or buffer {name!r}")
                targets[name].copy_(tensor.to(targets[name].device, targets[name].dtype))

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
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p):] = 1
        tracker = _FinishTracker(width, len(rows), self.eos_ids,
                                 self._stop_criteria(tuple(params.stop)) if params.stop else None)
        sample = not params.greedy and params.temperature > 0
        config = GenerationConfig(  # built afresh so a checkpoint's own sampling defaults never leak in
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=(params.top_k if params.top_k > 0 else 0) if sample else None,
            eos_token_id=self.eos_ids.tolist(),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                  generation_config=config, stopping_criteria=StoppingCriteriaList([tracker]))
        new_tokens = out.sequences[:, width:].cpu()
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
        logprobs = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results = []
        for i in range(len(rows)):
            end = tracker.finished_at[i]
            length = end if end is not None else new_tokens.shape[1]
            results.append(GenerationResult(
                token_ids=new_tokens[i, :length].tolist(),
                logprobs=logprobs[i, :length].tolist(),
                finish_reason="stop" if end is not None else "length",
            ))
        return results
