"""Typed configuration of the PPO trainer: the single source of defaults.

``ppo_trainer.yaml`` next to this file is written from these dataclasses (``make configs``; a test
fails when it is stale); Hydra validates every override against them, so an unknown key stops the run and names it.
Each leaf carries its help (README's key tables are rendered from it), and ``check_config_tree``
refuses bad values when the config is composed, naming the key.

Over 400 lines on purpose: one small dataclass per section, in the order of ``ppo_trainer.yaml``,
so every key of the engine, its default, help and checks are found in one file.
"""

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from verl.algos.core_algos import ADV_ESTIMATOR_REGISTRY, KL_PENALTY_TYPES, LOSS_AGG_MODES, POLICY_LOSS_REGISTRY
from verl.utils.config import option
from verl.utils.dataset import TRUNCATIONS
from verl.utils.fsdp_utils import DTYPES
from verl.utils.tracking import BACKENDS

DTYPE_NAMES = tuple(DTYPES)


def adv_estimators() -> list[str]:
    """Registered names, read when checked so that plug-in estimators count."""
    return sorted(ADV_ESTIMATOR_REGISTRY)


def policy_losses() -> list[str]:
    """Registered names, read when checked so that plug-in losses count."""
    return sorted(POLICY_LOSS_REGISTRY)


OLD_LOG_PROB_SOURCES = ("auto", "recompute", "from_update", "from_rollout")


@dataclass
class DataConfig:
    train_files: Any = option("~/data/train.parquet", "Training parquet file, or a list of them.", key="DATA_PATH")
    val_files: Any = option(
        "~/data/test.parquet",
        "Validation parquet file or list; null: no validation.",
        nullable=True,
        key="DATA_PATH",
    )
    prompt_key: str = option("prompt", "Column holding the chat messages (or a plain prompt string).")
    max_prompt_length: int = option(512, "Prompt budget in tokens; prompts are left-padded to it.", min=1)
    max_response_length: int = option(512, "New tokens per generation (per turn in a multi-turn rollout).", min=1)
    train_batch_size: int = option(256, "Prompts per training step (each sampled rollout.n times).", min=1)
    val_batch_size: int | None = option(
        None, "Prompts per validation batch; null: the whole validation set at once.", min=1, nullable=True
    )
    filter_overlong_prompts: bool = option(
        True, "Drop (and count) training prompts over max_prompt_length; validation never drops a row."
    )
    truncation: str = option(
        "error",
        "An overlong prompt that is not dropped (validation, or filter_overlong_prompts=false): error "
        "stops the run naming the file and row; left keeps its last tokens, right its first.",
        choices=TRUNCATIONS,
    )
    shuffle: bool = option(True, "Shuffle the training set each epoch (seeded by data.seed + epoch).")
    seed: int = option(1, "Seed of the training-set order.")


