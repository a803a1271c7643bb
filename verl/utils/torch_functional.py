"""Masked reductions and log-probability helpers over padded token tensors, and the padding itself.

Masks are read as booleans: a position takes part when its mask entry is
non-zero. Values at masked-out positions never reach a result, even when they
are inf or NaN.
"""

from collections.abc import Sequence

import torch

WHITEN_EPS = 1e-8


def masked_sum(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Sum of ``values`` over positions where ``mask`` is non-zero.

    Args:
        values: [...] tensor.
        mask: same shape as ``values``, any dtype.
        axis: dimension to reduce; ``None`` reduces everything.

    Returns:
        Scalar when ``axis`` is None, else ``values`` with ``axis`` removed.
    """
    # where() rather than a product, so inf/NaN in padding cannot leak in
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    return kept.sum() if axis is None else kept.sum(dim=axis)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is non-zero.

    Args:
        values: [...] tensor.
        mask: same shape as ``values``, any dtype.
        axis: dimension to reduce; ``None`` reduces everything.

    Returns:
        Scalar when ``axis`` is None, else ``values`` with ``axis`` removed.
        A reduction with no valid entry gives 0.
    """
    count = masked_sum(torch.ones_like(values), mask, axis)
    # dividing an empty (zero) sum by 1 instead of 0 keeps both value and gradient finite
    safe_count = torch.where(count > 0, count, torch.ones_like(count))
    return masked_sum(values, mask, axis) / safe_count


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over all positions where ``mask`` is non-zero.

    Args:
        values: [...] tensor.
        mask: same shape as ``values``, any dtype.
        unbiased: apply Bessel's correction n / (n - 1).

    Returns:
        Scalar. With fewer than two valid entries the spread is 0, and 0 is
        returned rather than 0 / 0.
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = masked_sum(torch.ones_like(values), mask)
        # for n <= 1 var is already 0, so any finite factor keeps it 0
        var = var * count / (count - 1).clamp_min(1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``values`` to unit variance using statistics of the valid entries.

    Args:
        values: [...] tensor.
        mask: same shape as ``values``, any dtype.
        shift_mean: if False, the mean is added back so only the scale changes.

    Returns:
        Tensor shaped like ``values``. Masked positions hold unspecified values;
        callers zero them as needed.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by ``logits``.

    Uses H = logsumexp(z) - sum_i softmax(z)_i * z_i on logits shifted so their
    maximum is 0; H is shift-invariant, and without the shift both terms would
    be large and cancel, losing precision.

    Args:
        logits: [..., V].

    Returns:
        [...] entropy per position.
    """
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()
    probs = torch.softmax(shifted, dim=-1)
    return torch.logsumexp(shifted, dim=-1) - (probs * shifted).sum(dim=-1)


def _gathered_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    picked = torch.gather(logits, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``labels`` and the entropy at each position from one log-softmax, which
    is both stable and about twice as fast as ``logprobs_from_logits`` plus ``entropy_from_logits``.

    Args:
        logits: [..., V]; half precision is upcast to float32 (a bf16 log-softmax loses too many
            digits for importance ratios).
        labels: [...] integer token ids.
        entropy_grad: False computes the entropy outside autograd (a metric only), so its
            [B, T, V] intermediates are not kept for the backward pass.

    Returns:
        ([...] log-probabilities, [...] entropies), float32.
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)
    picked = torch.gather(log_p, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -torch.einsum("...v,...v->...", log_p.exp(), log_p)
    return picked, entropy


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``labels`` under ``logits``: z[label] - logsumexp(z).

    Half-precision logits are upcast to float32 one leading-dim slice at a
    time: a bf16 logsumexp loses too many digits for importance ratios, and a
    float32 copy of the whole [..., V] tensor may not fit in memory.

    Args:
        logits: [..., V].
        labels: [...] integer token ids.

    Returns:
        [...] log-probabilities, float32 for half-precision logits, otherwise
        the dtype of ``logits``.
    """
    if logits.dtype not in (torch.float16, torch.bfloat16):
        return _gathered_logprobs(logits, labels)
    if logits.dim() == 1:
        return _gathered_logprobs(logits.float(), labels)
    return torch.stack([_gathered_logprobs(z.float(), y) for z, y in zip(logits, labels, strict=True)])


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded, so that every row's last token sits in the last column.

    Args:
        rows: B token-id rows of any lengths (an empty row is all padding).
        pad_id: id written into the padding.
        width: columns of the result; None: the longest row's length.

    Returns:
        ([B, width] int64 ids, [B, width] int64 attention mask: 1 on the rows' tokens).
    """
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[float]], width: int, fill: float, dtype: torch.dtype) -> torch.Tensor:
    """Rows of values right-padded with ``fill`` to a [B, width] tensor of ``dtype`` (each row's
    first value in column 0), e.g. responses, their masks and their log-probs."""
    out = torch.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=dtype)
    return out


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the attended tokens along the last dimension, from 0 at each row's
    first one; padding before it gets 0 and padding after it the last position.

    Args:
        attention_mask: [..., T], 1 on attended tokens.

    Returns:
        [..., T] int64 positions.
    """
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
