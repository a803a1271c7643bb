"""Typed configuration of the PPO trainer: the single source of defaults.

``ppo_trainer.yaml`` next to this file is written from these dataclasses (``make configs``; a test
fails when it is stale); Hydra validates every override against them, so an unknown key stops the run and names it.
Each leaf carries its help (README's key tables are rendered from it), and ``check_config_tree``
refuses bad values when the config is composed, naming the key. The sections live in ``data.py``,
``workers.py``, ``algorithm.py`` and ``trainer.py``; the whole tree and the checks that span
sections are here.
"""

import os
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from verl.config.algorithm import (
    OLD_LOG_PROB_SOURCES,
    AlgorithmConfig,
    CustomRewardFunctionConfig,
    KLControlConfig,
    RewardModelConfig,
    RolloutCorrectionConfig,
    adv_estimators,
)
from verl.config.data import DataConfig
from verl.config.trainer import RayInitConfig, RunConfig, TrainerConfig
from verl.config.workers import (
    DTYPE_NAMES,
    ActorConfig,
    ActorRolloutRefConfig,
    AgentLoopConfig,
    CriticConfig,
    CriticModelConfig,
    FSDPConfig,
    MixedPrecisionConfig,
    ModelConfig,
    OptimConfig,
    PolicyLossConfig,
    PolicyModelConfig,
    RefConfig,
    RolloutConfig,
    TrainableFSDPConfig,
    ValKwargs,
    require_packed_sequences,
)
from verl.utils.config import ConfigSection

__all__ = [
    "DTYPE_NAMES",
    "OLD_LOG_PROB_SOURCES",
    "ActorConfig",
    "AgentLoopConfig",
    "ActorRolloutRefConfig",
    "AlgorithmConfig",
    "CriticConfig",
    "CriticModelConfig",
    "CustomRewardFunctionConfig",
    "DataConfig",
    "FSDPConfig",
    "KLControlConfig",
    "MixedPrecisionConfig",
    "ModelConfig",
    "OptimConfig",
    "PPOConfig",
    "PolicyLossConfig",
    "PolicyModelConfig",
    "RayInitConfig",
    "RefConfig",
    "RewardModelConfig",
    "RolloutConfig",
    "RolloutCorrectionConfig",
    "RunConfig",
    "TrainableFSDPConfig",
    "TrainerConfig",
    "ValKwargs",
    "adv_estimators",
    "register_schema",
    "require_packed_sequences",
]


