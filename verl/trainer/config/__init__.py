"""Typed configuration of the PPO trainer: the single source of defaults.

``ppo_trainer.yaml`` next to this file mirrors these dataclasses key for key (a test keeps them
equal); Hydra validates every override against them, so an unknown key stops the run and names it.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class DataConfig:
    train_files: Any = "~/data/train.parquet"  # a parquet path or a list of them
    val_files: Any = "~/data/test.parquet"
    prompt_key: str = "prompt"
    max_prompt_length: int = 512
    max_response_length: int = 512
    train_batch_size: int = 256
    val_batch_size: int | None = None  # None: the whole validation set in one batch
    # Training prompts over max_prompt_length tokens are dropped (and counted); validation never drops a row.
    filter_overlong_prompts: bool = True
    # An overlong prompt that is not dropped (validation, or filter_overlong_prompts=false): error
    # stops the run naming the file and row; left keeps its last tokens, right its first.
    truncation: str = "error"
    shuffle: bool = True
    seed: int = 1


@dataclass
class ModelConfig:
    path: str = "~/models/Qwen2.5-0.5B"
    trust_remote_code: bool = False
    enable_gradient_checkpointing: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_warmup_steps: int = -1  # -1: use lr_warmup_steps_ratio
    lr_warmup_steps_ratio: float = 0.0
    warmup_style: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.0  # cosine only
    total_training_steps: int = -1  # filled in by the trainer


@dataclass
class MixedPrecisionConfig:
    param_dtype: str = "bf16"  # compute dtype on GPU (bf16 | fp16 | fp32); CPU runs compute in fp32
    reduce_dtype: str = "fp32"  # gradient reduction dtype on GPU


@dataclass
class FSDPConfig:
    param_offload: bool = False  # FSDP2 CPUOffloadPolicy on GPU runs: params (and grads) live on CPU
    mixed_precision: MixedPrecisionConfig = field(default_factory=MixedPrecisionConfig)


@dataclass
class TrainableFSDPConfig(FSDPConfig):
    # Optimizer state kept on CPU between updates on GPU runs; with param_offload it lives there
    # anyway, and this flag changes nothing.
    optimizer_offload: bool = False


@dataclass
class ActorConfig:
    ppo_mini_batch_size: int = 256  # prompts per optimizer step (times rollout.n responses)
    ppo_micro_batch_size_per_gpu: int = 4
    ppo_epochs: int = 1
    shuffle: bool = False
    clip_ratio: float = 0.2
    clip_ratio_low: float | None = None  # None: clip_ratio
    clip_ratio_high: float | None = None
    clip_ratio_c: float = 3.0  # dual-clip bound for negative advantages
    loss_agg_mode: str = "token-mean"
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"
    grad_clip: float = 1.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)


@dataclass
class RefConfig:
    log_prob_micro_batch_size_per_gpu: int = 8
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class ValKwargs:
    do_sample: bool = False  # greedy validation
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1


@dataclass
class RolloutConfig:
    name: str = "hf"
    n: int = 1
    temperature: float = 1.0
    # top_p < 1 or top_k > 0 filter what the rollout samples from, but the actor scores the whole
    # distribution: the PPO ratio and KL then compare different policies (rollout/log_prob_diff_*).
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k filtering
    do_sample: bool = True
    stop: list[str] = field(default_factory=list)
    log_prob_micro_batch_size_per_gpu: int = 8
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)
    # "module:Class" building the rollout loop the trainer calls (single-turn by default).
    generation_manager: str = "verl.trainer.generation:SingleTurnGenerationManager"


@dataclass
class ActorRolloutRefConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class CriticModelConfig:
    path: str | None = None  # None: the actor's model path
    trust_remote_code: bool = False
    enable_gradient_checkpointing: bool = False


@dataclass
class CriticConfig:
    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    ppo_mini_batch_size: int | None = None  # None: the actor's
    ppo_micro_batch_size_per_gpu: int = 4
    ppo_epochs: int = 1
    cliprange_value: float = 0.5
    loss_agg_mode: str = "token-mean"
    grad_clip: float = 1.0
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)


@dataclass
class RewardModelConfig:
    # "module:Class" turning a batch into token-level scores; the default scores each response
    # with custom_reward_function.
    reward_manager: str = "verl.trainer.reward:RuleRewardManager"


@dataclass
class CustomRewardFunctionConfig:
    path: str | None = None  # a .py file or an importable module
    name: str = "compute_score"


@dataclass
class KLControlConfig:
    type: str = "fixed"  # fixed | adaptive
    kl_coef: float = 0.001
    horizon: int = 10000
    target_kl: float = 0.1


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "gae"  # gae | grpo | reinforce | reinforce_plus_plus | rloo
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: str = "kl"
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)


@dataclass
class TrainerConfig:
    device: str | None = None  # cpu | cuda; None: cuda when available
    nnodes: int = 1
    n_gpus_per_node: int = 8  # worker processes per node (also on CPU)
    total_epochs: int = 1
    total_training_steps: int | None = None  # None: total_epochs over the train set
    critic_warmup: int = 0  # steps during which only the critic is updated
    test_freq: int = -1
    val_before_train: bool = True
    save_freq: int = -1
    default_local_dir: str = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
    resume_mode: str = "auto"  # auto | disable | resume_path
    resume_from_path: str | None = None
    logger: list[str] = field(default_factory=lambda: ["console"])
    project_name: str = "criticsearch"
    experiment_name: str = "ppo"
    rollout_data_dir: str | None = None
    colocate_workers: bool = True  # actor/rollout/ref and critic share one process per rank
    seed: int = 42


@dataclass
class RayInitConfig:
    address: str | None = None  # None: start a local Ray on 127.0.0.1; "auto" or host:port joins a cluster
    num_cpus: int | None = None


@dataclass
class PPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = field(default_factory=CustomRewardFunctionConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)


def register_schema() -> None:
    """Makes the dataclasses available to Hydra as ``ppo_trainer_schema``."""
    ConfigStore.instance().store(name="ppo_trainer_schema", node=PPOConfig)
