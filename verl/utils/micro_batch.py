"""Micro-batches on one FSDP rank, shared by the actor, critic and SFT workers: padding trimmed
off, losses weighted so that accumulated gradients equal the whole mini-batch's, the optimizer step."""

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.utils.batch_schema import Key


def trim_padding(data: DataProto, response_length: int) -> tuple[dict, int]:
    """Drops the columns that are padding in every row of a micro-batch (left of the prompts, right
    of the responses), returning model inputs and the number of response columns kept."""
    mask = data.batch[Key.ATTENTION_MASK]
    prompt_width = mask.shape[1] - response_length
    used = mask.any(dim=0).nonzero().flatten()
    start = min(int(used[0]), prompt_width - 1) if len(used) else prompt_width - 1
    kept_response = max(int(used[-1]) + 1 - prompt_width, 1) if len(used) else 1
    end = prompt_width + kept_response
    inputs = {k: data.batch[k][:, start:end] for k in (Key.INPUT_IDS, Key.ATTENTION_MASK, Key.POSITION_IDS)}
    return inputs, kept_response


def token_slots(data: DataProto, response_length: int, remove_padding: bool) -> int:
    """Token positions the model runs on for a micro-batch: its real tokens when packed, else its
    rows times the width left after trimming the columns that are padding in every row."""
    if remove_padding:
        return int(data.batch[Key.ATTENTION_MASK].sum())
    inputs, _ = trim_padding(data, response_length)
    return inputs[Key.INPUT_IDS].numel()


def pack_rows(data: DataProto, response_length: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The micro-batch's real tokens as one row, positions restarting at each sequence (transformers
    then attends within each sequence only), for padding-free compute. Also returns the packed
    indices of the positions that predict each response token, and the [B, R] mask of where those
    predictions belong in the padded layout."""
    mask = data.batch[Key.ATTENTION_MASK].bool()
    prompt_width = mask.shape[1] - response_length
    packed_index = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    packed_index[mask] = torch.arange(int(mask.sum()), device=mask.device)
    response_real = mask[:, prompt_width:]
    # a response token is predicted at the position before it: the prompt's last token for the first
    predictors = packed_index[:, prompt_width - 1 : -1][response_real]
    if (predictors < 0).any():
        raise ValueError("padding-free compute needs left-padded prompts and right-padded, contiguous responses")
    inputs = {k: data.batch[k][mask].unsqueeze(0) for k in (Key.INPUT_IDS, Key.POSITION_IDS)}
    return inputs, predictors, response_real


def unpack(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-token values of a packed row back in the padded layout: ``real`` is pack_rows' [B, R]
    mask of where each belongs; zero elsewhere."""
    return values.new_zeros(real.shape).masked_scatter(real, values)


def token_budget_groups(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row indices grouped longest first, each group holding at most ``max_tokens`` tokens (a longer
    row goes alone): rows of similar length share a micro-batch, so little of it is padding."""
    groups: list[list[int]] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if not groups or tokens + lengths[i] > max_tokens:
            groups.append([])
            tokens = 0
        groups[-1].append(i)
        tokens += lengths[i]
    return groups


def split_into(groups: list[list[int]], count: int, lengths: list[int]) -> list[list[int]]:
    """Halves the heaviest splittable group until there are ``count`` groups (count <= rows)."""
    groups = list(groups)
    while len(groups) < count:
        heaviest = max((g for g in groups if len(g) > 1), key=lambda g: sum(lengths[i] for i in g))
        groups.remove(heaviest)
        half = len(heaviest) // 2
        groups += [heaviest[:half], heaviest[half:]]
    return groups


def micro_batches(data: DataProto, micro_batch_size: int, max_token_len: int | None) -> list[torch.Tensor]:
    """Row indices of each micro-batch: consecutive runs of ``micro_batch_size`` rows, or with a
    token budget (``max_token_len``, verl's dynamic batch size) rows packed by length. Every
    data-parallel rank then runs as many micro-batches as the one that needs most, since FSDP's
    collectives pair up each forward and backward pass across ranks."""
    rows = len(data)
    if max_token_len is None:
        return list(torch.arange(rows).split(micro_batch_size))
    lengths = data.batch[Key.ATTENTION_MASK].sum(-1).tolist()
    groups = token_budget_groups(lengths, max_token_len)
    count = torch.tensor(len(groups))
    if dist.is_initialized():
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return [torch.tensor(g) for g in split_into(groups, min(int(count), rows), lengths)]


def unsort(parts: list[torch.Tensor], order: list[torch.Tensor]) -> torch.Tensor:
    """Rows computed micro-batch by micro-batch (``order``: their row indices) back in batch order."""
    out = torch.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    out[torch.cat(order)] = torch.cat(parts)
    return out


def balanced_order(lengths: list[int], ranks: int) -> list[int]:
    """A row order whose ``ranks`` equal consecutive chunks carry about the same number of tokens:
    rows dealt longest first, back and forth over the ranks, each rank's rows then kept in their
    original order (so mini-batches do not go from long to short rows). Identity when rows do not
    divide."""
    if ranks <= 1 or len(lengths) % ranks:
        return list(range(len(lengths)))
    chunks: list[list[int]] = [[] for _ in range(ranks)]
    for position, i in enumerate(sorted(range(len(lengths)), key=lambda i: -lengths[i])):
        lap, seat = divmod(position, ranks)
        chunks[seat if lap % 2 == 0 else ranks - 1 - seat].append(i)
    return [i for chunk in chunks for i in sorted(chunk)]


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


def balance_batch(data: DataProto, ranks: int) -> None:
    """Reorders the rows in place so that each data-parallel rank's share carries about as many
    tokens as the others' (verl's trainer.balance_batch)."""
    order = balanced_order(data.batch[Key.ATTENTION_MASK].sum(-1).tolist(), ranks)
    if order != sorted(order):
        reordered = data[torch.tensor(order)]
        data.batch, data.non_tensor_batch = reordered.batch, reordered.non_tensor_batch
