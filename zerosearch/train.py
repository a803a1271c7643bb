"""Search-agent training: the engine's PPO trainer with the multi-turn search rollout and QA reward.

    python -m zerosearch.train --config-name zerosearch_grpo key=value ...

Recipes live in ``configs/``; ``train_grpo.sh`` / ``train_ppo.sh`` / ``train_reinforce.sh`` take
ZeroSearch's KEY VALUE arguments and call this.
"""

import os

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from verl.trainer.main_ppo import run_ppo, to_typed
from zerosearch.config import ZeroSearchConfig, register_schema

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

register_schema()


def load_config(config_name: str, overrides: list[str] | None = None) -> ZeroSearchConfig:
    """The typed recipe ``configs/<config_name>.yaml`` after Hydra overrides."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return to_typed(compose(config_name, overrides=overrides or []), ZeroSearchConfig)


def check_search_config(config: ZeroSearchConfig) -> None:
    from zerosearch.search import BACKENDS, REAL_ENGINES

    if config.search.mode not in BACKENDS:
        raise ValueError(f"search.mode={config.search.mode!r} (SEARCH_MODE): use one of {list(BACKENDS)}")
    if config.search.engine not in REAL_ENGINES:
        raise ValueError(f"search.engine={config.search.engine!r} (SEARCH_ENGINE): use one of {list(REAL_ENGINES)}")
    if config.agent.max_turns < 0 or config.search.topk < 1:
        raise ValueError(f"agent.max_turns={config.agent.max_turns} must be >= 0 and search.topk={config.search.topk} >= 1")


def train(config: ZeroSearchConfig):
    check_search_config(config)
    return run_ppo(config)


@hydra.main(config_path=CONFIG_DIR, config_name="zerosearch_grpo", version_base=None)
def main(cfg: DictConfig) -> None:
    train(to_typed(cfg, ZeroSearchConfig))


if __name__ == "__main__":
    main()
