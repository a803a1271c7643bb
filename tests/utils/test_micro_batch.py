"""Micro-batches by token count and the balance of rows over data-parallel ranks."""

import torch

from verl.protocol import DataProto
from verl.utils.micro_batch import balanced_order, micro_batches, split_into, token_budget_groups, unsort


def test_token_budget_groups_hold_at_most_the_budget_and_every_row_once():
    lengths = [30, 5, 12, 40, 7, 7, 25, 3]
    groups = token_budget_groups(lengths, 40)
    assert sorted(i for g in groups for i in g) == list(range(8))
    assert all(sum(lengths[i] for i in g) <= 40 for g in groups)
    assert [lengths[i] for i in groups[0]] == [40]  # longest first: similar lengths share a group
    assert token_budget_groups([50, 10], 40) == [[0], [1]]  # a row over the budget goes alone


def test_groups_split_to_the_count_another_rank_needs():
    lengths = [4, 4, 4, 4, 4]
    groups = split_into([[0, 1, 2, 3, 4]], 3, lengths)
    assert len(groups) == 3 and sorted(i for g in groups for i in g) == list(range(5))


def test_micro_batches_and_unsort_round_trip():
    mask = torch.tensor([[1] * n + [0] * (8 - n) for n in (8, 2, 5, 3, 8, 1)])
    data = DataProto.from_dict(tensors={"attention_mask": mask, "x": torch.arange(6)})
    fixed = micro_batches(data, 4, None)
    assert [r.tolist() for r in fixed] == [[0, 1, 2, 3], [4, 5]]
    packed = micro_batches(data, 4, 10)
    assert all(int(mask[r].sum()) <= 10 for r in packed)
    parts = [data[r].batch["x"] * 10 for r in packed]
    assert unsort(parts, packed).tolist() == [0, 10, 20, 30, 40, 50]


def test_balanced_order_evens_out_the_tokens_of_each_rank():
    lengths = [100, 90, 10, 5, 80, 20, 3, 60]
    order = balanced_order(lengths, 2)
    assert sorted(order) == list(range(8))
    halves = [sum(lengths[i] for i in order[:4]), sum(lengths[i] for i in order[4:])]
    assert abs(halves[0] - halves[1]) <= 20  # as given: 205 vs 163
    # within a rank the rows keep their order: mini-batches do not run from long rows to short ones
    assert order[:4] == sorted(order[:4]) and order[4:] == sorted(order[4:])
    assert balanced_order(lengths, 3) == list(range(8))  # 8 rows do not split in 3 equal shares
