"""The trainer's generation manager for any tool environment (``actor_rollout_ref.rollout.agent.env``):
one environment per trajectory, the engine's agent loop, and the trajectories packed as the
trainer's batch."""

from typing import Any

import numpy as np
import torch

from verl.protocol import DataProto, RolloutSettings
from verl.utils.batch_schema import Key, sequence_tensors
from verl.utils.import_utils import load_object
from verl.utils.torch_functional import right_pad
from verl.workers.rollout.agent_loop import AgentEnv, AgentLoop, LoopResult


def object_column(values: list) -> np.ndarray:
    """A 1-D object array, even when every value is a list of the same length."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


class AgentGenerationManager:
    """The engine's multi-turn agent loop over the environment class named by
    ``actor_rollout_ref.rollout.agent.env``: each trajectory's response holds every turn and
    observation (mask 0 on observations), ``num_turns`` and each environment's ``outcome`` columns
    go to the reward."""

    env_key = "actor_rollout_ref.rollout.agent.env"

    def __init__(self, config: Any, actor_rollout_wg: Any, tokenizer: Any) -> None:
        self.config = config
        agent = config.actor_rollout_ref.rollout.agent
        if not agent.env:
            raise ValueError(f"{type(self).__name__} runs an environment: set {self.env_key}=module:Class")
        self.env_class: type[AgentEnv] = load_object(agent.env, self.env_key)
        if not (isinstance(self.env_class, type) and issubclass(self.env_class, AgentEnv)):
            raise ValueError(f"{self.env_key}={agent.env} is not an AgentEnv (verl.workers.rollout.agent_loop)")
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.response_budget = config.response_width()
        self.loop = AgentLoop(
            actor_rollout_wg.generate_sequences,  # not through self: no cycle keeps a dropped manager's engine alive
            tokenizer,
            stop=self.env_class.stops(config),
            turn_tokens=config.data.max_response_length,
            response_budget=self.response_budget,
            max_obs_length=agent.max_obs_length,
            max_turns=agent.max_turns,
            scheduling=agent.scheduling,
            max_concurrent_searches=agent.max_concurrent_searches,
            gather_window_s=agent.gather_window_s,
        )

    def samples(self, batch: DataProto, settings: RolloutSettings) -> tuple[DataProto, int]:
        """Each prompt's row repeated once per response to sample, and how many that is."""
        rollout = self.config.actor_rollout_ref.rollout
        n = rollout.val_kwargs.n if settings.validate else rollout.n
        return batch.repeat(n, interleave=True), n

    def run(self, batch: DataProto, envs: list, settings: RolloutSettings) -> LoopResult:
        ids, mask = batch.batch[Key.INPUT_IDS], batch.batch[Key.ATTENTION_MASK].bool()
        return self.loop.run([row[m].tolist() for row, m in zip(ids, mask, strict=True)], envs, settings)

    def generate_sequences(self, batch: DataProto) -> DataProto:
        settings = RolloutSettings.of(batch)
        batch, n = self.samples(batch, settings)
        extra = batch.non_tensor_batch
        rows = [{**{k: v[i] for k, v in extra.items()}, "sample": i % n} for i in range(len(batch))]
        envs = self.env_class.for_rows(self.config, rows, settings)
        result = self.run(batch, envs, settings)
        outcomes = [env.outcome() for env in envs]
        names = sorted({k for o in outcomes for k in o})
        taken = set(names) & ({"num_turns"} | set(extra))
        if taken:
            raise ValueError(
                f"{self.env_class.__name__}.outcome() names {sorted(taken)}, which the batch already has (the data's "
                "columns and num_turns): give them other names"
            )
        columns = {key: object_column([o.get(key) for o in outcomes]) for key in names}
        out = self.pack(batch, result, {"num_turns": np.array([t.turns for t in result.rows]), **columns})
        out.meta_info["metrics"] = dict(result.metrics)
        return out

    def pack(
        self,
        batch: DataProto,
        result: LoopResult,
        non_tensors: dict[str, np.ndarray],
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> DataProto:
        """The trajectories as the trainer's batch, right-padded to the response budget, with the
        prompts' own columns kept."""
        width, rows = self.response_budget, result.rows
        out_tensors = sequence_tensors(
            batch.batch[Key.INPUT_IDS],
            batch.batch[Key.ATTENTION_MASK],
            right_pad([t.response for t in rows], width, self.pad_id, torch.long),
            right_pad([t.mask for t in rows], width, 0, torch.long),
            # observations are part of the context the policy attends to
            right_pad([[1] * len(t.response) for t in rows], width, 0, torch.long),
        )
        if result.has_log_probs:  # every turn came with the rollout's log-probs
            out_tensors[Key.ROLLOUT_LOG_PROBS] = right_pad([t.log_probs for t in rows], width, 0.0, torch.float32)
        out_tensors.update(tensors or {})
        out = DataProto.from_dict(tensors=out_tensors, non_tensors=non_tensors, meta_info=dict(batch.meta_info))
        return out.union(DataProto.from_dict(non_tensors=dict(batch.non_tensor_batch)))
