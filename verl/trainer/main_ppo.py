"""``python -m verl.trainer.main_ppo key=value ...``: PPO from the command line (Hydra, config
``verl/config/ppo_trainer.yaml``). The library entry is ``verl.trainer.run.run_ppo``."""

import hydra
from omegaconf import DictConfig

from verl.config import PPOConfig
from verl.trainer.run import run_ppo
from verl.trainer.startup import to_typed


@hydra.main(config_path="pkg://verl.config", config_name="ppo_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_ppo(to_typed(cfg, PPOConfig))


if __name__ == "__main__":
    main()
