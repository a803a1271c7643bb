"""The library entries of training: ``run_ppo`` and ``run_sft`` take a checked config, prepare the
data and models, start the workers and train; ``load_config`` / ``load_sft_config`` compose one from
Hydra overrides. ``main_ppo`` and ``main_sft`` are their command lines; every other caller (the
search agent, its evaluation and demo, the examples, the tests) imports from here."""

import copy
import functools
import logging
import os
from typing import TypeVar

import torch
from omegaconf import OmegaConf
from transformers import PreTrainedTokenizerBase

from verl.config import PPOConfig, register_schema
from verl.config.compat import read_overrides
from verl.config.sft import SFTConfig, register_sft_schema
from verl.trainer.ray_trainer import RayPPOTrainer, WorkerClasses
from verl.trainer.reward import RuleRewardManager
from verl.trainer.sft_trainer import RaySFTTrainer
from verl.trainer.startup import (
    absolute_run_dirs,
    check_model_folder,
    describe_data,
    expand_files,
    init_ray,
    open_tokenizer,
    resolve_device,
    to_typed,
)
from verl.utils.config import freeze
from verl.utils.dataset import RLHFDataset
from verl.utils.import_utils import load_object
from verl.utils.lora import check_adapter_targets
from verl.utils.reward_score import SCORERS, scorer_for
from verl.utils.sft_dataset import SFTDataset
from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker
from verl.workers.rollout.agent_loop import AgentEnv
from verl.workers.rollout.vllm_rollout import check_servable
from verl.workers.sft_worker import SFTWorker

register_schema()
register_sft_schema()
logger = logging.getLogger(__name__)
T = TypeVar("T")


def compose_typed(config_name: str, schema: type[T], overrides: list[str]) -> T:
    """The typed, checked config ``config_name`` of verl/config after Hydra overrides in its own keys."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.config", version_base=None):
        return to_typed(compose(config_name, overrides=overrides), schema)


def _compose(config_name: str, schema: type[T], overrides: list[str] | None) -> T:
    """``compose_typed`` after reading peers' key names (``verl.config.compat``)."""
    compose = functools.partial(compose_typed, config_name, schema)
    return compose(read_overrides(overrides or [], schema, compose))


def load_config(overrides: list[str] | None = None) -> PPOConfig:
    """The typed, checked PPO config after applying Hydra overrides (for scripts and tests)."""
    return _compose("ppo_trainer", PPOConfig, overrides)


def warn_about_sampling(config: PPOConfig) -> None:
    rollout = config.actor_rollout_ref.rollout
    if rollout.do_sample and (rollout.top_k > 0 or rollout.top_p < 1):
        logger.warning(
            "actor_rollout_ref.rollout.top_k=%s / top_p=%s: the rollout samples from a filtered "
            "distribution but the actor scores the unfiltered one, so the PPO ratio and the KL compare "
            "different policies; rollout/log_prob_diff_mean shows by how much",
            rollout.top_k,
            rollout.top_p,
        )


def load_tokenizer(config: PPOConfig) -> PreTrainedTokenizerBase:
    model = config.actor_rollout_ref.model
    return open_tokenizer(model.path, model.trust_remote_code, "actor_rollout_ref.model.path")


def agent_tools(config: PPOConfig) -> list[dict]:
    """The function schemas the agent environment's prompts declare (none without an environment)."""
    env = config.actor_rollout_ref.rollout.agent.env
    return load_object(env, "actor_rollout_ref.rollout.agent.env").tools(config) if env else []


def load_datasets(config: PPOConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[RLHFDataset, RLHFDataset | None]:
    data = config.data
    tools = agent_tools(config)
    train = RLHFDataset(
        expand_files(data.train_files),
        tokenizer,
        prompt_key=data.prompt_key,
        max_prompt_length=data.max_prompt_length,
        filter_overlong_prompts=data.filter_overlong_prompts,
        truncation=data.truncation,
        tools=tools,
    )
    if not data.val_files:
        return train, None
    # Validation scores every row: an overlong prompt is cut as configured, or stops the run.
    val = RLHFDataset(
        expand_files(data.val_files),
        tokenizer,
        prompt_key=data.prompt_key,
        max_prompt_length=data.max_prompt_length,
        filter_overlong_prompts=False,
        truncation=data.truncation,
        tools=tools,
    )
    return train, val


def check_rollout_engine(config: PPOConfig) -> None:
    model = config.actor_rollout_ref.model
    if config.actor_rollout_ref.rollout.name == "vllm":
        device = config.trainer.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tp = config.actor_rollout_ref.rollout.tensor_model_parallel_size
        check_servable(os.path.expanduser(model.path), model.trust_remote_code, device, tp)


def check_plugins(config: PPOConfig) -> None:
    """The plug-ins named by the config import and are what they are named for."""
    load_object(config.reward_model.reward_manager, "reward_model.reward_manager")
    rollout = config.actor_rollout_ref.rollout
    manager = load_object(rollout.manager(), "actor_rollout_ref.rollout.generation_manager")
    env = rollout.agent.env
    env_class = load_object(env, "actor_rollout_ref.rollout.agent.env") if env else AgentEnv
    if not (isinstance(env_class, type) and issubclass(env_class, AgentEnv)):
        raise ValueError(
            f"actor_rollout_ref.rollout.agent.env={env} is not an AgentEnv (verl.workers.rollout.agent_loop)"
        )
    if env_class.manager is not None:
        needed = load_object(env_class.manager, f"{env}.manager")
        if not (isinstance(manager, type) and issubclass(manager, needed)):
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.env={env} runs under its own manager: set "
                f"actor_rollout_ref.rollout.generation_manager={env_class.manager} (now {rollout.manager()})"
            )