def require_packed_sequences(key: str) -> None:
    """Packed rows need a transformers that confines attention to each sequence by its position ids
    (5.x does); older releases would let sequences attend to each other without an error."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ValueError(f"{key}=true needs transformers 5 or newer (found {transformers.__version__})")


@dataclass
class ModelConfig:
    path: str = option(
        "~/models/Qwen2.5-0.5B", "Model folder or Hugging Face hub id (from_pretrained).", key="MODEL_PATH"
    )
    trust_remote_code: bool = option(False, "Let transformers run the model's own code.")
    enable_gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")


@dataclass
class PolicyModelConfig(ModelConfig):
    use_remove_padding: bool = option(
        False,
        "Padding-free compute: each micro-batch's real tokens run as one packed row, positions restarting at "
        "each sequence, which transformers reads as separate sequences (with sdpa: a block-diagonal mask). "
        "Results come back in the padded layout.",
    )

    def check(self, key: str) -> None:
        if self.use_remove_padding:
            require_packed_sequences(f"{key}.use_remove_padding")


@dataclass
class OptimConfig:
    lr: float = option(1e-6, "AdamW learning rate.", min=0)
    weight_decay: float = option(0.01, "AdamW weight decay.", min=0)
    betas: list[float] = option([0.9, 0.999], "AdamW betas.")
    lr_warmup_steps: int = option(-1, "Warm-up steps; -1: lr_warmup_steps_ratio of the total.")
    lr_warmup_steps_ratio: float = option(0.0, "Warm-up as a share of the training steps (when lr_warmup_steps=-1).")
    warmup_style: str = option(
        "constant", "Schedule after warm-up: constant, or cosine decay to min_lr_ratio.", choices=("constant", "cosine")
    )
    min_lr_ratio: float = option(0.0, "Cosine only: the final lr as a share of lr.", min=0)
    total_training_steps: int = option(-1, "Set by the trainer from the run length; leave at -1.")


@dataclass
class MixedPrecisionConfig:
    param_dtype: str = option(
        "bf16", "GPU compute dtype; parameters stay fp32. CPU runs compute in fp32.", choices=DTYPE_NAMES
    )
    reduce_dtype: str = option("fp32", "GPU gradient-reduction dtype.", choices=DTYPE_NAMES)


@dataclass
class FSDPConfig:
    param_offload: bool = option(False, "GPU runs: keep parameters (and gradients) on CPU (FSDP2 CPUOffloadPolicy).")
    mixed_precision: MixedPrecisionConfig = field(default_factory=MixedPrecisionConfig)


@dataclass
class TrainableFSDPConfig(FSDPConfig):
    optimizer_offload: bool = option(
        False,
        "GPU runs: keep the optimizer state on CPU between updates. With param_offload it is on CPU "
        "anyway and this changes nothing.",
    )


@dataclass
class PolicyLossConfig:
    loss_mode: str = option(
        "vanilla",
        "The policy loss, by its registered name: vanilla (the PPO clipped surrogate with clip_ratio_low/high "
        "and the dual clip clip_ratio_c), or any name registered with core_algos.register_policy_loss.",
        choices=policy_losses,
    )


@dataclass
class ActorConfig:
    ppo_mini_batch_size: int = option(256, "Prompts per optimizer step (times rollout.n responses).", min=1)
    ppo_micro_batch_size_per_gpu: int = option(
        4,
        "Responses per forward/backward on one worker; gradients accumulate exactly, a short last "
        "micro-batch weighted by its share.",
        min=1,
    )
    use_dynamic_bsz: bool = option(
        False,
        "Micro-batches by token count (ppo_max_token_len_per_gpu) instead of ppo_micro_batch_size_per_gpu: "
        "rows of similar length packed together, so short and long trajectories waste little padding. "
        "Gradients accumulate exactly either way.",
    )
    ppo_max_token_len_per_gpu: int = option(
        16384,
        "With use_dynamic_bsz: real tokens (prompt + response) per micro-batch on one worker. Without "
        "use_remove_padding a micro-batch still computes rows × its longest row, padding included.",
        min=1,
    )
    ppo_epochs: int = option(1, "Passes over each batch.", min=1)
    shuffle: bool = option(False, "Shuffle responses between epochs (seeded by step and epoch).")
    clip_ratio: float = option(0.2, "PPO clip range of the importance ratio.", min=0)
    clip_ratio_low: float | None = option(None, "Lower clip range; null: clip_ratio.", min=0, nullable=True)
    clip_ratio_high: float | None = option(None, "Upper clip range; null: clip_ratio.", min=0, nullable=True)
    clip_ratio_c: float = option(3.0, "Dual-clip bound for negative advantages; must exceed 1.")
    loss_agg_mode: str = option(
        "token-mean",
        "How token losses become one: token-mean (over all valid tokens), seq-mean-token-sum or "
        "seq-mean-token-mean (over responses).",
        choices=LOSS_AGG_MODES,
    )
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    entropy_coeff: float = option(0.0, "Entropy bonus weight; 0: none.")
    use_kl_loss: bool = option(False, "Add kl_loss_coef times KL(actor||ref) to the policy loss (GRPO style).")
    kl_loss_coef: float = option(0.001, "Weight of the KL loss term.", min=0)
    kl_loss_type: str = option(
        "low_var_kl", "KL estimator: kl/k1, abs, mse/k2, low_var_kl/k3.", choices=KL_PENALTY_TYPES
    )
    grad_clip: float = option(1.0, "Max global gradient norm.", min=0)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)

    def check(self, key: str) -> None:
        if self.clip_ratio_c <= 1:
            raise ValueError(f"{key}.clip_ratio_c={self.clip_ratio_c} must be greater than 1")

    def token_budget(self) -> int | None:
        """Real tokens per update micro-batch when they are packed by count, else None (by rows)."""
        return self.ppo_max_token_len_per_gpu if self.use_dynamic_bsz else None


@dataclass
class RefConfig:
    log_prob_micro_batch_size_per_gpu: int = option(8, "Responses per reference forward pass on one worker.", min=1)
    log_prob_use_dynamic_bsz: bool | None = option(
        None, "Reference passes in micro-batches by token count; null: as actor.use_dynamic_bsz.", nullable=True
    )
    log_prob_max_token_len_per_gpu: int | None = option(
        None, "Tokens per reference micro-batch; null: actor.ppo_max_token_len_per_gpu.", min=1, nullable=True
    )
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class ValKwargs:
    do_sample: bool = option(False, "Sample in validation; false: greedy.")
    temperature: float = option(0.0, "Validation sampling temperature (with do_sample).", min=0)
    top_p: float = option(1.0, "Validation nucleus sampling (with do_sample).", min=0)
    top_k: int = option(-1, "Validation top-k (with do_sample); -1: off.")
    n: int = option(1, "Responses per validation prompt.", min=1)


@dataclass
class RolloutConfig:
    name: str = option(
        "hf",
        "Rollout engine: vllm (an in-process vLLM engine beside the actor, weights synced in memory; the "
        "production rollout) or hf (transformers generate).",
        choices=("hf", "vllm"),
        key="ROLLOUT",
    )
    n: int = option(1, "Responses sampled per prompt (GRPO's group size).", min=1)
    temperature: float = option(1.0, "Sampling temperature; the actor scores at the same temperature.", min=0)
    top_p: float = option(
        1.0,
        "Nucleus sampling. Below 1 the rollout samples a filtered distribution the actor does not score "
        "(see rollout/log_prob_diff_*); a warning says so at start-up.",
        min=0,
    )
    top_k: int = option(-1, "Top-k sampling; -1: off. Like top_p, the actor scores without it.")
    do_sample: bool = option(True, "Sample; false: greedy.")
    stop: list[str] = option([], "Stop strings; kept in the response.")
    log_prob_micro_batch_size_per_gpu: int = option(8, "Responses per old-log-prob forward pass on one worker.", min=1)
    log_prob_use_dynamic_bsz: bool | None = option(
        None, "Old-log-prob passes in micro-batches by token count; null: as actor.use_dynamic_bsz.", nullable=True
    )
    log_prob_max_token_len_per_gpu: int | None = option(
        None, "Tokens per old-log-prob micro-batch; null: actor.ppo_max_token_len_per_gpu.", min=1, nullable=True
    )
    dtype: str | None = option(
        None,
        "vllm: the engine's dtype (bfloat16, float16, float32); null: the actor's compute dtype "
        "(fsdp_config.mixed_precision.param_dtype on GPU, float32 on CPU), so both score alike.",
        choices=("bfloat16", "float16", "float32"),
        nullable=True,
    )
    gpu_memory_utilization: float = option(
        0.5,
        "vllm on GPU: share of GPU memory the engine may take (weights and KV cache). On CPU the KV cache "
        "is sized to what the rollout can hold: max_num_seqs sequences of max_model_len tokens.",
        min=0,
    )
    tensor_model_parallel_size: int = option(
        1, "vllm: GPUs one engine spans. Only 1 is supported: each rank runs its own engine.", min=1
    )
    enforce_eager: bool = option(True, "vllm: no CUDA graphs (eager mode); needed on CPU.")
    free_cache_engine: bool = option(
        True,
        "vllm on GPU: sleep while the actor trains (KV cache freed, weights offloaded) and wake before the "
        "weight sync. vLLM has no sleep mode on CPU: there it is a no-op, said once.",
    )
    max_num_batched_tokens: int = option(8192, "vllm: tokens scheduled per engine step.", min=1)
    max_num_seqs: int = option(256, "vllm: sequences decoded together.", min=1)
    enable_chunked_prefill: bool = option(True, "vllm: split long prefills across engine steps.")
    max_model_len: int | None = option(
        None,
        "vllm: longest prompt + response the engine accepts; null: the longest the trainer can produce "
        "(data.max_prompt_length plus the response width, every turn and observation of a multi-turn agent).",
        min=1,
        nullable=True,
    )
    load_format: str = option(
        "dummy",
        "vllm: how the engine gets its first weights: dummy (random, then the actor's are synced in memory "
        "before the first rollout; dummy_dtensor is the same), or auto/safetensors/pt from model.path.",
        choices=("dummy", "dummy_dtensor", "auto", "safetensors", "pt"),
    )
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)
    generation_manager: str = option(
        "verl.trainer.generation:SingleTurnGenerationManager",
        "module:Class building the rollout loop the trainer calls (a GenerationManager).",
    )

    def check(self, key: str) -> None:
        if self.tensor_model_parallel_size != 1:
            raise ValueError(
                f"{key}.tensor_model_parallel_size={self.tensor_model_parallel_size}: an engine spanning several "
                "GPUs is not supported yet; each rank runs its own engine (set 1)"
            )


@dataclass
class ActorRolloutRefConfig:
    model: PolicyModelConfig = field(default_factory=PolicyModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class CriticModelConfig:
    path: str | None = option(None, "Value model folder or hub id; null: the actor's model path.", nullable=True)
    trust_remote_code: bool = option(False, "Let transformers run the model's own code.")
    enable_gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    use_remove_padding: bool = option(False, "As actor_rollout_ref.model.use_remove_padding, for the value model.")

    def check(self, key: str) -> None:
        if self.use_remove_padding:
            require_packed_sequences(f"{key}.use_remove_padding")


@dataclass
class CriticConfig:
    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    ppo_mini_batch_size: int | None = option(
        None, "Prompts per critic optimizer step; null: the actor's.", min=1, nullable=True
    )
    ppo_micro_batch_size_per_gpu: int = option(4, "Responses per critic forward/backward on one worker.", min=1)
    use_dynamic_bsz: bool = option(False, "As actor.use_dynamic_bsz, for the critic's passes.")
    ppo_max_token_len_per_gpu: int = option(
        32768, "With use_dynamic_bsz: tokens per critic forward/backward on one worker.", min=1
    )
    forward_max_token_len_per_gpu: int | None = option(
        None, "Tokens per value-only forward; null: ppo_max_token_len_per_gpu.", min=1, nullable=True
    )
    ppo_epochs: int = option(1, "Critic passes over each batch.", min=1)
    cliprange_value: float = option(0.5, "How far a new value may move from the rollout-time value.", min=0)
    loss_agg_mode: str = option("token-mean", "As actor.loss_agg_mode, for the value loss.", choices=LOSS_AGG_MODES)
    grad_clip: float = option(1.0, "Max global gradient norm.", min=0)
    fsdp_config: TrainableFSDPConfig = field(default_factory=TrainableFSDPConfig)

    def token_budget(self, forward_only: bool = False) -> int | None:
        """Real tokens per micro-batch (of the update, or of a value-only pass) when they are packed
        by count, else None (by rows)."""
        if not self.use_dynamic_bsz:
            return None
        return (
            (self.forward_max_token_len_per_gpu or self.ppo_max_token_len_per_gpu)
            if forward_only
            else self.ppo_max_token_len_per_gpu
        )


@dataclass
class RewardModelConfig:
    reward_manager: str = option(
        "verl.trainer.reward:RuleRewardManager",
        "module:Class turning a batch into token-level scores (a RewardManager); the default scores each "
        "response with custom_reward_function.",
    )


@dataclass
class CustomRewardFunctionConfig:
    path: str | None = option(None, "A .py file or importable module defining the reward function.", nullable=True)
    name: str = option("compute_score", "The function: (data_source, solution_str, ground_truth, extra_info).")


@dataclass
class KLControlConfig:
    type: str = option(
        "fixed", "In-reward KL coefficient: fixed, or adaptive towards target_kl.", choices=("fixed", "adaptive")
    )
    kl_coef: float = option(0.001, "(Initial) KL coefficient.", min=0)
    horizon: int = option(10000, "Adaptive: steps over which the coefficient adapts.", min=1)
    target_kl: float = option(0.1, "Adaptive: the KL aimed at.", min=0)


@dataclass
class RolloutCorrectionConfig:
    bypass_mode: bool = option(
        False,
        "verl's name for algorithm.old_log_prob=from_rollout: true means that choice (old_log_prob must then be "
        "auto or from_rollout).",
    )


@dataclass
class AlgorithmConfig:
    adv_estimator: str = option(
        "gae",
        "Advantage estimator: gae (PPO with a value critic), grpo, grpo_turn (GRPO plus turn rewards, e.g. "
        "the critic LLM's), reinforce (raw return), reinforce_plus_plus, rloo, or any registered name.",
        choices=adv_estimators,
    )
    gamma: float = option(1.0, "Discount factor.", min=0)
    lam: float = option(1.0, "GAE lambda.", min=0)
    norm_adv_by_std_in_grpo: bool = option(True, "GRPO: divide by the group's std; false: subtract the mean only.")
    use_kl_in_reward: bool = option(False, "Subtract kl_ctrl's coefficient times KL(actor||ref) from the reward.")
    kl_penalty: str = option("kl", "KL estimator of the in-reward penalty (as kl_loss_type).", choices=KL_PENALTY_TYPES)
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    old_log_prob: str = option(
        "auto",
        "Where the PPO ratio's old log-probs come from. recompute: a forward pass of the actor before the "
        "update (timing_s/old_log_prob). from_update: the update's own first forward pass, saving that pass; "
        "the update must be on-policy: one epoch (actor.ppo_epochs=1) over one mini-batch (data.train_batch_size "
        "<= actor.ppo_mini_batch_size), no use_kl_in_reward, trainer.critic_warmup=0. from_rollout: the "
        "rollout's log-probs (rollout_log_probs), so the ratio is against the policy that sampled; "
        "rollout/log_prob_diff_* compares them with the actor's own, from the update's first mini-batch. "
        "auto: from_update in a step whose update is on-policy, else recompute.",
        choices=OLD_LOG_PROB_SOURCES,
    )
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)

    def check(self, key: str) -> None:
        if self.rollout_correction.bypass_mode and self.old_log_prob not in ("auto", "from_rollout"):
            raise ValueError(
                f"{key}.rollout_correction.bypass_mode=true (verl's name for {key}.old_log_prob=from_rollout) "
                f"contradicts {key}.old_log_prob={self.old_log_prob}: set only one of them"
            )

    def old_log_prob_choice(self) -> str:
        """``old_log_prob``, with verl's ``rollout_correction.bypass_mode=true`` read as from_rollout."""
        return "from_rollout" if self.rollout_correction.bypass_mode else self.old_log_prob