@dataclass
class PPOConfig(ConfigSection):
    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = field(default_factory=CustomRewardFunctionConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)

    def response_width(self) -> int:
        """Tokens of one response as the trainer holds it: one generation, or with an agent environment
        every turn's generation and every observation."""
        agent = self.actor_rollout_ref.rollout.agent
        if not agent.env:
            return self.data.max_response_length
        return (agent.max_turns + 1) * self.data.max_response_length + agent.max_turns * agent.max_obs_length

    def max_sequence_length(self) -> int:
        """The longest prompt + response a rollout may be asked to continue or produce."""
        return self.data.max_prompt_length + self.response_width()

    def validates(self) -> bool:
        """Whether the run validates at all: a validation set, and validation before or during training."""
        return bool(self.data.val_files) and (self.trainer.val_before_train or self.trainer.test_freq > 0)

    def critic_model_path(self) -> str:
        """The value model's folder or hub id: critic.model.path, else the policy's."""
        return os.path.expanduser(self.critic.model.path or self.actor_rollout_ref.model.path)

    def mini_batch_responses(self, critic: bool = False) -> tuple[int, str]:
        """Responses per optimizer step over all workers, the actor's or the critic's (by default the
        actor's), and the key that sets it."""
        actor, n = self.actor_rollout_ref.actor, self.actor_rollout_ref.rollout.n
        if critic and self.critic.ppo_mini_batch_responses is not None:
            return self.critic.ppo_mini_batch_responses, "critic.ppo_mini_batch_responses"
        if critic and self.critic.ppo_mini_batch_size is not None:
            return self.critic.ppo_mini_batch_size * n, "critic.ppo_mini_batch_size"
        if actor.ppo_mini_batch_responses is not None:
            return actor.ppo_mini_batch_responses, "actor_rollout_ref.actor.ppo_mini_batch_responses"
        return actor.ppo_mini_batch_size * n, "actor_rollout_ref.actor.ppo_mini_batch_size"

    def check(self, key: str) -> None:
        """Settings that only fail together: batch shapes over the workers, estimator needs."""
        data, rollout = self.data, self.actor_rollout_ref.rollout
        world = self.trainer.nnodes * self.trainer.n_gpus_per_node
        if (data.train_batch_size * rollout.n) % world:  # else some worker would train on a repeated row
            raise ValueError(
                f"data.train_batch_size×rollout.n={data.train_batch_size * rollout.n} responses must split evenly "
                f"over {world} workers (trainer.nnodes×trainer.n_gpus_per_node)"
            )
        roles = [False] + ([True] if self.algorithm.adv_estimator == "gae" else [])
        for critic in roles:
            responses, name = self.mini_batch_responses(critic)
            if name.endswith("_size") and (data.train_batch_size * rollout.n) % responses:
                raise ValueError(
                    f"data.train_batch_size={data.train_batch_size} is not a multiple of {name}="
                    f"{responses // rollout.n} (ppo_mini_batch_responses counts responses and lets the last "
                    "mini-batch be smaller)"
                )
            if responses % world:
                raise ValueError(
                    f"{name}: {responses} responses per mini-batch must split evenly over {world} workers "
                    "(trainer.nnodes×trainer.n_gpus_per_node)"
                )
        tp = rollout.tensor_model_parallel_size
        if self.trainer.n_gpus_per_node % tp:
            raise ValueError(
                f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} must divide trainer.n_gpus_per_node="
                f"{self.trainer.n_gpus_per_node}: an engine's group is consecutive ranks of one node"
            )
        old_log_prob = self.algorithm.old_log_prob_choice()
        if old_log_prob == "from_rollout" and (rollout.top_k > 0 or rollout.top_p < 1):
            raise ValueError(
                "algorithm.old_log_prob=from_rollout (verl: algorithm.rollout_correction.bypass_mode=true) takes "
                f"the rollout's log-probs as the old ones, but actor_rollout_ref.rollout.top_k={rollout.top_k} / "
                f"top_p={rollout.top_p} filter the distribution they come from, which the actor does not: turn the "
                "filters off or choose another algorithm.old_log_prob"
            )
        off_policy = self.off_policy_reasons(data.train_batch_size * rollout.n, step=1)
        if old_log_prob == "from_update" and off_policy:
            raise ValueError(
                "algorithm.old_log_prob=from_update takes the old log-probs from the update's first forward pass, "
                f"which needs an on-policy update, but {'; '.join(off_policy)}: use algorithm.old_log_prob=auto "
                "(from_update in the steps that allow it, else recompute) or recompute"
            )
        if self.algorithm.adv_estimator in ("grpo", "grpo_turn", "rloo") and rollout.n < 2:
            raise ValueError(
                f"algorithm.adv_estimator={self.algorithm.adv_estimator} compares responses to the same "
                "prompt: set actor_rollout_ref.rollout.n >= 2"
            )

    def off_policy_reasons(self, rows: int, step: int) -> list[str]:
        """Why the actor's update at ``step`` over ``rows`` responses is not on-policy, none when it is.
        On-policy: one epoch over one mini-batch, so the old log-probs are the policy's own before its
        step, and nothing needs them before the update (a KL penalty in the reward) or keeps the actor
        from updating (the critic's warm-up)."""
        actor = self.actor_rollout_ref.actor
        reasons = []
        if actor.ppo_epochs != 1:
            reasons.append(f"actor_rollout_ref.actor.ppo_epochs={actor.ppo_epochs} makes several epochs")
        mini_batch, name = self.mini_batch_responses()
        if rows > mini_batch:
            reasons.append(f"{rows} responses make several mini-batches of {mini_batch} ({name})")
        if self.algorithm.use_kl_in_reward:
            reasons.append("algorithm.use_kl_in_reward=true needs them before the update")
        if step <= self.trainer.critic_warmup:
            reasons.append(
                f"step {step} is within trainer.critic_warmup={self.trainer.critic_warmup}, with no actor update"
            )
        return reasons


def register_schema() -> None:
    """Makes the dataclasses available to Hydra as ``ppo_trainer_schema``."""
    ConfigStore.instance().store(name="ppo_trainer_schema", node=PPOConfig)
