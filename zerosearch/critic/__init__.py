"""The Critictor: a critic LLM that grades the policy's searches with the gold answers in hand
(turn rewards) and may comment after a search during the rollout (critiques)."""

from typing import TYPE_CHECKING

from zerosearch.critic.critics import CritiqueRequest, LLMCritic, RuleCritic, Trajectory, Verdicts
from zerosearch.critic.judges import Fact, agreement
from zerosearch.critic.turns import Turn

if TYPE_CHECKING:
    from zerosearch.config import CritictorConfig

Critic = LLMCritic | RuleCritic

__all__ = ["Critic", "CritiqueRequest", "Fact", "Trajectory", "Turn", "Verdicts", "agreement", "build_critic"]


def build_critic(config: "CritictorConfig", seed: int = 0) -> Critic:
    """The backend named by ``config.backend``; an LLM client is built but connects on first use.
    ``seed`` seeds the shuffled control."""
    if config.backend == "rule":
        return RuleCritic(config.rule_judge, seed)
    from zerosearch.llm import build_chat_llm

    llm = build_chat_llm(config, config.backend == "in_process", config.retry)
    return LLMCritic(llm, config.max_tokens, config.temperature, config.interactive.max_tokens, config.style)
