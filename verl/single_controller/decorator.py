"""How a worker-group method call fans out to the ranks and how the results come back.

A worker method is marked with ``@register(dispatch_mode=...)``; the worker group reads the mark
and builds a driver-side method that splits the arguments across ranks, calls every rank, and
collects the results.
"""

from collections.abc import Callable
from enum import Enum
from typing import Any

from verl.protocol import DataProto, pad_dataproto_to_divisor, unpad_dataproto

DISPATCH_ATTR = "_verl_dispatch_mode"


class Dispatch(Enum):
    ONE_TO_ALL = "one_to_all"  # same arguments to every rank, list of every rank's result back
    DP_COMPUTE_PROTO = "dp_compute_proto"  # DataProto split across ranks, results concatenated
    RANK_ZERO = "rank_zero"  # run on rank 0 only, its result back


def register(dispatch_mode: Dispatch = Dispatch.ONE_TO_ALL) -> Callable:
    """Marks a Worker method as callable from the driver through a worker group."""

    def decorate(fn: Callable) -> Callable:
        setattr(fn, DISPATCH_ATTR, dispatch_mode)
        return fn

    return decorate


def split_for_ranks(mode: Dispatch, world_size: int, args: tuple, kwargs: dict):
    """Returns (per-rank args, per-rank kwargs, context needed to collect the results)."""
    if mode in (Dispatch.ONE_TO_ALL, Dispatch.RANK_ZERO):
        n = 1 if mode is Dispatch.RANK_ZERO else world_size
        return [args] * n, [kwargs] * n, None
    if mode is Dispatch.DP_COMPUTE_PROTO:
        protos = [a for a in list(args) + list(kwargs.values()) if isinstance(a, DataProto)]
        if not protos:
            raise TypeError("DP_COMPUTE_PROTO methods take at least one DataProto argument")
        size = len(protos[0])
        if any(len(p) != size for p in protos):
            raise ValueError(f"DataProto arguments differ in length: {[len(p) for p in protos]}")
        pad_size = 0

        def shards(value):
            nonlocal pad_size
            if not isinstance(value, DataProto):
                return [value] * world_size
            padded, pad_size = pad_dataproto_to_divisor(value, world_size)
            return padded.chunk(world_size)

        per_arg = [shards(a) for a in args]
        per_kwarg = {k: shards(v) for k, v in kwargs.items()}
        rank_args = [tuple(a[r] for a in per_arg) for r in range(world_size)]
        rank_kwargs = [{k: v[r] for k, v in per_kwarg.items()} for r in range(world_size)]
        return rank_args, rank_kwargs, (size, pad_size)
    raise ValueError(f"unknown dispatch mode {mode}")


def collect_from_ranks(mode: Dispatch, outputs: list, context) -> Any:
    if mode is Dispatch.ONE_TO_ALL:
        return outputs
    if mode is Dispatch.RANK_ZERO:
        return outputs[0]
    size, pad_size = context
    merged = DataProto.concat(outputs)
    if pad_size:
        # A method may return several rows per input row (n samples per prompt): padding scales too.
        padded_size = size + pad_size
        if len(merged) % padded_size:
            raise ValueError(f"{len(merged)} output rows are not a multiple of {padded_size} input rows")
        merged = unpad_dataproto(merged, pad_size * (len(merged) // padded_size))
    return merged
