"""Row-aligned batch container exchanged between the driver and Ray workers.

A ``DataProto`` holds B rows split over three places:

* ``batch``: a ``TensorDict`` with ``batch_size=[B]`` (tensors of shape ``[B, ...]``; none at all
  for a DataProto of non-tensors or meta_info only, whose batch is then an empty TensorDict),
* ``non_tensor_batch``: numpy object arrays whose first dimension is B
  (strings, dicts, lists, ... anything that is not a tensor),
* ``meta_info``: free-form settings that describe the whole batch, not a row.

Operations that produce rows from existing rows (indexing, ``chunk``, ``split``,
``repeat``, ``concat``) hand the same ``meta_info`` dict to the result rather
than a copy.

Over 400 lines on purpose: one class, ``DataProto``, and the operations the trainer and workers
use on it (select, union, index, chunk, concat, repeat, padding), which share its invariants.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["DataProto", "RolloutSettings", "pad_dataproto_to_divisor", "unpad_dataproto"]


def _to_object_array(key: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            raise ValueError(f"non-tensor '{key}' is a 0-d array; it needs a first (batch) dimension")
        return value if value.dtype == object else value.astype(object)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(
            f"non-tensor '{key}' must be a numpy array or a sequence with one item per row, got {type(value).__name__}"
        )
    # Filling item by item keeps nested lists/dicts as single objects; np.array(value, dtype=object)
    # would turn a list of equal-length lists into a 2-D array.
    out = np.empty(len(value), dtype=object)
    for i, item in enumerate(value):
        out[i] = item
    return out


def _tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    b = b.to(a.device)
    if torch.equal(a, b):
        return True
    # NaN != NaN, yet two copies of the same data must not count as a conflict.
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return False


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _tensors_equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape:
            return False
        if a.dtype == object or b.dtype == object:
            return all(_same_value(x, y) for x, y in zip(a.flat, b.flat, strict=True))
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # equal_nan is only defined for numeric dtypes
            return bool(np.array_equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _missing_keys_error(kind: str, missing: list, available) -> KeyError:
    return KeyError(f"{kind} key(s) {missing} not found; available: {sorted(available)}")


@dataclass(eq=False)  # field-wise == is meaningless for tensors and arrays
class DataProto:
    batch: TensorDict = None  # type: ignore[assignment]  # None becomes an empty TensorDict of the right length
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch is None:
            first = (
                next(iter(self.non_tensor_batch.values()), None) if isinstance(self.non_tensor_batch, dict) else None
            )
            rows = len(first) if isinstance(first, np.ndarray) and first.ndim > 0 else 0
            self.batch = TensorDict({}, batch_size=[rows])
        self.check_consistency()

    # ----------------------------------------------------------------- building

    @classmethod
    def from_dict(
        cls,
        tensors: dict[str, torch.Tensor] | None = None,
        non_tensors: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
        meta_info: dict | None = None,
    ) -> DataProto:
        tensors = dict(tensors or {})
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"tensor '{key}' must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0:
                raise ValueError(f"tensor '{key}' is 0-d; it needs a first (batch) dimension")
        arrays = {key: _to_object_array(key, value) for key, value in (non_tensors or {}).items()}
        both = sorted(tensors.keys() & arrays.keys())
        if both:
            raise ValueError(f"key(s) {both} given both as tensors and as non-tensors")

        length: int | None = None
        first_key = ""
        entries: list[tuple[str, torch.Tensor | np.ndarray]] = [*tensors.items(), *arrays.items()]
        for key, entry in entries:
            if length is None:
                length, first_key = len(entry), key
            elif len(entry) != length:
                raise ValueError(
                    f"'{key}' has first dimension {len(entry)} but '{first_key}' has {length}; "
                    "all entries must have the same number of rows"
                )

        batch = TensorDict(tensors, batch_size=[length or 0])
        return cls(batch=batch, non_tensor_batch=arrays, meta_info=dict(meta_info or {}))

    @classmethod
    def from_single_dict(cls, data: Mapping[str, Any], meta_info: dict[str, Any] | None = None) -> DataProto:
        tensors: dict[str, torch.Tensor] = {}
        non_tensors: dict[str, Sequence[Any] | np.ndarray] = {}
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value
            elif isinstance(value, (np.ndarray, list, tuple)):
                non_tensors[key] = value
            else:
                raise TypeError(
                    f"'{key}' must be a torch.Tensor, numpy array, list or tuple, got {type(value).__name__}"
                )
        return cls.from_dict(tensors=tensors, non_tensors=non_tensors, meta_info=meta_info)

    # ------------------------------------------------------------------- checks

    def check_consistency(self) -> None:
        if not isinstance(self.batch, TensorDict):
            raise TypeError(f"batch must be a TensorDict or None, got {type(self.batch).__name__}")
        if len(self.batch.batch_size) != 1:
            raise ValueError(f"batch must have a 1-D batch_size, got {list(self.batch.batch_size)}")
        if not isinstance(self.non_tensor_batch, dict):
            raise TypeError(f"non_tensor_batch must be a dict, got {type(self.non_tensor_batch).__name__}")
        if not isinstance(self.meta_info, dict):
            raise TypeError(f"meta_info must be a dict, got {type(self.meta_info).__name__}")

        length = len(self)
        for key, value in self.non_tensor_batch.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0:
                raise TypeError(
                    f"non-tensor '{key}' must be a numpy array with a batch dimension, got {type(value).__name__}"
                )
            if len(value) != length:
                raise ValueError(f"non-tensor '{key}' has {len(value)} rows but the batch has {length}")

    def __len__(self) -> int:
        return int(self.batch.batch_size[0])

    # ----------------------------------------------------------------- indexing

    def _row_index(self, item) -> slice | np.ndarray:
        if isinstance(item, torch.Tensor):
            item = item.item() if item.dim() == 0 else item.detach().cpu().numpy()
        if isinstance(item, (bool, np.bool_)):
            raise TypeError("a single bool is not a valid row index; use a boolean mask with one entry per row")
        if isinstance(item, (int, np.integer)):
            n = len(self)
            i = int(item)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for DataProto of length {n}")
            return slice(i % n, i % n + 1)
        if isinstance(item, slice):
            return item
        if isinstance(item, (list, tuple, np.ndarray)):
            idx = np.asarray(item)
            if idx.ndim != 1:
                raise IndexError(f"row index must be 1-D, got shape {idx.shape}")
            if idx.dtype == np.bool_:
                if len(idx) != len(self):
                    raise IndexError(f"boolean mask has {len(idx)} entries but the DataProto has {len(self)} rows")
                return np.flatnonzero(idx)
            if idx.size == 0:  # np.asarray([]) is float64
                return idx.astype(np.int64)
            if not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"row indices must be integers or booleans, got dtype {idx.dtype}")
            return idx.astype(np.int64, copy=False)
        raise TypeError(f"unsupported index type {type(item).__name__}")

    def __getitem__(self, item) -> DataProto:
        """Rows selected by an int, slice, integer indices or a boolean mask; meta_info is shared."""
        idx = self._row_index(item)
        if isinstance(idx, slice):
            batch = self.batch[idx]
        else:
            batch = self.batch[torch.as_tensor(idx, dtype=torch.long)]
        non_tensor = {key: value[idx] for key, value in self.non_tensor_batch.items()}
        return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info=self.meta_info)

    # ---------------------------------------------------------------- key views

    def select(
        self,
        batch_keys: Sequence[str] | None = None,
        non_tensor_batch_keys: Sequence[str] | None = None,
        meta_info_keys: Sequence[str] | None = None,
        deepcopy: bool = False,
    ) -> DataProto:
        """Keep only the named keys (None keeps all); tensors and arrays are shared unless ``deepcopy``."""
        if batch_keys is None:
            batch = self.batch.copy()
        else:
            available = list(self.batch.keys())
            missing = [k for k in batch_keys if k not in available]
            if missing:
                raise _missing_keys_error("batch", missing, available)
            batch = self.batch.select(*batch_keys)

        if non_tensor_batch_keys is None:
            non_tensor = dict(self.non_tensor_batch)
        else:
            missing = [k for k in non_tensor_batch_keys if k not in self.non_tensor_batch]
            if missing:
                raise _missing_keys_error("non_tensor_batch", missing, self.non_tensor_batch)
            non_tensor = {k: self.non_tensor_batch[k] for k in non_tensor_batch_keys}

        if meta_info_keys is None:
            meta = dict(self.meta_info)
        else:
            missing = [k for k in meta_info_keys if k not in self.meta_info]
            if missing:
                raise _missing_keys_error("meta_info", missing, self.meta_info)
            meta = {k: self.meta_info[k] for k in meta_info_keys}

        if deepcopy:
            batch = batch.clone()
            non_tensor = copy.deepcopy(non_tensor)
            meta = copy.deepcopy(meta)
        return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info=meta)

    def pop(
        self,
        batch_keys: Sequence[str] = (),
        non_tensor_batch_keys: Sequence[str] = (),
        meta_info_keys: Sequence[str] = (),
    ) -> DataProto:
        """Remove the named keys from self and return them as a new DataProto of the same length."""
        # Check every key before removing any, so a bad key leaves self untouched.
        available = list(self.batch.keys())
        missing = [k for k in batch_keys if k not in available]
        if missing:
            raise _missing_keys_error("batch", missing, available)
        missing = [k for k in non_tensor_batch_keys if k not in self.non_tensor_batch]
        if missing:
            raise _missing_keys_error("non_tensor_batch", missing, self.non_tensor_batch)
        missing = [k for k in meta_info_keys if k not in self.meta_info]
        if missing:
            raise _missing_keys_error("meta_info", missing, self.meta_info)

        # An empty TensorDict still carries the row count, so len() of the result stays right.
        popped = {k: self.batch.pop(k) for k in batch_keys}
        batch = TensorDict(popped, batch_size=self.batch.batch_size, device=self.batch.device)
        non_tensor = {k: self.non_tensor_batch.pop(k) for k in non_tensor_batch_keys}
        meta = {k: self.meta_info.pop(k) for k in meta_info_keys}
        return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info=meta)

    def union(self, other: DataProto) -> DataProto:
        """Add other's keys to self in place and return self; shared keys must hold equal values."""
        if len(self) != len(other):
            raise ValueError(f"cannot union DataProtos of different lengths: {len(self)} vs {len(other)}")

        for key in other.batch.keys():
            if key in self.batch.keys() and not _tensors_equal(self.batch[key], other.batch[key]):
                raise ValueError(f"batch key '{key}' is present in both DataProtos with different values")
        for key, value in other.non_tensor_batch.items():
            if key in self.non_tensor_batch and not _same_value(self.non_tensor_batch[key], value):
                raise ValueError(f"non_tensor_batch key '{key}' is present in both DataProtos with different values")
        for key, value in other.meta_info.items():
            if key in self.meta_info and not _same_value(self.meta_info[key], value):
                raise ValueError(f"meta_info key '{key}' is present in both DataProtos with different values")

        for key in other.batch.keys():
            if key not in self.batch.keys():
                self.batch[key] = other.batch[key]
        for key, value in other.non_tensor_batch.items():
            self.non_tensor_batch.setdefault(key, value)
        for key, value in other.meta_info.items():
            self.meta_info.setdefault(key, value)
        return self

    # ------------------------------------------------------------ row splitting

    def chunk(self, chunks: int) -> list[DataProto]:
        if not isinstance(chunks, int) or chunks <= 0:
            raise ValueError(f"chunks must be a positive int, got {chunks!r}")
        n = len(self)
        if n % chunks != 0:
            raise ValueError(
                f"cannot chunk {n} rows into {chunks} equal parts; "
                "pad first with pad_dataproto_to_divisor (and unpad_dataproto the results)"
            )
        size = n // chunks
        return [self[i * size : (i + 1) * size] for i in range(chunks)]

    def split(self, split_size: int) -> list[DataProto]:
        """Consecutive parts of split_size rows, the last possibly shorter (like torch.split).

        An empty DataProto gives one empty part, so ``concat(split(x))`` always rebuilds x.
        """
        if not isinstance(split_size, int) or split_size <= 0:
            raise ValueError(f"split_size must be a positive int, got {split_size!r}")
        n = len(self)
        if n == 0:
            return [self[0:0]]
        return [self[i : i + split_size] for i in range(0, n, split_size)]

    @staticmethod
    def concat(data: list[DataProto]) -> DataProto:
        """Stack rows of several DataProtos with the same keys; meta_info comes from the first."""
        if not data:
            raise ValueError("concat needs at least one DataProto")

        keys = set(data[0].batch.keys())
        for i, d in enumerate(data[1:], start=1):
            if set(d.batch.keys()) != keys:
                raise ValueError(f"batch keys differ: item 0 has {sorted(keys)}, item {i} has {sorted(d.batch.keys())}")
        batch = torch.cat([d.batch for d in data], dim=0)

        keys = set(data[0].non_tensor_batch)
        for i, d in enumerate(data[1:], start=1):
            if set(d.non_tensor_batch) != keys:
                raise ValueError(
                    f"non_tensor_batch keys differ: item 0 has {sorted(keys)}, item {i} has "
                    f"{sorted(d.non_tensor_batch)}"
                )
        non_tensor = {
            k: np.concatenate([d.non_tensor_batch[k] for d in data], axis=0) for k in data[0].non_tensor_batch
        }
        return DataProto(batch=typing.cast(TensorDict, batch), non_tensor_batch=non_tensor, meta_info=data[0].meta_info)

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> DataProto:
        """Repeat every row: interleave gives a,a,b,b; otherwise the whole batch is tiled: a,b,a,b."""
        if not isinstance(repeat_times, int) or repeat_times <= 0:
            raise ValueError(f"repeat_times must be a positive int, got {repeat_times!r}")
        rows = np.arange(len(self))
        idx = np.repeat(rows, repeat_times) if interleave else np.tile(rows, repeat_times)
        return self[idx]

    def reorder(self, indices) -> None:
        """Permute the rows in place: row i becomes the old row ``indices[i]``."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        n = len(self)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) != n:
            raise ValueError(f"reorder needs {n} integer indices, got shape {idx.shape} dtype {idx.dtype}")
        if not np.array_equal(np.sort(idx), np.arange(n)):
            raise ValueError("reorder indices must be a permutation of range(len(data))")
        self.batch = self.batch[torch.as_tensor(idx, dtype=torch.long)]
        self.non_tensor_batch = {k: v[idx] for k, v in self.non_tensor_batch.items()}

    def to(self, device) -> DataProto:
        self.batch = self.batch.to(device)
        return self


@dataclass
class RolloutSettings:
    """What one ``generate_sequences`` call asks for, carried in ``meta_info["rollout"]``: the
    trainer sets where in training the call happens, a rollout loop may set per-call limits."""

    validate: bool = False  # sample with rollout.val_kwargs (greedy by default) instead of the training settings
    step: int = 0  # the training step the batch belongs to; 0 before training
    total_steps: int = 1
    max_new_tokens: int | None = None  # None: data.max_response_length
    stop: list[str] | None = None  # None: rollout.stop
    n: int | None = None  # responses per prompt; None: rollout.n (val_kwargs.n when validating)

    @staticmethod
    def of(data: DataProto) -> RolloutSettings:
        settings = data.meta_info.get("rollout", RolloutSettings())
        if not isinstance(settings, RolloutSettings):
            raise TypeError(f"meta_info['rollout'] must be a RolloutSettings, got {type(settings).__name__}")
        return settings


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Append rows copied cyclically from the start until len is a multiple of size_divisor.

    Returns ``(padded, pad_size)``; when no padding is needed (including an empty input)
    ``data`` itself is returned with pad_size 0.
    """
    if not isinstance(size_divisor, int) or size_divisor <= 0:
        raise ValueError(f"size_divisor must be a positive int, got {size_divisor!r}")
    n = len(data)
    pad_size = -n % size_divisor
    if pad_size == 0:
        return data, 0
    padding = data[np.arange(pad_size) % n]  # cycling covers pad_size > n, e.g. 1 row padded to 4
    return DataProto.concat([data, padding]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    """Drop the last pad_size rows added by pad_dataproto_to_divisor."""
    if not 0 <= pad_size <= len(data):
        raise ValueError(f"pad_size must be between 0 and {len(data)}, got {pad_size}")
    if pad_size == 0:
        return data
    return data[: len(data) - pad_size]
