"""``python -m verl.trainer.main_ppo key=value ...``: PPO from the command line (Hydra, config
``verl/config/ppo_trainer.yaml``). The library entry is ``verl.trainer.run.run_ppo``."""

import functools
import sys

import hydra
from omegaconf import DictConfig

from verl.config import PPOConfig
from verl.config.compat import config_name_of, read_overrides
from verl.trainer.run import compose_typed, run_ppo
from verl.trainer.startup import to_typed


@hydra.main(config_path="pkg://verl.config", config_name="ppo_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_ppo(to_typed(cfg, PPOConfig))


if __name__ == "__main__":
    # peers' key names; every refused key, and every setting to change beside them, in one message
    name = config_name_of(sys.argv[1:], "ppo_trainer")
    sys.argv[1:] = read_overrides(sys.argv[1:], PPOConfig, functools.partial(compose_typed, name, PPOConfig))
    main()
