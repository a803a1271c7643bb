"""Micro-batches on one FSDP rank, shared by the actor, critic and SFT workers: padding trimmed
off, losses weighted so that accumulated gradients equal the whole mini-batch's, the optimizer step."""

import torch
import torch.distributed as dist

from verl.protocol import DataProto


def trim_padding(data: DataProto, response_length: int) -> tuple[dict, int]:
    """Drops the columns that are padding in every row of a micro-batch (left of the prompts, right
    of the responses), returning model inputs and the number of response columns kept."""
    mask = data.batch["attention_mask"]
    prompt_width = mask.shape[1] - response_length
    used = mask.any(dim=0).nonzero().flatten()
    start = min(int(used[0]), prompt_width - 1) if len(used) else prompt_width - 1
    kept_response = max(int(used[-1]) + 1 - prompt_width, 1) if len(used) else 1
    end = prompt_width + kept_response
    inputs = {k: data.batch[k][:, start:end] for k in ("input_ids", "attention_mask", "position_ids")}
    return inputs, kept_response


def pad_right(values: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


def loss_denominator(response_mask: torch.Tensor, loss_agg_mode: str) -> float:
    """The mini-batch's valid tokens (token-mean) or non-empty rows (seq-mean modes) summed over all
    data-parallel ranks, so accumulated micro-batch losses equal the loss of the whole mini-batch."""
    mask = response_mask.float()
    local = mask.sum() if loss_agg_mode == "token-mean" else (mask.sum(-1) > 0).float().sum()
    if dist.is_initialized():
        dist.all_reduce(local)
    return float(local)


def micro_weight(mask: torch.Tensor, loss_agg_mode: str, denominator: float) -> float:
    """Share of a micro-batch in its mini-batch. FSDP averages gradients over ranks, so the share is
    scaled by the world size to turn that average back into a sum."""
    local = mask.sum() if loss_agg_mode == "token-mean" else (mask.sum(-1) > 0).float().sum()
    world = dist.get_world_size() if dist.is_initialized() else 1
    return float(local) / max(denominator, 1.0) * world


def optimizer_step(model, optimizer, max_norm: float) -> float:
    """Clips gradients to ``max_norm`` and steps; skips the step when the norm is not finite, which
    would corrupt the weights. Returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    if torch.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad()
    return float(norm)
