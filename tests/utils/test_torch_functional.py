import math

import pytest
import torch

from verl.utils.torch_functional import (
    entropy_from_logits,
    left_pad,
    logprobs_and_entropy,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    position_ids,
    right_pad,
)

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 0, 1], [0, 0, 1]])


def test_masked_sum_all_and_per_axis():
    assert masked_sum(VALUES, MASK).item() == pytest.approx(10.0)  # 1 + 3 + 6
    torch.testing.assert_close(masked_sum(VALUES, MASK, axis=-1), torch.tensor([4.0, 6.0]))  # 1+3, 6
    torch.testing.assert_close(masked_sum(VALUES, MASK, axis=0), torch.tensor([1.0, 0.0, 9.0]))  # 1, -, 3+6


def test_masked_sum_ignores_non_finite_padding():
    values = torch.tensor([1.0, float("nan"), float("inf")])
    assert masked_sum(values, torch.tensor([1.0, 0.0, 0.0])).item() == 1.0


def test_masked_mean_all_and_per_axis():
    assert masked_mean(VALUES, MASK).item() == pytest.approx(10.0 / 3.0)  # (1 + 3 + 6) / 3
    torch.testing.assert_close(masked_mean(VALUES, MASK, axis=-1), torch.tensor([2.0, 6.0]))  # (1+3)/2, 6/1


def test_masked_mean_empty_mask_is_zero_with_finite_grad():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    # row 0: (1 + 2) / 2; row 1 has no valid entry
    torch.testing.assert_close(masked_mean(values, mask, axis=-1), torch.tensor([1.5, 0.0]), check_dtype=False)

    total = masked_mean(values, torch.zeros_like(mask))
    assert total.item() == 0.0
    total.backward()
    assert torch.equal(values.grad, torch.zeros_like(values))


def test_masked_var_biased_and_unbiased():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(5.0 / 4.0)
    assert masked_var(values, mask).item() == pytest.approx(5.0 / 3.0)


def test_masked_var_degenerate_masks_are_zero():
    values = torch.tensor([3.0, 7.0])
    assert masked_var(values, torch.tensor([0, 1])).item() == 0.0
    assert masked_var(values, torch.tensor([0, 0])).item() == 0.0


def test_masked_whiten_matches_hand_values():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [50.0, -50.0]])
    mask = torch.tensor([[1, 1], [1, 1], [0, 0]])
    # mean 2.5, unbiased var 5/3, sqrt(5/3) = 1.2909944; (1 - 2.5) / 1.2909944 = -1.161895
    expected = torch.tensor([[-1.161895, -0.387298], [0.387298, 1.161895]])
    torch.testing.assert_close(masked_whiten(values, mask)[:2], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(masked_whiten(values, mask, shift_mean=False)[:2], expected + 2.5, rtol=0, atol=1e-5)


def test_masked_whiten_gives_unit_statistics_on_valid_entries():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(4, 7, generator=gen) * 3 + 5
    mask = (torch.rand(4, 7, generator=gen) > 0.3).int()
    whitened = masked_whiten(values, mask)
    assert masked_mean(whitened, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, abs=1e-5)


def test_entropy_from_logits_hand_values():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [1000.0, 1000.0]])
    # uniform over 2: ln 2; p = (1/4, 3/4): 0.25 ln 4 + 0.75 ln(4/3) = 0.562335; huge equal logits: ln 2
    expected = torch.tensor([math.log(2.0), 0.562335, math.log(2.0)])
    torch.testing.assert_close(entropy_from_logits(logits), expected, rtol=0, atol=1e-5)


def test_entropy_from_logits_matches_categorical():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(1)) * 4
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)


def test_logprobs_from_logits_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [1000.0, 0.0]])
    labels = torch.tensor([1, 0, 1])
    # ln(3/4), ln(1/4), 0 - logsumexp(1000, 0) = -1000
    expected = torch.tensor([math.log(0.75), math.log(0.25), -1000.0])
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)


def test_logprobs_from_logits_matches_log_softmax():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 13, generator=gen) * 3
    labels = torch.randint(0, 13, (3, 5), generator=gen)
    expected = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)


@pytest.mark.parametrize("shape", [(3, 5, 13), (13,)])
def test_logprobs_from_half_precision_logits_are_float32(shape):
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(*shape, generator=gen) * 3).bfloat16()
    labels = torch.randint(0, 13, shape[:-1], generator=gen)
    out = logprobs_from_logits(logits, labels)
    assert out.dtype == torch.float32
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_and_entropy_match_the_separate_functions(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11) * 4).to(dtype)
    labels = torch.randint(0, 11, (3, 5))
    log_probs, entropy = logprobs_and_entropy(logits, labels)
    assert log_probs.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(log_probs, logprobs_from_logits(logits, labels), rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, entropy_from_logits(logits.float()), rtol=0, atol=1e-5)


def test_left_pad_aligns_the_last_tokens_and_masks_the_padding():
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = left_pad([[5, 6]], pad_id=9, width=4)
    assert ids.tolist() == [[9, 9, 5, 6]] and mask.tolist() == [[0, 0, 1, 1]]


def test_right_pad_starts_every_row_in_column_zero():
    values = right_pad([[-0.5, -1.0], [], [-2.0]], width=3, fill=0.0, dtype=torch.float32)
    assert values.tolist() == [[-0.5, -1.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]]
    assert values.dtype == torch.float32
    assert right_pad([[4, 5]], width=3, fill=7, dtype=torch.long).tolist() == [[4, 5, 7]]


def test_position_ids_count_attended_tokens_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    assert position_ids(torch.tensor([0, 1, 1])).tolist() == [0, 0, 1]  # one row
