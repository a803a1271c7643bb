"""The trainer and Ray sections: the run's length, workers, checkpoints, loggers and cluster."""

import os
from dataclasses import dataclass

from verl.utils.config import ConfigSection, option
from verl.utils.tracking import BACKENDS


@dataclass
class RunConfig(ConfigSection):
    """What the PPO and SFT trainers share: where workers run, how long, checkpoints and loggers."""

    device: str | None = option(
        None, "cpu or cuda; null: cuda when the Ray cluster has GPUs.", choices=("cpu", "cuda"), nullable=True
    )
    nnodes: int = option(1, "Nodes of the Ray cluster to use.", min=1, key="NNODES")
    n_gpus_per_node: int = option(
        8, "Worker processes per node: one per GPU, or per CPU slot on CPU.", min=1, key="NUM_GPUS_PER_NODE"
    )
    total_epochs: int = option(1, "Passes over the training set (unless total_training_steps is set).", min=1)
    total_training_steps: int | None = option(
        None,
        "Run length in steps; null: total_epochs over the training set.",
        min=1,
        nullable=True,
        key="TOTAL_STEPS",
    )
    test_freq: int = option(
        -1,
        "Validate every this many steps and after the last; -1: never (SFT still validates after the last "
        "step when val_files is set). Validation samples with rollout.val_kwargs (greedy), scores every row "
        "once in file order and logs metrics per data_source.",
    )
    save_freq: int = option(-1, "Save a checkpoint every this many steps (and after the last); -1: never.")
    default_local_dir: str = option(
        "checkpoints/${trainer.project_name}/${trainer.experiment_name}",
        "Checkpoints (global_step_N/) and metrics.jsonl go here.",
    )
    resume_mode: str = option(
        "auto",
        "auto: continue from the latest checkpoint in default_local_dir; disable; resume_path: from resume_from_path.",
        choices=("auto", "disable", "resume_path"),
    )
    resume_from_path: str | None = option(None, "A global_step_N folder (resume_mode=resume_path).", nullable=True)
    logger: list[str] = option(
        ["console", "file"],
        "Metric loggers, any of: console, file (<default_local_dir>/metrics.jsonl, what a program reads a "
        "run's metrics from), wandb (offline without WANDB_API_KEY), tensorboard.",
        choices=BACKENDS,
        key="LOGGER",
    )
    project_name: str = option("criticsearch", "Project name for the loggers and the checkpoint folder.")
    experiment_name: str = option("ppo", "Run name for the loggers and the checkpoint folder.", key="EXPERIMENT_NAME")
    seed: int = option(42, "Seed of model initialisation, sampling and the driver's draws.")

    def check(self, key: str) -> None:
        if self.resume_mode == "resume_path" and not os.path.isdir(os.path.expanduser(self.resume_from_path or "")):
            raise FileNotFoundError(f"{key}.resume_from_path={self.resume_from_path!r} is not a checkpoint folder")


@dataclass
class TrainerConfig(RunConfig):
    critic_warmup: int = option(0, "Steps during which only the critic is updated.", min=0)
    balance_batch: bool = option(
        True, "Reorder each batch so every data-parallel rank gets about the same number of tokens."
    )
    val_before_train: bool = option(True, "Validate once before the first step.")
    rollout_data_dir: str | None = option(
        None,
        "When set, each step's rollouts go to <dir>/<step>.jsonl: prompt, response, response ids and mask, "
        "reward, data source.",
        nullable=True,
    )
    colocate_workers: bool = option(
        True, "Actor/rollout, reference and critic share one process per rank; false: one process per role."
    )
    dry_run: bool = option(
        False,
        "Run every check made before workers start (config, every data row, model folders, search settings), "
        "print the resolved config and a summary of the data, and exit without starting a worker.",
        key="DRY_RUN",
    )


@dataclass
class RayInitConfig(ConfigSection):
    address: str | None = option(
        None,
        "null: start a private local Ray addressed as 127.0.0.1 (it still listens on every interface, "
        "token-authenticated); auto or host:port: join a running cluster.",
        nullable=True,
    )
    num_cpus: int | None = option(None, "CPUs the local Ray may use; null: all.", min=1, nullable=True)
    log_to_driver: bool = option(
        False,
        "false: each worker's stdout and stderr (model loading, vLLM's engine, warnings) go to "
        "<trainer.default_local_dir>/logs/<role>_rank<N>.log and never into the driver's output; a failing "
        "worker's last lines are added to the driver's error. true: Ray streams them live to the driver's "
        "terminal, prefixed with the worker (for debugging).",
    )
