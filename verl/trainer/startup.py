"""What every entry point does before a worker starts: the typed, checked config; data paths; the
tokenizer; Ray; the device."""

import dataclasses
import os
import typing
from typing import TypeVar

import ray
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from verl.config import RayInitConfig, RunConfig, TrainerConfig
from verl.config.compat import closest_key, leaf_keys
from verl.utils.config import check_config_tree

T = TypeVar("T")


def to_typed(cfg: DictConfig, schema: type[T]) -> T:
    """The composed config as dataclasses of ``schema``, checked (``check_config_tree``). A key the
    schema lacks is refused, also when ``+key=value`` slipped it past Hydra's own check."""
    unknown = unknown_keys(cfg, schema)
    if unknown:
        names = leaf_keys(schema)
        lines = []
        for key, owner in unknown:
            near = closest_key(key, names)
            lines.append(f"{key}: not a key of {owner}" + (f"; the closest is {near}" if near else ""))
        raise ConfigCompositionException(
            f"{len(lines)} key{'s' if len(lines) > 1 else ''} this config does not have "
            "('+' cannot add keys to it):\n  " + "\n  ".join(lines)
        )
    config = typing.cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg)))
    check_config_tree(config)
    return config


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, dataclass name) for every key of ``cfg`` that ``schema`` has no field for."""
    hints = typing.get_type_hints(schema)
    found = []
    for key in map(str, cfg.keys()):
        path = f"{prefix}{key}"
        if key not in hints:
            found.append((path, schema.__name__))
            continue
        node = cfg._get_node(key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(node, DictConfig) and not node._is_none():
            found += unknown_keys(node, hints[key], f"{path}.")
    return found


def expand_files(files: str | list[str]) -> list[str]:
    files = [files] if isinstance(files, str) else list(files)
    return [os.path.expanduser(f) for f in files]


def open_tokenizer(path: str, trust_remote_code: bool, key: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder or hub id; errors name the config ``key`` holding ``path``."""
    local = os.path.expanduser(path)
    if local.startswith(("/", ".")) and not os.path.exists(local):
        raise FileNotFoundError(f"{key}={path!r}: {local} does not exist")
    try:
        return AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{key}={path!r} is not a loadable model folder or hub id: {e}") from None


def check_model_folder(path: str, key: str) -> None:
    """A local model folder has a readable config and weight files whose headers load (a torn or
    truncated download fails here, naming the file, not inside a worker). Hub ids are left to
    ``from_pretrained``."""
    local = os.path.expanduser(path)
    if not os.path.isdir(local):
        return
    try:
        AutoConfig.from_pretrained(local)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}={path!r}: its config.json does not load: {e}") from None
    from safetensors import safe_open

    for name in sorted(os.listdir(local)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(local, name), framework="pt") as weights:
                    weights.keys()
            except Exception as e:  # safetensors raises its own error types for a bad header
                raise ValueError(f"{key}={path!r}: {name} is not a readable safetensors file: {e}") from None


def describe_data(datasets: dict[str, typing.Any], max_prompt_length: int) -> str:
    """Rows per file and data source, and prompt-length percentiles against the budget."""
    import numpy as np

    lines = []
    for key, dataset in datasets.items():
        if dataset is None:
            continue
        lengths = np.array([len(row["prompt_ids"]) for row in dataset.rows])
        sources: dict[str, int] = {}
        for row in dataset.rows:
            sources[row["data_source"]] = sources.get(row["data_source"], 0) + 1
        files = ", ".join(f"{path}: {n}" for path, n in dataset.file_rows.items())
        p50, p90, p99 = (int(np.percentile(lengths, q)) for q in (50, 90, 99))
        lines += [
            f"{key}: {len(dataset)} rows ({files})",
            "  by data source: " + ", ".join(f"{s}: {n}" for s, n in sorted(sources.items())),
            f"  prompt tokens: p50 {p50}, p90 {p90}, p99 {p99}, max {lengths.max()} of {max_prompt_length}"
            + (f"; {dataset.truncated} cut" if dataset.truncated else ""),
        ]
    return "\n".join(lines)


def init_ray(ray_init: RayInitConfig) -> None:
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if ray_init.address:
        ray.init(address=ray_init.address, runtime_env=env, log_to_driver=ray_init.log_to_driver)
    else:  # a private single-node Ray addressed over loopback (it listens more widely: see README)
        # Ray starts workers at nice 15 unless told otherwise; on a shared machine they would lose
        # the CPU to every other process. The raylet reads this from its environment.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(
            _node_ip_address="127.0.0.1",
            num_cpus=ray_init.num_cpus,
            include_dashboard=False,
            runtime_env=env,
            log_to_driver=ray_init.log_to_driver,
        )


def worker_log_dir(ray_init: RayInitConfig, trainer: RunConfig) -> str | None:
    """Where the run's workers write their output (``ray_init.log_to_driver``); None: to Ray's
    stream, live in the driver's terminal."""
    return None if ray_init.log_to_driver else os.path.join(trainer.default_local_dir, "logs")


def absolute_run_dirs(trainer: RunConfig) -> None:
    """Workers may run in another working directory (or on another node): they get absolute paths."""
    trainer.default_local_dir = os.path.abspath(os.path.expanduser(trainer.default_local_dir))
    if isinstance(trainer, TrainerConfig) and trainer.rollout_data_dir:
        trainer.rollout_data_dir = os.path.abspath(os.path.expanduser(trainer.rollout_data_dir))


def resolve_device(trainer: RunConfig) -> str:
    """``trainer.device``, or cuda when the Ray cluster has GPUs."""
    if trainer.device is not None:
        return trainer.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
