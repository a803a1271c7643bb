"""Entry point: ``python -m verl.trainer.main_sft key=value ...`` (Hydra, config sft_trainer.yaml)."""

import hydra
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from verl.trainer.config.sft import SFTConfig, register_sft_schema
from verl.trainer.sft_trainer import RaySFTTrainer
from verl.trainer.startup import absolute_run_dirs, expand_files, init_ray, open_tokenizer, resolve_device, to_typed
from verl.utils.sft_dataset import SFTDataset
from verl.workers.sft_worker import SFTWorker

register_sft_schema()


def load_config(overrides: list[str] | None = None) -> SFTConfig:
    """The typed, checked config after applying Hydra overrides (for scripts and tests)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return to_typed(compose("sft_trainer", overrides=overrides or []), SFTConfig)


def load_datasets(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[SFTDataset, SFTDataset | None]:
    data = config.data

    def dataset(files: str | list[str]) -> SFTDataset:
        return SFTDataset(
            expand_files(files),
            tokenizer,
            prompt_key=data.prompt_key,
            response_key=data.response_key,
            max_length=data.max_length,
            truncation=data.truncation,
        )

    return dataset(data.train_files), (dataset(data.val_files) if data.val_files else None)


def run_sft(config: SFTConfig) -> RaySFTTrainer:
    """Prepares the data from a checked config, starts the workers and trains."""
    absolute_run_dirs(config.trainer)
    tokenizer = open_tokenizer(config.model.path, config.model.trust_remote_code, "model.path")
    train, val = load_datasets(config, tokenizer)
    trainer = RaySFTTrainer(config, train, val)  # refuses a batch larger than the training set before Ray starts
    init_ray(config.ray_init)
    trainer.init_workers(SFTWorker, resolve_device(config.trainer))
    trainer.fit()
    return trainer


@hydra.main(config_path="config", config_name="sft_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_sft(to_typed(cfg, SFTConfig))


if __name__ == "__main__":
    main()
