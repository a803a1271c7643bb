"""Typed configuration of the SFT trainer: the single source of defaults.

``sft_trainer.yaml`` next to this file is written from these dataclasses (``make configs``; a test
fails when it is stale); Hydra validates every override against them, and each leaf carries its help.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from verl.config import ModelConfig, OptimConfig, RayInitConfig, RunConfig, TrainableFSDPConfig
from verl.utils.config import ConfigSection, option
from verl.utils.sft_dataset import TRUNCATIONS


@dataclass
class SFTDataConfig(ConfigSection):
    train_files: Any = option("~/data/sft_train.parquet", "Training parquet file, or a list of them.")
    val_files: Any = option(None, "Validation parquet file or list; null: no validation.", nullable=True)
    prompt_key: str = option("prompt", "Column of the prompt: chat messages (templated) or a plain string.")
    response_key: str = option("response", "Column of the response to learn.")
    max_length: int = option(1024, "Tokens of prompt + response_prefix + response + eos.", min=1)
    truncation: str = option(
        "right",
        "right: cut an overlong response at its end; error: refuse the row, naming it.",
        choices=TRUNCATIONS,
    )
    train_batch_size: int = option(256, "Rows per optimizer step, over all ranks.", min=1)
    micro_batch_size_per_gpu: int = option(4, "Rows per forward/backward on one worker.", min=1)
    shuffle: bool = option(True, "Shuffle the training set each epoch (seeded by data.seed + epoch).")
    seed: int = option(1, "Seed of the training-set order.")


@dataclass
class SFTOptimConfig(OptimConfig):
    lr: float = option(1e-5, "AdamW learning rate.", min=0)
    clip_grad: float = option(1.0, "Max global gradient norm.", min=0)


@dataclass
class SFTTrainerConfig(RunConfig):
    experiment_name: str = option("sft", "Run name for the loggers and the checkpoint folder.")


@dataclass
class SFTConfig(ConfigSection):
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)
    trainer: SFTTrainerConfig = field(default_factory=SFTTrainerConfig)
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)

    def check(self, key: str) -> None:
        world = self.trainer.nnodes * self.trainer.n_gpus_per_node
        if self.data.train_batch_size % world:
            raise ValueError(
                f"data.train_batch_size={self.data.train_batch_size} rows must split evenly over {world} "
                "workers (trainer.nnodes×trainer.n_gpus_per_node)"
            )


def register_sft_schema() -> None:
    """Makes the dataclasses available to Hydra as ``sft_trainer_schema``."""
    ConfigStore.instance().store(name="sft_trainer_schema", node=SFTConfig)
