"""Entry point: ``python -m verl.trainer.main_ppo key=value ...`` (Hydra, config ppo_trainer.yaml)."""

import dataclasses
import logging
import os
import typing

import hydra
import ray
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from verl.trainer import core_algos
from verl.trainer.config import PPOConfig, register_schema
from verl.trainer.ray_trainer import RayPPOTrainer
from verl.utils.dataset import TRUNCATIONS, RLHFDataset
from verl.utils.fsdp_utils import DTYPES
from verl.utils.tracking import BACKENDS

register_schema()
logger = logging.getLogger(__name__)


def load_config(overrides: list[str] | None = None) -> PPOConfig:
    """The typed config after applying Hydra overrides (for scripts and tests)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return to_typed(compose("ppo_trainer", overrides=overrides or []))


def to_typed(cfg: DictConfig, schema: type = PPOConfig):
    """The composed config as dataclasses of ``schema`` (PPOConfig or an extension of it). A key the
    schema lacks is refused, also when ``+key=value`` slipped it past Hydra's own check."""
    unknown = unknown_keys(cfg, schema)
    if unknown:
        key, owner = unknown[0]
        raise ConfigCompositionException(
            f"Could not override '{key}'. Key '{key.rsplit('.', 1)[-1]}' not in "
            f"'{owner}' ('+' cannot add keys to this config)"
        )
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, dataclass name) for every key of ``cfg`` that ``schema`` has no field for."""
    hints = typing.get_type_hints(schema)
    found = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in hints:
            found.append((path, schema.__name__))
            continue
        node = cfg._get_node(key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(node, DictConfig) and not node._is_none():
            found += unknown_keys(node, hints[key], f"{path}.")
    return found


def check_config(config) -> None:
    """Refuses, before anything starts, the settings that would fail later; names the key."""
    cfg, actor, rollout = config, config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    ref = config.actor_rollout_ref.ref
    core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    if rollout.name != "hf":
        raise ValueError(f"actor_rollout_ref.rollout.name={rollout.name!r}: the available rollout is 'hf'")
    check_trainer_config(cfg.trainer)
    world = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    responses = cfg.data.train_batch_size * rollout.n
    if cfg.data.train_batch_size % actor.ppo_mini_batch_size:
        raise ValueError(
            f"data.train_batch_size={cfg.data.train_batch_size} is not a multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size={actor.ppo_mini_batch_size}"
        )
    if (actor.ppo_mini_batch_size * rollout.n) % world:
        raise ValueError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size×rollout.n={actor.ppo_mini_batch_size * rollout.n} "
            f"responses must split evenly over {world} workers (trainer.nnodes×trainer.n_gpus_per_node)"
        )
    critic_mini = cfg.critic.ppo_mini_batch_size or actor.ppo_mini_batch_size
    if cfg.algorithm.adv_estimator == "gae" and (
        responses % (critic_mini * rollout.n) or (critic_mini * rollout.n) % world
    ):
        raise ValueError(
            f"critic.ppo_mini_batch_size={critic_mini} must divide data.train_batch_size and, "
            f"times rollout.n, split evenly over {world} workers"
        )
    for key, value in (
        ("actor_rollout_ref.actor.kl_loss_type", actor.kl_loss_type),
        ("algorithm.kl_penalty", cfg.algorithm.kl_penalty),
    ):
        try:
            core_algos.kl_penalty(torch.zeros(1), torch.zeros(1), value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    if cfg.algorithm.adv_estimator in ("grpo", "rloo") and rollout.n < 2:
        raise ValueError(
            f"algorithm.adv_estimator={cfg.algorithm.adv_estimator} compares responses to the same "
            "prompt: set actor_rollout_ref.rollout.n >= 2"
        )
    require_positive(
        {
            "data.train_batch_size": cfg.data.train_batch_size,
            "actor_rollout_ref.rollout.n": rollout.n,
            "actor_rollout_ref.actor.ppo_mini_batch_size": actor.ppo_mini_batch_size,
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": actor.ppo_micro_batch_size_per_gpu,
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": rollout.log_prob_micro_batch_size_per_gpu,
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": ref.log_prob_micro_batch_size_per_gpu,
            "critic.ppo_micro_batch_size_per_gpu": cfg.critic.ppo_micro_batch_size_per_gpu,
            "data.max_response_length": cfg.data.max_response_length,
            "trainer.total_training_steps": cfg.trainer.total_training_steps,
        }
    )
    if cfg.data.truncation not in TRUNCATIONS:
        raise ValueError(f"data.truncation={cfg.data.truncation!r}: use one of {list(TRUNCATIONS)}")
    if actor.clip_ratio_c <= 1:
        raise ValueError(f"actor_rollout_ref.actor.clip_ratio_c={actor.clip_ratio_c} must be greater than 1")
    for key, mode in (
        ("actor_rollout_ref.actor.loss_agg_mode", actor.loss_agg_mode),
        ("critic.loss_agg_mode", cfg.critic.loss_agg_mode),
    ):
        if mode not in core_algos.LOSS_AGG_MODES:
            raise ValueError(f"{key}={mode!r}: use one of {list(core_algos.LOSS_AGG_MODES)}")
    for prefix, section in (
        ("actor_rollout_ref.actor", actor),
        ("actor_rollout_ref.ref", cfg.actor_rollout_ref.ref),
        ("critic", cfg.critic),
    ):
        check_fsdp_config(f"{prefix}.fsdp_config", section.fsdp_config)
    for key, optim in (("actor_rollout_ref.actor.optim", actor.optim), ("critic.optim", cfg.critic.optim)):
        check_optim_config(key, optim)
    if rollout.do_sample and (rollout.top_k > 0 or rollout.top_p < 1):
        logger.warning(
            "actor_rollout_ref.rollout.top_k=%s / top_p=%s: the rollout samples from a filtered "
            "distribution but the actor scores the unfiltered one, so the PPO ratio and the KL compare "
            "different policies; rollout/log_prob_diff_mean shows by how much",
            rollout.top_k,
            rollout.top_p,
        )


def require_positive(values: dict) -> None:
    """Each ``config key: value`` must be at least 1; a None value (unset, optional) is skipped."""
    for key, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{key}={value} must be at least 1")


def check_trainer_config(trainer) -> None:
    if trainer.resume_mode not in ("auto", "disable", "resume_path"):
        raise ValueError(f"trainer.resume_mode={trainer.resume_mode!r}: use auto, disable or resume_path")
    unknown = [name for name in trainer.logger if name not in BACKENDS]
    if unknown:
        raise ValueError(f"trainer.logger: unknown backend(s) {unknown}; use any of {list(BACKENDS)}")
    if trainer.resume_mode == "resume_path" and not os.path.isdir(os.path.expanduser(trainer.resume_from_path or "")):
        raise FileNotFoundError(f"trainer.resume_from_path={trainer.resume_from_path!r} is not a checkpoint folder")


def check_fsdp_config(key: str, fsdp_config) -> None:
    mp = fsdp_config.mixed_precision
    for name in ("param_dtype", "reduce_dtype"):
        if getattr(mp, name) not in DTYPES:
            raise ValueError(f"{key}.mixed_precision.{name}={getattr(mp, name)!r}: use one of {list(DTYPES)}")


def check_optim_config(key: str, optim) -> None:
    if optim.warmup_style not in ("constant", "cosine"):
        raise ValueError(f"{key}.warmup_style={optim.warmup_style!r}: use constant or cosine")


def resolve_device(config: PPOConfig) -> str:
    if config.trainer.device is not None:
        if config.trainer.device not in ("cpu", "cuda"):
            raise ValueError(f"trainer.device={config.trainer.device!r}: use cpu or cuda")
        return config.trainer.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def load_tokenizer(config: PPOConfig):
    model = config.actor_rollout_ref.model
    return open_tokenizer(model.path, model.trust_remote_code, "actor_rollout_ref.model.path")


def open_tokenizer(path: str, trust_remote_code: bool, key: str):
    """The tokenizer of a model folder or hub id; errors name the config ``key`` holding ``path``."""
    local = os.path.expanduser(path)
    if local.startswith(("/", ".")) and not os.path.exists(local):
        raise FileNotFoundError(f"{key}={path!r}: {local} does not exist")
    try:
        return AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{key}={path!r} is not a loadable model folder or hub id: {e}") from None


def load_datasets(config: PPOConfig, tokenizer):
    kwargs = dict(
        prompt_key=config.data.prompt_key,
        max_prompt_length=config.data.max_prompt_length,
        truncation=config.data.truncation,
    )
    train = RLHFDataset(
        expand_files(config.data.train_files),
        tokenizer,
        filter_overlong_prompts=config.data.filter_overlong_prompts,
        **kwargs,
    )
    # Validation scores every row: an overlong prompt is cut as configured, or stops the run.
    val = (
        RLHFDataset(expand_files(config.data.val_files), tokenizer, filter_overlong_prompts=False, **kwargs)
        if config.data.val_files
        else None
    )
    return train, val


def expand_files(files) -> list[str]:
    files = [files] if isinstance(files, str) else list(files)
    return [os.path.expanduser(f) for f in files]


def init_ray(config: PPOConfig) -> None:
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if config.ray_init.address:
        ray.init(address=config.ray_init.address, runtime_env=env)
    else:  # a private single-node Ray, bound to loopback
        ray.init(
            _node_ip_address="127.0.0.1", num_cpus=config.ray_init.num_cpus, include_dashboard=False, runtime_env=env
        )


def run_ppo(config: PPOConfig) -> RayPPOTrainer:
    """Checks the config, prepares data and model, starts the workers and trains."""
    check_config(config)
    # Workers may run in another working directory (or on another node): pass absolute paths.
    config.trainer.default_local_dir = os.path.abspath(os.path.expanduser(config.trainer.default_local_dir))
    if config.trainer.rollout_data_dir:
        config.trainer.rollout_data_dir = os.path.abspath(os.path.expanduser(config.trainer.rollout_data_dir))
    tokenizer = load_tokenizer(config)
    train, val = load_datasets(config, tokenizer)
    init_ray(config)
    trainer = RayPPOTrainer(config, tokenizer, train, val, device=resolve_device(config))
    trainer.init_workers()
    trainer.fit()
    return trainer


@hydra.main(config_path="config", config_name="ppo_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    run_ppo(to_typed(cfg))


if __name__ == "__main__":
    main()
