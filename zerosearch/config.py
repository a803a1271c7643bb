"""Typed configuration of the search agent, composed over the engine's PPOConfig.

Recipes under ``configs/`` set values on top of these defaults; ``train_*.sh`` maps ZeroSearch's
KEY VALUE arguments onto these keys.
"""

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from verl.trainer.config import PPOConfig


@dataclass
class SimulatorConfig:
    # OpenAI-compatible chat-completions endpoints (sglang / vLLM servers), used round-robin.
    server_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:6001/v1"])
    model: str = "Qwen2.5-3B-Instruct"  # served model name, or a local path when in_process
    in_process: bool = False  # host `model` with transformers on a Ray actor (CPU machines, tests)
    api_key_env: Optional[str] = None  # environment variable holding the servers' API key; None: no key
    max_tokens: int = 256
    temperature: float = 0.0


@dataclass
class CurriculumConfig:
    start_threshold: float = 0.0  # noise probability at step 0 (START_THRESHOLD)
    end_threshold: float = 0.5  # noise probability at the last step (END_THRESHOLD)
    base: float = 4.0  # b in p_s + (b^(i/m) - 1)/(b - 1) * (p_e - p_s)


@dataclass
class SearchConfig:
    mode: str = "simulate_prompt"  # training backend (SEARCH_MODE): simulate_prompt | simulate_sft | google | wiki | corpus
    engine: str = "corpus"  # validation/evaluation backend (SEARCH_ENGINE): google | wiki | corpus
    topk: int = 5  # documents per search (TOPK)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    retriever_url: str = "http://127.0.0.1:8000/retrieve"  # `wiki`: a Search-R1-style retrieval server
    corpus_path: Optional[str] = None  # `corpus`: JSONL with "contents" (or "title" + "text") per line
    google_api_key_env: str = "SERPAPI_API_KEY"  # `google`: environment variable holding the key
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