def check_batches_and_scores(config: PPOConfig, datasets: dict[str, RLHFDataset | None]) -> None:
    """A training batch the training set can fill, and, with the built-in rule scores, a score for
    every data source of the rows."""
    train = datasets["data.train_files"]
    assert train is not None
    if config.data.train_batch_size > len(train):
        raise ValueError(
            f"data.train_batch_size={config.data.train_batch_size} is more than the {len(train)} rows of "
            f"data.train_files: no step could be filled"
        )
    builtin = config.reward_model.reward_manager == RuleRewardManager.__module__ + ":RuleRewardManager"
    if not builtin or config.custom_reward_function.path:
        return
    for key, dataset in datasets.items():
        sources = sorted({row["data_source"] for row in dataset.rows} if dataset is not None else set())
        unscored = [s for s in sources if scorer_for(s) is None]
        if unscored:
            raise ValueError(
                f"{key}: rows of data_source {', '.join(map(repr, unscored))} have no built-in score (those are "
                f"{', '.join(sorted(SCORERS))}): set custom_reward_function.path to a file defining "
                f"{config.custom_reward_function.name}(data_source, solution_str, ground_truth, extra_info)"
            )


def run_ppo(config: PPOConfig) -> RayPPOTrainer | None:
    """Prepares data and model from a checked config, starts the workers and trains. With
    ``trainer.dry_run`` it stops after the checks, printing the config and the data (None). The run
    works on its own copy of ``config``, frozen before any worker starts."""
    config = copy.deepcopy(config)
    warn_about_sampling(config)
    absolute_run_dirs(config.trainer)
    tokenizer = load_tokenizer(config)
    check_model_folder(config.actor_rollout_ref.model.path, "actor_rollout_ref.model.path")
    if config.actor_rollout_ref.model.lora_rank:
        check_adapter_targets(config.actor_rollout_ref.model, "actor_rollout_ref.model")
    if config.critic.model.path:
        check_model_folder(config.critic.model.path, "critic.model.path")
    check_rollout_engine(config)
    check_plugins(config)  # before the datasets, which ask the environment for its tools
    train, val = load_datasets(config, tokenizer)
    check_batches_and_scores(config, {"data.train_files": train, "data.val_files": val})
    if config.trainer.dry_run:
        print(OmegaConf.to_yaml(OmegaConf.structured(config)))
        print(describe_data({"data.train_files": train, "data.val_files": val}, config.data.max_prompt_length))
        print("dry run: every check passed; no worker was started")
        return None
    init_ray(config.ray_init)
    workers = WorkerClasses(actor_rollout_ref=ActorRolloutRefWorker, critic=CriticWorker)
    trainer = RayPPOTrainer(config, tokenizer, train, val, workers, device=resolve_device(config.trainer))
    freeze(config)  # the trainer has set what it derives (the run's length)
    trainer.init_workers()
    trainer.fit()
    return trainer


def load_sft_config(overrides: list[str] | None = None) -> SFTConfig:
    """The typed, checked SFT config after applying Hydra overrides (for scripts and tests)."""
    return _compose("sft_trainer", SFTConfig, overrides)


def load_sft_datasets(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[SFTDataset, SFTDataset | None]:
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
    """Prepares the data from a checked config, starts the workers and trains, on a copy of
    ``config`` frozen before any worker starts."""
    config = copy.deepcopy(config)
    absolute_run_dirs(config.trainer)
    tokenizer = open_tokenizer(config.model.path, config.model.trust_remote_code, "model.path")
    train, val = load_sft_datasets(config, tokenizer)
    trainer = RaySFTTrainer(config, train, val)  # refuses a batch larger than the training set before Ray starts
    freeze(config)
    init_ray(config.ray_init)
    trainer.init_workers(SFTWorker, resolve_device(config.trainer))
    trainer.fit()
    return trainer
