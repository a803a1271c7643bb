"""Typed configuration of the SFT trainer: the single source of defaults.

``sft_trainer.yaml`` next to this file mirrors these dataclasses key for key (a test keeps them
equal); Hydra validates every override against them.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from verl.trainer.config import ModelConfig, OptimConfig, RayInitConfig, TrainableFSDPConfig


@dataclass
class SFTDataConfig:
    train_files: Any = "~/data/sft_train.parquet"  # a parquet path or a list of them
    val_files: Any = None  # None: no validation
    prompt_key: str = "prompt"  # a chat list (templated) or a plain string (used verbatim)
    response_key: str = "response"
    max_length: int = 1024  # prompt + response_prefix + response + eos tokens
    truncation: str = "right"  # right: cut overlong responses at the end | error: refuse the row, naming it
    train_batch_size: int = 256  # rows per optimizer step, over all ranks
    micro_batch_size_per_gpu: int = 4
    shuffle: bool = True
    seed: int = 1


@dataclass
class SFTOptimConfig(OptimConfig):
    lr: float = 1e-5
    clip_grad: float = 1.0  # max gradient norm


@dataclass
class SFTTrainerConfig:
    device: str | None = None  # cpu | cuda; None: cuda when available
    nnodes: int = 1
    n_gpus_per_node: int = 8  # worker processes per node (also on CPU)
    total_epochs: int = 1
    total_training_steps: int | None = None  # None: total_epochs over the train set
    save_freq: int = -1  # also saves after the last step when > 0
    test_freq: int = -1  # validation runs after the last step in any case when val_files is set
    default_local_dir: str = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
    resume_mode: str = "auto"  # auto | disable | resume_path
    resume_from_path: str | None = None
    logger: list[str] = field(default_factory=lambda: ["console"])
    project_name: str = "criticsearch"
    experiment_name: str = "sft"
    seed: int = 42


@dataclass
class SFTConfig:
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)
    trainer: SFTTrainerConfig = field(default_factory=SFTTrainerConfig)
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)


def register_sft_schema() -> None:
    """Makes the dataclasses available to Hydra as ``sft_trainer_schema``."""
    ConfigStore.instance().store(name="sft_trainer_schema", node=SFTConfig)
