"""The reward and algorithm sections: how a response is scored and turned into advantages."""

from dataclasses import dataclass, field

from verl.algos.core_algos import ADV_ESTIMATOR_REGISTRY, KL_PENALTY_TYPES
from verl.utils.config import ConfigSection, option


def adv_estimators() -> list[str]:
    """Registered names, read when checked so that plug-in estimators count."""
    return sorted(ADV_ESTIMATOR_REGISTRY)


OLD_LOG_PROB_SOURCES = ("auto", "recompute", "from_update", "from_rollout")


@dataclass
class RewardModelConfig(ConfigSection):
    reward_manager: str = option(
        "verl.trainer.reward:RuleRewardManager",
        "module:Class turning a batch into token-level scores (a RewardManager); the default scores each "
        "response with custom_reward_function, or the built-in score of its data_source.",
    )


@dataclass
class CustomRewardFunctionConfig(ConfigSection):
    path: str | None = option(
        None,
        "A .py file or importable module defining the reward function; null: the built-in score of each row's "
        "data_source (verl.utils.reward_score: GSM8K, MATH, and the QA sets of Search-R1).",
        nullable=True,
    )
    name: str = option("compute_score", "The function: (data_source, solution_str, ground_truth, extra_info).")


@dataclass
class KLControlConfig(ConfigSection):
    type: str = option(
        "fixed", "In-reward KL coefficient: fixed, or adaptive towards target_kl.", choices=("fixed", "adaptive")
    )
    kl_coef: float = option(0.001, "(Initial) KL coefficient.", min=0)
    horizon: int = option(10000, "Adaptive: steps over which the coefficient adapts.", min=1)
    target_kl: float = option(0.1, "Adaptive: the KL aimed at.", min=0)


@dataclass
class RolloutCorrectionConfig(ConfigSection):
    bypass_mode: bool = option(
        False,
        "verl's name for algorithm.old_log_prob=from_rollout: true means that choice (old_log_prob must then be "
        "auto or from_rollout).",
    )


@dataclass
class AlgorithmConfig(ConfigSection):
    adv_estimator: str = option(
        "gae",
        "Advantage estimator: gae (PPO with a value critic), grpo, grpo_turn (GRPO plus turn rewards, e.g. "
        "the critic LLM's), reinforce (raw return), reinforce_plus_plus, rloo, or any registered name.",
        choices=adv_estimators,
    )
    gamma: float = option(1.0, "Discount factor.", min=0)
    lam: float = option(1.0, "GAE lambda.", min=0)
    norm_adv_by_std_in_grpo: bool = option(True, "GRPO: divide by the group's std; false: subtract the mean only.")
    use_kl_in_reward: bool = option(False, "Subtract kl_ctrl's coefficient times KL(actor||ref) from the reward.")
    kl_penalty: str = option("kl", "KL estimator of the in-reward penalty (as kl_loss_type).", choices=KL_PENALTY_TYPES)
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    old_log_prob: str = option(
        "auto",
        "Where the PPO ratio's old log-probs come from. recompute: a forward pass of the actor before the "
        "update (timing_s/old_log_prob). from_update: the update's own first forward pass, saving that pass; "
        "the update must be on-policy: one epoch (actor.ppo_epochs=1) over one mini-batch (a step's responses "
        "within actor.ppo_mini_batch_size×rollout.n, or ppo_mini_batch_responses), no use_kl_in_reward, "
        "trainer.critic_warmup=0. from_rollout: the "
        "rollout's log-probs (rollout_log_probs), so the ratio is against the policy that sampled; "
        "rollout/log_prob_diff_* compares them with the actor's own, from the update's first mini-batch. "
        "auto: from_update in a step whose update is on-policy, else recompute.",
        choices=OLD_LOG_PROB_SOURCES,
    )
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)

    def check(self, key: str) -> None:
        if self.rollout_correction.bypass_mode and self.old_log_prob not in ("auto", "from_rollout"):
            raise ValueError(
                f"{key}.rollout_correction.bypass_mode=true (verl's name for {key}.old_log_prob=from_rollout) "
                f"contradicts {key}.old_log_prob={self.old_log_prob}: set only one of them"
            )

    def old_log_prob_choice(self) -> str:
        """``old_log_prob``, with verl's ``rollout_correction.bypass_mode=true`` read as from_rollout."""
        return "from_rollout" if self.rollout_correction.bypass_mode else self.old_log_prob
