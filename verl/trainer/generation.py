"""The rollout loop the trainer calls: a plug-in (``actor_rollout_ref.rollout.generation_manager``).

A generation manager is built as ``Manager(config, actor_rollout_wg, tokenizer)`` and offers
``generate_sequences(batch) -> DataProto``. ``RolloutSettings.of(batch)`` says whether the call
validates and at which training step it happens; a manager may return metrics in
``meta_info["metrics"]``. Without a manager set, a prompt gets one generation
(``SingleTurnGenerationManager``), or with ``actor_rollout_ref.rollout.agent.env`` the engine's
agent loop over that environment (``verl.workers.rollout.agent_manager.AgentGenerationManager``).
"""

from typing import Any, Protocol

from verl.protocol import DataProto


class GenerationManager(Protocol):
    """The rollout-loop plug-in: prompts in (left-padded ``input_ids``, ``attention_mask``,
    ``position_ids`` and the rows' non-tensors), and out ``prompts``, ``responses``,
    ``response_mask`` (0 on tokens the loop inserted), ``input_ids``, ``attention_mask``,
    ``position_ids``, and ``rollout_log_probs`` when the rollout gives them; n rows per prompt."""

    def __init__(self, config: Any, actor_rollout_wg: Any, tokenizer: Any) -> None: ...

    def generate_sequences(self, batch: DataProto) -> DataProto: ...


class SingleTurnGenerationManager:
    def __init__(self, config: Any, actor_rollout_wg: Any, tokenizer: Any) -> None:
        self.actor_rollout_wg = actor_rollout_wg

    def generate_sequences(self, batch: DataProto) -> DataProto:
        out: DataProto = self.actor_rollout_wg.generate_sequences(batch)
        return out
