"""Typed configuration of the search agent, composed over the engine's PPOConfig.

Recipes under ``configs/`` set values on top of these defaults; ``train_*.sh`` maps ZeroSearch's
KEY VALUE arguments onto these keys.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from verl.trainer.config import PPOConfig


@dataclass
class SimulatorConfig:
    # OpenAI-compatible chat-completions endpoints (sglang / vLLM servers), used round-robin.
    server_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:6001/v1"])
    model: str = "Qwen2.5-3B-Instruct"  # served model name, or a local path when in_process
    in_process: bool = False  # host `model` with transformers on a Ray actor (CPU machines, tests)
    api_key_env: str | None = None  # environment variable holding the servers' API key; None: no key
    max_tokens: int = 256
    temperature: float = 0.0


@dataclass
class CurriculumConfig:
    start_threshold: float = 0.0  # noise probability at step 0 (START_THRESHOLD)
    end_threshold: float = 0.5  # noise probability at the last step (END_THRESHOLD)
    base: float = 4.0  # b in p_s + (b^(i/m) - 1)/(b - 1) * (p_e - p_s)


@dataclass
class SearchConfig:
    mode: str = (
        "simulate_prompt"  # training backend (SEARCH_MODE): simulate_prompt | simulate_sft | google | wiki | corpus
    )
    # validation/evaluation backend (SEARCH_ENGINE): google | wiki | corpus | none (no documents: closed book)
    engine: str = "corpus"
    topk: int = 5  # documents per search (TOPK)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    retriever_url: str = "http://127.0.0.1:8000/retrieve"  # `wiki`: a Search-R1-style retrieval server
    corpus_path: str | None = None  # `corpus`: JSONL with "contents" (or "title" + "text") per line
    # `google`: environment variable holding the SerpAPI key; ZeroSearch's SER_API_KEY is read when it is unset.
    google_api_key_env: str = "SERPAPI_API_KEY"
    concurrency: int = 16  # requests in flight per batch
    timeout_s: float = 60.0  # per request
    max_retries: int = 3  # after the first attempt; then the request yields no documents and is counted
    backoff_s: float = 1.0  # first retry delay, doubled each retry
    cache: str = "auto"  # auto (disk for google, memory otherwise) | memory | disk | none
    cache_dir: str = "~/.cache/criticsearch/search"


@dataclass
class AgentConfig:
    max_turns: int = 5  # searches per trajectory before the final answer-only turn (MAX_TURNS)
    max_obs_length: int = 512  # tokens of one observation; longer ones are truncated
    reward_metric: str = "f1"  # training reward: em | cover_em | f1


@dataclass
class ZeroSearchConfig(PPOConfig):
    agent: AgentConfig = field(default_factory=AgentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def register_schema() -> None:
    ConfigStore.instance().store(name="zerosearch_schema", node=ZeroSearchConfig)


# --- the CPU demonstration (python -m zerosearch.demo; configs/demo.yaml mirrors these) -------


@dataclass
class DemoWorldConfig:
    seed: int = 0
    people: int = 60
    orgs: int = 30
    cities: int = 15
    countries: int = 5
    test_fraction: float = 0.2  # share of each kind of entity whose questions are held out
    vocab_size: int = 1000  # the BPE tokenizer both models share, trained on the world's texts


@dataclass
class DemoModelConfig:
    """A randomly initialised Qwen2-architecture causal LM."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    tie_word_embeddings: bool = True
    seed: int = 0


@dataclass
class DemoSFTPhaseConfig:
    model: DemoModelConfig = field(default_factory=DemoModelConfig)
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    overrides: list[str] = field(default_factory=list)  # further main_sft overrides


@dataclass
class DemoSimulatorConfig(DemoSFTPhaseConfig):
    pairs: int = 4000  # (query, useful|noisy) -> documents tuning pairs from training questions
    # The pairs are spread over the world and this many copies with redrawn facts, so the simulator
    # learns to write the answer it is given rather than the one it remembers.
    redrawn_worlds: int = 3
    eval_pairs: int = 100  # held-out requests on which useful and noisy answer rates are measured
    max_tokens: int = 40  # new tokens per simulated search: one document at topk=1


@dataclass
class DemoWarmStartConfig(DemoSFTPhaseConfig):
    search_rate: float = 0.3  # share of warm-start trajectories that search; the rest guess
    # Further passes over the questions, all searched but the decision untrained, each on the world
    # with its facts redrawn: the answer must be read off the documents, it cannot be remembered.
    search_practice: int = 4


@dataclass
class DemoRLConfig:
    recipe: str = "zerosearch_grpo"  # a recipe under configs/: zerosearch_grpo | zerosearch_reinforce
    steps: int = 30
    batch_size: int = 16  # questions per step
    n: int = 5  # rollouts per question
    lr: float = 2e-4
    max_response_length: int = 40  # new tokens per turn
    max_obs_length: int = 64
    start_threshold: float = 0.0  # noise curriculum of the simulated search
    end_threshold: float = 0.3
    test_freq: int = 5  # validation on the corpus engine every so many steps
    overrides: list[str] = field(default_factory=list)  # further zerosearch.train overrides


@dataclass
class DemoConfig:
    out_dir: str = "runs/demo"
    workers: int = 2  # training processes (trainer.n_gpus_per_node)
    topk: int = 1  # documents per search, simulated and real
    policy_instruction: str = "brief"  # brief (the tags only) | full: the prompt's instruction (prompts.py)
    max_turns: int = 2  # searches per question; two-hop questions need two
    eval_batch_size: int = 64
    world: DemoWorldConfig = field(default_factory=DemoWorldConfig)
    simulator: DemoSimulatorConfig = field(
        default_factory=lambda: DemoSimulatorConfig(model=DemoModelConfig(seed=1), steps=800, lr=3e-3)
    )
    warm_start: DemoWarmStartConfig = field(default_factory=lambda: DemoWarmStartConfig(steps=1000))
    rl: DemoRLConfig = field(default_factory=DemoRLConfig)


def register_demo_schema() -> None:
    ConfigStore.instance().store(name="demo_schema", node=DemoConfig)
