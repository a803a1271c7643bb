"""Training batches in a seeded order that can be resumed exactly where a checkpoint left them."""

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from verl.protocol import DataProto
from verl.utils.dataset import collate_fn

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


class RowDataset(Protocol):
    """A map-style dataset: rows by index (RLHFDataset, SFTDataset)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


class ResumableBatches:
    """Endless iterator over training batches: each epoch a fresh permutation drawn from
    ``seed + epoch`` (or dataset order without shuffling); an incomplete last batch is dropped.
    ``state_dict()`` is (epoch, batches consumed in it). ``collate_fn`` turns a list of rows into
    the batch's columns."""

    def __init__(
        self,
        dataset: RowDataset,
        batch_size: int,
        shuffle: bool,
        seed: int,
        collate_fn: Collate = collate_fn,
    ):
        if len(dataset) < batch_size:
            raise ValueError(
                f"data.train_batch_size={batch_size} is larger than the training set ({len(dataset)} rows)"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.collate_fn = collate_fn
        self.epoch = 0
        self.consumed = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.dataset)))
        return torch.randperm(
            len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch)
        ).tolist()

    def __iter__(self):
        return self

    def __next__(self) -> DataProto:
        if self.consumed == self.batches_per_epoch:
            self.epoch, self.consumed = self.epoch + 1, 0
        start = self.consumed * self.batch_size
        indices = self._order()[start : start + self.batch_size]
        self.consumed += 1
        return DataProto.from_single_dict(self.collate_fn([self.dataset[i] for i in indices]))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = state["epoch"], state["consumed"]


def validation_batches(
    dataset: RowDataset, batch_size: int | None, collate_fn: Collate = collate_fn
) -> Iterator[DataProto]:
    """Every row once, in file order, last batch kept."""
    size = batch_size or len(dataset)
    for start in range(0, len(dataset), size):
        rows = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        yield DataProto.from_single_dict(collate_fn(rows))
