"""An engine spanning several GPUs inside the trainer's workers (rollout.tensor_model_parallel_size
> 1): consecutive ranks form an engine's group, each rank runs its shard of that engine, and every
rank of a group must ask its shard for the same generations in the same order. The trainer hands
each rank its own prompts, so a group first gathers its ranks' prompts to all of them, generates
for them all, and each rank keeps the responses to its own prompts.

Weights need no plan of their own: each rank already gathers the actor's full tensors for a sync,
and vLLM's loaders keep the slice of each that belongs to the rank's shard.
"""

import torch.distributed as dist

from verl.protocol import DataProto
from verl.workers.rollout.base import BaseRollout, SamplingParams, generate_batch


def engine_groups(world_size: int, tensor_parallel_size: int) -> list[list[int]]:
    """The ranks of each engine, consecutive (as vLLM lays out its tensor-parallel groups, so a
    group never spans nodes when it divides the GPUs per node)."""
    if tensor_parallel_size < 1 or world_size % tensor_parallel_size:
        raise ValueError(f"{world_size} ranks do not split into engines of {tensor_parallel_size}")
    return [list(range(start, start + tensor_parallel_size)) for start in range(0, world_size, tensor_parallel_size)]


class EngineGroup:
    """This rank's engine group, over gloo (prompts are host objects whatever the device)."""

    def __init__(self, rank: int, world_size: int, tensor_parallel_size: int):
        self.size = tensor_parallel_size
        self.rank_in_group = rank % tensor_parallel_size
        self.process_group = None
        for ranks in engine_groups(world_size, tensor_parallel_size):
            group = dist.new_group(ranks, backend="gloo")  # every rank creates every group, in order
            if rank in ranks:
                self.process_group = group

    def gather(self, prompts: DataProto) -> tuple[DataProto, slice]:
        """The prompts of every rank of the group (parts of one batch: the same width), in rank
        order, and where this rank's lie."""
        parts: list = [None] * self.size
        dist.all_gather_object(parts, prompts, group=self.process_group)
        start = sum(len(part) for part in parts[: self.rank_in_group])
        return DataProto.concat(parts), slice(start, start + len(prompts))

    def generate(self, rollout: BaseRollout, prompts: DataProto, params: SamplingParams) -> DataProto:
        """This rank's responses (``params.n`` per prompt), its shard having generated with the
        group's for every prompt of the group."""
        group_prompts, own = self.gather(prompts)
        return generate_batch(rollout, group_prompts, params)[own.start * params.n : own.stop * params.n]
