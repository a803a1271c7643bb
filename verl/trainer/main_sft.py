"""Entry point: ``python -m verl.trainer.main_sft key=value ...`` (Hydra, config sft_trainer.yaml)."""

import os

import hydra
from omegaconf import DictConfig

from verl.trainer.config.sft import SFTConfig, register_sft_schema
from verl.trainer.main_ppo import (
    check_fsdp_config,
    check_optim_config,
    check_trainer_config,
    expand_files,
    init_ray,
    open_tokenizer,
    require_positive,
    resolve_device,
    to_typed,
)
from verl.trainer.sft_trainer import RaySFTTrainer
from verl.utils.sft_dataset import TRUNCATIONS, SFTDataset

register_sft_schema()


def load_config(overrides: list[str] | None = None) -> SFTConfig:
    """The typed config after applying Hydra overrides (for scripts and tests)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return to_typed(compose("sft_trainer", overrides=overrides or []), SFTConfig)


def check_config(config: SFTConfig) -> None:
    """Refuses, before anything starts, the settings that would fail later; names the key."""
    cfg = config
    check_trainer_config(cfg.trainer)
    require_positive(
        {
            "data.train_batch_size": cfg.data.train_batch_size,
            "data.micro_batch_size_per_gpu": cfg.data.micro_batch_size_per_gpu,
            "data.max_length": cfg.data.max_length,
            "trainer.nnodes": cfg.trainer.nnodes,
            "trainer.n_gpus_per_node": cfg.trainer.n_gpus_per_node,
            "trainer.total_epochs": cfg.trainer.total_epochs,
            "trainer.total_training_steps": cfg.trainer.total_training_steps,
        }
    )
    world = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if cfg.data.train_batch_size % world:
        raise ValueError(
            f"data.train_batch_size={cfg.data.train_batch_size} rows must split evenly over {world} "
            "workers (trainer.nnodes×trainer.n_gpus_per_node)"
        )
    if cfg.data.truncation not in TRUNCATIONS:
        raise ValueError(f"data.truncation={cfg.data.truncation!r}: use one of {list(TRUNCATIONS)}")
    check_fsdp_config("fsdp_config", cfg.fsdp_config)
    check_optim_config("optim", cfg.optim)


def load_datasets(config: SFTConfig, tokenizer) -> tuple[SFTDataset, SFTDataset | None]:
    kwargs = dict(
        prompt_key=config.data.prompt_key,
        response_key=config.data.response_key,
        max_length=config.data.max_length,
        truncation=config.data.truncation,
    )
    train = SFTDataset(expand_files(config.data.train_files), tokenizer, **kwargs)
    val = SFTDataset(expand_files(config.data.val_files), tokenizer, **kwargs) if config.data.val_files else None
    return train, val


def run_sft(config: SFTConfig) -> RaySFTTrainer:
    """Checks the config, prepares the data, starts the workers and trains."""
    check_config(config)
    # Workers may run in another working directory (or on another node): pass absolute paths.
    config.trainer.default_local_dir = os.path.abspath(os.path.expanduser(config.trainer.default_local_dir))
    tokenizer = open_tokenizer(config.model.path, config.model.trust_remote_code, "model.path")
    train, val = load_datasets(config, tokenizer)
    trainer = RaySFTTrainer(config, train, val)  # refuses a batch larger than the training set before Ray starts
    init_ray(config)
    trainer.init_workers(resolve_device(config))
    trainer.fit()
    return trainer


@hydra.main(config_path="config", config_name="sft_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_sft(to_typed(cfg, SFTConfig))


if __name__ == "__main__":
    main()
