"""Typed configuration of the search agent, composed over the engine's PPOConfig (the CPU
demonstration's is ``zerosearch.demo_config``).

Recipes under ``configs/`` set values on top of these defaults; ``train_*.sh`` maps ZeroSearch's
KEY VALUE arguments onto these keys. Each leaf carries its help, rendered into README's key tables.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from verl.algos.core_algos import TURN_REWARD_NORMS
from verl.config import ActorRolloutRefConfig, PPOConfig
from verl.utils.config import ConfigSection, option
from verl.utils.reward_score.qa import METRICS
from zerosearch.retry import RetryConfig
from zerosearch.search.names import BACKENDS, EVAL_ENGINES, SIMULATED_MODES

CACHE_MODES = ("auto", "memory", "disk", "none")
RECIPES = ("zerosearch_grpo", "zerosearch_reinforce", "zerosearch_ppo")


@dataclass
class EndpointConfig(ConfigSection):
    """An OpenAI-compatible chat model, served (vLLM, sglang) or hosted in process: the search
    simulator and the critic LLM each nest one, and set their own defaults below."""

    server_urls: list[str] = option([], "Chat-completions endpoints, used in turn.")
    model: str = option("", "Served model name, or a local folder when hosted in process.")
    api_key_env: str | None = option(
        None, "Environment variable holding the servers' API key; null: no key.", nullable=True
    )
    max_tokens: int = option(256, "New tokens of one reply.", min=1)
    temperature: float = option(0.0, "Sampling temperature; 0: greedy.", min=0)


@dataclass
class SimulatorConfig(EndpointConfig):
    server_urls: list[str] = option(
        ["http://127.0.0.1:6001/v1"],
        "OpenAI-compatible chat-completions endpoints (sglang, vLLM) of the simulation LLM, used in turn.",
        key="IP",
    )
    model: str = option(
        "Qwen2.5-3B-Instruct", "Served model name, or a local folder when in_process.", key="SIMULATION_LLM"
    )
    in_process: bool = option(False, "Host `model` with transformers on a Ray actor (CPU machines, tests).")


@dataclass
class CurriculumConfig(ConfigSection):
    start_threshold: float = option(
        0.0, "Noise probability at the first step, in [0, 1].", min=0, key="START_THRESHOLD"
    )
    end_threshold: float = option(0.5, "Noise probability at the last step, in [0, 1].", min=0, key="END_THRESHOLD")
    base: float = option(4.0, "b in p = p_s + (b^(i/m) - 1)/(b - 1) * (p_e - p_s); > 1 rises slowly then fast.")

    def check(self, key: str) -> None:
        for name in ("start_threshold", "end_threshold"):
            if getattr(self, name) > 1:
                raise ValueError(f"{key}.{name}={getattr(self, name)} is a probability and must lie in [0, 1]")
        if self.base <= 0 or self.base == 1:
            raise ValueError(f"{key}.base={self.base} must be positive and not 1")


@dataclass
class SearchConfig(ConfigSection):
    mode: str = option(
        "simulate_prompt",
        "Training search: simulate_prompt, simulate_sft, google, wiki, corpus or none.",
        choices=BACKENDS,
        key="SEARCH_MODE",
    )
    engine: str = option(
        "corpus",
        "Validation and evaluation search: google, wiki, corpus, or none (no documents: closed book).",
        choices=EVAL_ENGINES,
        key="SEARCH_ENGINE",
    )
    topk: int = option(5, "Documents per search.", min=1, key="TOPK")
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    retriever_url: str = option(
        "http://127.0.0.1:8000/retrieve", "`wiki`: a Search-R1-style retrieval server.", key="RETRIEVER_URL"
    )
    corpus_path: str | None = option(
        None,
        '`corpus`: JSONL with "contents" (or "title" and "text") per line.',
        nullable=True,
        key="CORPUS_PATH",
    )
    google_api_key_env: str = option(
        "SERPAPI_API_KEY", "`google`: environment variable holding the SerpAPI key; SER_API_KEY is read when unset."
    )
    retry: RetryConfig = field(default_factory=RetryConfig)
    cache: str = option(
        "auto", "Result cache: auto (disk for google, memory otherwise), memory, disk or none.", choices=CACHE_MODES
    )
    cache_dir: str = option("~/.cache/criticsearch/search", "Folder of the disk cache.")


@dataclass
class AgentConfig(ConfigSection):
    reward_metric: str = option("f1", "The training reward: em, cover_em or f1.", choices=tuple(METRICS))


@dataclass
class RetrospectiveCriticConfig(ConfigSection):
    enable: bool = option(
        False,
        "After each training rollout, grade every search turn with the gold answers in hand; a useful one "
        "earns +critictor.turn_reward_coef on its last sampled token.",
        key="RETROSPECTIVE_CRITIC",
    )
    penalize_useless: bool = option(True, "A search graded useless earns -turn_reward_coef; false: 0.")


@dataclass
class InteractiveCriticConfig(ConfigSection):
    enable: bool = option(
        False,
        "During training rollouts, after a search's documents, append one line of the critic's feedback "
        "as <critique> ... </critique> (an observation: mask 0). Prepare data with --critiques so the "
        "instruction mentions it.",
        key="INTERACTIVE_CRITIC",
    )
    probability: float = option(
        1.0, "Chance that a search gets a critique, drawn per search (seeded).", min=0, key="CRITIQUE_PROBABILITY"
    )
    vague_start: float = option(0.0, "Chance that a critique is deliberately vague at the first step.", min=0)
    vague_end: float = option(
        0.5, "The same at the last step; it rises as the noise curriculum does (search.curriculum.base).", min=0
    )
    privileged: bool = option(
        False, "Tell the interactive critic the gold answers and the gold path's facts; off, it sees neither."
    )
    max_tokens: int = option(48, "New tokens of one critique.", min=1)

    def check(self, key: str) -> None:
        for name in ("probability", "vague_start", "vague_end"):
            if getattr(self, name) > 1:
                raise ValueError(f"{key}.{name}={getattr(self, name)} is a probability and must lie in [0, 1]")


@dataclass
class CritictorConfig(EndpointConfig):
    """The critic LLM that reviews the policy's searches (not the PPO value model, `critic`)."""

    backend: str = option(
        "server",
        "server: an OpenAI-compatible server (vLLM, sglang); in_process: `model` is a local folder hosted "
        "with transformers on a Ray actor (CPU, tests); rule: a rule judge (critictor.rule_judge), for "
        "ablations and controls.",
        choices=("server", "in_process", "rule"),
        key="CRITIC_BACKEND",
    )
    rule_judge: str = option(
        "path",
        "The rule backend's judge. path: a search is useful when its documents bring a fact of the gold path "
        "(extra_info.supporting; else the answer) that no earlier search brought; answer: when a gold answer "
        "is in its documents (marks bridge hops useless); shuffled: the path judge's verdicts permuted over "
        "the batch's searches, a control with the same reward scale and no information.",
        choices=("path", "answer", "shuffled"),
        key="RULE_JUDGE",
    )
    server_urls: list[str] = option(
        ["http://127.0.0.1:6002/v1"], "Chat-completions endpoints of the critic, used in turn.", key="CRITIC_IP"
    )
    model: str = option(
        "Qwen2.5-7B-Instruct", "Served model name, or a local folder when in_process.", key="CRITIC_LLM"
    )
    style: str = option(
        "prompt",
        "Request format: prompt (instructions, for an instruct model) or sft (the bare fields a tuned critic "
        "learned, as the demo's does).",
        choices=("prompt", "sft"),
    )
    turn_reward_coef: float = option(
        0.1,
        "Size of one turn reward; the outcome reward stays on the last token.",
        min=0,
        key="TURN_REWARD_COEF",
    )
    turn_reward_norm: str = option(
        "none",
        "How a batch's turn rewards are normalised over the graded searches of each prompt's group before they "
        "join the advantage: none (as given: turn_reward_coef is a real weight); group_mean (minus the group's "
        "mean turn reward: a search is rewarded against the group's typical one, so a high share of useless "
        "searches does not push searching down as a whole); group_z (z-scored: the weight cancels; for "
        "comparison). critictor/turn_reward_mean is measured before it.",
        choices=TURN_REWARD_NORMS,
    )
    retry: RetryConfig = field(default_factory=RetryConfig)
    retrospective: RetrospectiveCriticConfig = field(default_factory=RetrospectiveCriticConfig)
    interactive: InteractiveCriticConfig = field(default_factory=InteractiveCriticConfig)

    def enabled(self) -> bool:
        return self.retrospective.enable or self.interactive.enable

    def turn_reward(self, useful: bool) -> float:
        """A graded search's reward: +turn_reward_coef when useful; when not, -turn_reward_coef, or 0
        with retrospective.penalize_useless=false."""
        if useful:
            return self.turn_reward_coef
        return -self.turn_reward_coef if self.retrospective.penalize_useless else 0.0

    def check(self, key: str) -> None:
        if self.enabled() and self.backend == "server" and not self.server_urls:
            raise ValueError(f"{key}.server_urls (CRITIC_IP) is empty: the critic needs a server")
        if self.interactive.enable and self.backend == "rule" and not self.interactive.privileged:
            raise ValueError(
                f"{key}.backend=rule judges by the gold answers, which the interactive critic sees only with "
                f"{key}.interactive.privileged=true"
            )