@dataclass
class RunConfig:
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
class RayInitConfig:
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

    def response_width(self) -> int:
        """Tokens of one response as the trainer holds it: a single generation here; a multi-turn
        agent's config widens it to every turn and observation."""
        return self.data.max_response_length

    def max_sequence_length(self) -> int:
        """The longest prompt + response a rollout may be asked to continue or produce."""
        return self.data.max_prompt_length + self.response_width()

    def validates(self) -> bool:
        """Whether the run validates at all: a validation set, and validation before or during training."""
        return bool(self.data.val_files) and (self.trainer.val_before_train or self.trainer.test_freq > 0)

    def check(self, key: str) -> None:
        """Settings that only fail together: batch shapes over the workers, estimator needs."""
        data, actor, rollout = self.data, self.actor_rollout_ref.actor, self.actor_rollout_ref.rollout
        world = self.trainer.nnodes * self.trainer.n_gpus_per_node
        if data.train_batch_size % actor.ppo_mini_batch_size:
            raise ValueError(
                f"data.train_batch_size={data.train_batch_size} is not a multiple of "
                f"actor_rollout_ref.actor.ppo_mini_batch_size={actor.ppo_mini_batch_size}"
            )
        if (actor.ppo_mini_batch_size * rollout.n) % world:
            raise ValueError(
                f"actor_rollout_ref.actor.ppo_mini_batch_size×rollout.n={actor.ppo_mini_batch_size * rollout.n} "
                f"responses must split evenly over {world} workers (trainer.nnodes×trainer.n_gpus_per_node)"
            )
        critic_mini = (self.critic.ppo_mini_batch_size or actor.ppo_mini_batch_size) * rollout.n
        if self.algorithm.adv_estimator == "gae" and (
            (data.train_batch_size * rollout.n) % critic_mini or critic_mini % world
        ):
            raise ValueError(
                f"critic.ppo_mini_batch_size={critic_mini // rollout.n} must divide data.train_batch_size and, "
                f"times rollout.n, split evenly over {world} workers"
            )
        old_log_prob = self.algorithm.old_log_prob_choice()
        if old_log_prob == "from_rollout" and (rollout.top_k > 0 or rollout.top_p < 1):
            raise ValueError(
                "algorithm.old_log_prob=from_rollout (verl: algorithm.rollout_correction.bypass_mode=true) takes "
                f"the rollout's log-probs as the old ones, but actor_rollout_ref.rollout.top_k={rollout.top_k} / "
                f"top_p={rollout.top_p} filter the distribution they come from, which the actor does not: turn the "
                "filters off or choose another algorithm.old_log_prob"
            )
        off_policy = self.off_policy_reasons(data.train_batch_size * rollout.n, step=1)
        if old_log_prob == "from_update" and off_policy:
            raise ValueError(
                "algorithm.old_log_prob=from_update takes the old log-probs from the update's first forward pass, "
                f"which needs an on-policy update, but {'; '.join(off_policy)}: use algorithm.old_log_prob=auto "
                "(from_update in the steps that allow it, else recompute) or recompute"
            )
        if self.algorithm.adv_estimator in ("grpo", "grpo_turn", "rloo") and rollout.n < 2:
            raise ValueError(
                f"algorithm.adv_estimator={self.algorithm.adv_estimator} compares responses to the same "
                "prompt: set actor_rollout_ref.rollout.n >= 2"
            )

    def off_policy_reasons(self, rows: int, step: int) -> list[str]:
        """Why the actor's update at ``step`` over ``rows`` responses is not on-policy, none when it is.
        On-policy: one epoch over one mini-batch, so the old log-probs are the policy's own before its
        step, and nothing needs them before the update (a KL penalty in the reward) or keeps the actor
        from updating (the critic's warm-up)."""
        actor, n = self.actor_rollout_ref.actor, self.actor_rollout_ref.rollout.n
        reasons = []
        if actor.ppo_epochs != 1:
            reasons.append(f"actor_rollout_ref.actor.ppo_epochs={actor.ppo_epochs} makes several epochs")
        if rows > actor.ppo_mini_batch_size * n:
            reasons.append(
                f"{rows} responses make several mini-batches of actor_rollout_ref.actor.ppo_mini_batch_size="
                f"{actor.ppo_mini_batch_size} (×rollout.n={n})"
            )
        if self.algorithm.use_kl_in_reward:
            reasons.append("algorithm.use_kl_in_reward=true needs them before the update")
        if step <= self.trainer.critic_warmup:
            reasons.append(
                f"step {step} is within trainer.critic_warmup={self.trainer.critic_warmup}, with no actor update"
            )
        return reasons


def register_schema() -> None:
    """Makes the dataclasses available to Hydra as ``ppo_trainer_schema``."""
    ConfigStore.instance().store(name="ppo_trainer_schema", node=PPOConfig)
