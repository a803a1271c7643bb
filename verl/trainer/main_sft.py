"""``python -m verl.trainer.main_sft key=value ...``: supervised fine-tuning from the command line
(Hydra, config ``verl/config/sft_trainer.yaml``). The library entry is ``verl.trainer.run.run_sft``."""

import hydra
from omegaconf import DictConfig

from verl.config.sft import SFTConfig
from verl.trainer.run import run_sft
from verl.trainer.startup import to_typed


@hydra.main(config_path="pkg://verl.config", config_name="sft_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_sft(to_typed(cfg, SFTConfig))


if __name__ == "__main__":
    main()
