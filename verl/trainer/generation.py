"""The rollout loop the trainer calls: a plug-in (``actor_rollout_ref.rollout.generation_manager``).

A generation manager is built as ``Manager(config, actor_rollout_wg, tokenizer)`` and offers
``generate_sequences(batch) -> DataProto``. ``batch.meta_info`` carries ``validate`` (greedy
evaluation), ``global_steps`` and ``total_steps``; a manager may return metrics in
``meta_info["metrics"]``. Multi-turn agents replace this single-turn default.
"""

from verl.protocol import DataProto


class SingleTurnGenerationManager:
    def __init__(self, config, actor_rollout_wg, tokenizer):
        self.actor_rollout_wg = actor_rollout_wg

    def generate_sequences(self, batch: DataProto) -> DataProto:
        return self.actor_rollout_wg.generate_sequences(batch)
