"""Training batches in a seeded order that can be resumed exactly where a checkpoint left them."""

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from verl.protocol import DataProto
from verl.utils.dataset import collate_fn


class ResumableBatches:
    """Endless iterator over training batches: each epoch a fresh permutation drawn from
    ``seed + epoch`` (or dataset order without shuffling); an incomplete last batch is dropped.
    ``state_dict()`` is (epoch, batches consumed in it). ``collate_fn`` turns a list of rows into
    the batch's columns."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int,
        collate_fn: Callable[[list], dict] = collate_fn,
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


def validation_batches(dataset: Dataset, batch_size: int | None, collate_fn: Callable[[list], dict] = collate_fn):
    """Every row once, in file order, last batch kept."""
    loader = DataLoader(
        dataset, batch_size=batch_size or len(dataset), shuffle=False, drop_last=False, collate_fn=collate_fn
    )
    for batch in loader:
        yield DataProto.from_single_dict(batch)