# Estimators that see only a response's summed reward: turn rewards need a per-token one.
OUTCOME_ONLY_ESTIMATORS = ("grpo", "rloo")


def search_agent_rollout() -> ActorRolloutRefConfig:
    """The engine's defaults, with the search agent as the rollout's loop and environment."""
    config = ActorRolloutRefConfig()
    config.rollout.generation_manager = "zerosearch.generation:SearchGenerationManager"
    config.rollout.agent.env = "zerosearch.env:SearchEnv"
    return config


@dataclass
class ZeroSearchConfig(PPOConfig):
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=search_agent_rollout)
    agent: AgentConfig = field(default_factory=AgentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    critictor: CritictorConfig = field(default_factory=CritictorConfig)

    def searches_used(self) -> set[str]:
        """The search backends this run contacts: the training one, and the validation one when it validates."""
        return {self.search.mode} | ({self.search.engine} if self.validates() else set())

    def check(self, key: str) -> None:
        super().check(key)
        used = self.searches_used()
        if "corpus" in used and not self.search.corpus_path:
            raise ValueError("search.corpus_path is not set: the `corpus` search needs a JSONL corpus")
        if (
            used & set(SIMULATED_MODES)
            and not self.search.simulator.in_process
            and not self.search.simulator.server_urls
        ):
            raise ValueError("search.simulator.server_urls (IP) is empty: the simulated search needs a server")
        estimator = self.algorithm.adv_estimator
        if self.critictor.retrospective.enable and estimator in OUTCOME_ONLY_ESTIMATORS:
            raise ValueError(
                f"algorithm.adv_estimator={estimator} sums each response's rewards into one outcome, so the "
                "critic's turn rewards (critictor.retrospective.enable) would lose their turns: use grpo_turn, "
                "or gae, reinforce or reinforce_plus_plus"
            )


@dataclass
class EvalArguments(ConfigSection):
    """The arguments of ``python -m zerosearch.eval`` (``--model``, ``--batch-size``, ...); the rest of an
    evaluation's settings are keys of the training config, given as overrides."""

    model: str = option("", "Model folder or trainer checkpoint global_step_N.", key="MODEL_PATH")
    data: list[str] = option(
        [], "A test parquet file (repeat for several; eval.sh takes a folder for its test.parquet).", key="DATA_PATH"
    )
    engine: str = option(
        "corpus",
        "The search the policy uses; none: every search returns no documents (closed book).",
        choices=EVAL_ENGINES,
        key="SEARCH_ENGINE",
    )
    out: str = option("", "Output folder.", key="OUT_DIR")
    batch_size: int = option(64, "Questions per rollout batch.", min=1, key="BATCH_SIZE")
    device: str | None = option(
        None, "cpu or cuda; null: cuda when there is one.", choices=("cpu", "cuda"), nullable=True
    )


def register_schema() -> None:
    ConfigStore.instance().store(name="zerosearch_schema", node=ZeroSearchConfig)
