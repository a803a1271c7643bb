"""The workers' sections: the policy model and its actor, reference and rollout (``actor_rollout_ref``),
and the value model (``critic``)."""

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from verl.algos.core_algos import KL_PENALTY_TYPES, LOSS_AGG_MODES, get_policy_loss_fn
from verl.utils.config import ConfigSection, option
from verl.utils.fsdp_utils import DTYPES

DTYPE_NAMES = tuple(DTYPES)


ATTENTION = ("sdpa", "eager", "flash_attention_2")


def check_attention(choice: str | None, key: str) -> None:
    if choice == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(f"{key}=flash_attention_2 needs flash-attn, which is not installed: pip install -e '.[gpu]'")


def resolve_attention(choice: str | None, device: str) -> str:
    """The kernel a model is built with: the one asked for, else flash attention where it can run."""
    if choice is not None:
        return choice
    return "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def require_packed_sequences(key: str) -> None:
    """Packed rows need a transformers that confines attention to each sequence by its position ids
    (5.x does); older releases would let sequences attend to each other without an error."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ValueError(f"{key}=true needs transformers 5 or newer (found {transformers.__version__})")


@dataclass
class ModelConfig(ConfigSection):
    path: str = option(
        "~/models/Qwen2.5-0.5B", "Model folder or Hugging Face hub id (from_pretrained).", key="MODEL_PATH"
    )
    trust_remote_code: bool = option(False, "Let transformers run the model's own code.")
    enable_gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    attn_implementation: str | None = option(
        None,
        "Attention kernel of the trained models (transformers' attn_implementation). null: flash_attention_2 "
        "on GPU where flash-attn is installed (use_remove_padding then runs varlen attention), else sdpa.",
        choices=ATTENTION,
        nullable=True,
    )

    def check(self, key: str) -> None:
        check_attention(self.attn_implementation, f"{key}.attn_implementation")


@dataclass
class PolicyModelConfig(ModelConfig):
    use_remove_padding: bool = option(
        False,
        "Padding-free compute: each micro-batch's real tokens run as one packed row, positions restarting at "
        "each sequence, which transformers reads as separate sequences (with sdpa: a block-diagonal mask). "
        "Results come back in the padded layout.",
    )

    lora_rank: int = option(
        0,
        "LoRA rank through peft; 0 trains every weight. With LoRA only the adapters train, the reference is "
        "the base model with the adapters switched off (no second copy), the rollout gets the merged weights "
        "and checkpoints hold the adapters (``lora_adapter/``) beside the merged model.",
        min=0,
    )
    lora_alpha: int = option(16, "LoRA scale numerator: adapters add lora_alpha / lora_rank * B @ A.", min=1)
    target_modules: Any = option(
        "all-linear",
        "Modules that get adapters: all-linear (every linear layer but the output head), or a list of module "
        "names such as [q_proj,v_proj].",
    )
    exclude_modules: Any = option(None, "Module names kept without adapters (a list), or null.", nullable=True)

    def check(self, key: str) -> None:
        super().check(key)
        if self.use_remove_padding:
            require_packed_sequences(f"{key}.use_remove_padding")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if name == "exclude_modules" and value is None:
                continue
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                raise ValueError(f"{key}.{name} must be a module name or a list of them, got {value!r}")


@dataclass
class OptimConfig(ConfigSection):
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
class MixedPrecisionConfig(ConfigSection):
    param_dtype: str = option(
        "bf16", "GPU compute dtype; parameters stay fp32. CPU runs compute in fp32.", choices=DTYPE_NAMES
    )
    reduce_dtype: str = option("fp32", "GPU gradient-reduction dtype.", choices=DTYPE_NAMES)


@dataclass
class FSDPConfig(ConfigSection):
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
class PolicyLossConfig(ConfigSection):
    loss_mode: str = option(
        "vanilla",
        "The policy loss: vanilla (the PPO clipped surrogate with clip_ratio_low/high and the dual clip "
        "clip_ratio_c), module:function (imported by every worker), or a name registered with "
        "core_algos.register_policy_loss in a module the workers import.",
    )

    def check(self, key: str) -> None:
        """The loss must resolve here as it will in the workers: refused now, not after a rollout."""
        try:
            loss = get_policy_loss_fn(self.loss_mode)
        except ValueError as e:
            raise ValueError(f"{key}.loss_mode: {e}") from None
        if loss.__module__ == "__main__":
            raise ValueError(
                f"{key}.loss_mode={self.loss_mode!r} is registered in the launching script, which the workers "
                "do not import: put the loss in a module and name it module:function"
            )


@dataclass
class ActorConfig(ConfigSection):
    ppo_mini_batch_size: int = option(256, "Prompts per optimizer step (times rollout.n responses).", min=1)
    ppo_mini_batch_responses: int | None = option(
        None,
        "Responses per optimizer step, counted directly (ZeroSearch's and Search-R1's ppo_mini_batch_size "
        "beside n_agent): the step's last mini-batch takes what is left, so it may be smaller. Replaces "
        "ppo_mini_batch_size when set; null: ppo_mini_batch_size×rollout.n.",
        min=1,
        nullable=True,
    )
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
class RefConfig(ConfigSection):
    log_prob_micro_batch_size_per_gpu: int = option(8, "Responses per reference forward pass on one worker.", min=1)
    log_prob_use_dynamic_bsz: bool | None = option(
        None, "Reference passes in micro-batches by token count; null: as actor.use_dynamic_bsz.", nullable=True
    )
    log_prob_max_token_len_per_gpu: int | None = option(
        None, "Tokens per reference micro-batch; null: actor.ppo_max_token_len_per_gpu.", min=1, nullable=True
    )
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class ValKwargs(ConfigSection):
    do_sample: bool = option(False, "Sample in validation; false: greedy.")
    temperature: float = option(0.0, "Validation sampling temperature (with do_sample).", min=0)
    top_p: float = option(1.0, "Validation nucleus sampling (with do_sample).", min=0)
    top_k: int = option(-1, "Validation top-k (with do_sample); -1: off.")
    n: int = option(1, "Responses per validation prompt.", min=1)


@dataclass
class AgentLoopConfig(ConfigSection):
    env: str | None = option(
        None,
        "module:Class of the tool environment (a verl.workers.rollout.agent_loop.AgentEnv) whose multi-turn loop "
        "the rollout runs; null: a single generation per prompt. The search agent's is zerosearch.env:SearchEnv.",
        nullable=True,
    )
    max_turns: int = option(
        5,
        "Environment steps (searches) per trajectory before a last turn that nothing follows.",
        min=0,
        key="MAX_TURNS",
    )
    max_obs_length: int = option(512, "Tokens of one observation; a longer one is cut, keeping its closing tag.", min=1)
    action_format: str = option(
        "tags",
        "How the policy writes actions, for an environment that reads both: tags (the search agent's "
        "<search>query</search>, documents in <information>) or tool_call (the chat template's tool calls, "
        '<tool_call>{"name": "search", "arguments": {"query_list": [...]}}</tool_call> in Qwen\'s, answered '
        "in its tool-response turn; the environment's tools are declared in every prompt).",
        choices=("tags", "tool_call"),
    )
    scheduling: str = option(
        "batch",
        "How a multi-turn agent's trajectories move: batch (lockstep turns: every trajectory generates, then every "
        "environment steps together) or async (each trajectory on its own: its next turn is generated as soon as "
        "its own observation is back, so a slow search holds only its own trajectory).",
        choices=("batch", "async"),
        key="AGENT_SCHEDULING",
    )
    max_concurrent_searches: int = option(
        64, "async: environment steps (a search agent's searches) in flight at once.", min=1
    )
    gather_window_s: float = option(
        0.05,
        "async: how long a free engine waits for trajectories still in an environment step to queue their next "
        "turns before it generates for those queued; it stops waiting once none is stepping. Steps that end "
        "together are then generated together rather than one call each.",
        min=0,
    )


@dataclass
class RolloutConfig(ConfigSection):
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
        1,
        "vllm: GPUs one engine spans (consecutive ranks of a node form its group; each runs its shard, the "
        "group's prompts gathered to all of them, and each keeps its own rows' responses). 1: an engine per rank.",
        min=1,
    )
    enforce_eager: bool | None = option(
        None,
        "vllm: no CUDA graphs (eager mode). null: CUDA graphs on GPU (they survive the sleep cycle), eager on CPU.",
        nullable=True,
    )
    free_cache_engine: bool = option(
        True,
        "vllm on GPU: sleep from the end of each rollout (and from start-up) until the next weight sync, "
        "KV cache and weights dropped; the sync wakes the weights, loads them, then rebuilds the KV cache. "
        "vLLM has no sleep mode on CPU: there it is a no-op, said once.",
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
    generation_manager: str | None = option(
        None,
        "module:Class building the rollout loop the trainer calls (a GenerationManager); null: one generation "
        "per prompt, or with agent.env the engine's agent loop over that environment.",
        nullable=True,
    )
    agent: AgentLoopConfig = field(default_factory=AgentLoopConfig)

    def manager(self) -> str:
        """The generation manager the trainer builds."""
        if self.generation_manager:
            return self.generation_manager
        if self.agent.env:
            return "verl.workers.rollout.agent_manager:AgentGenerationManager"
        return "verl.trainer.generation:SingleTurnGenerationManager"

    def check(self, key: str) -> None:
        if self.tensor_model_parallel_size != 1 and self.name != "vllm":
            raise ValueError(
                f"{key}.tensor_model_parallel_size={self.tensor_model_parallel_size}: an engine spanning several "
                f"GPUs is vLLM's; {key}.name={self.name!r} runs one per rank (set 1)"
            )


@dataclass
class ActorRolloutRefConfig(ConfigSection):
    model: PolicyModelConfig = field(default_factory=PolicyModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class CriticModelConfig(ConfigSection):
    path: str | None = option(None, "Value model folder or hub id; null: the actor's model path.", nullable=True)
    trust_remote_code: bool = option(False, "Let transformers run the model's own code.")
    enable_gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    use_remove_padding: bool = option(False, "As actor_rollout_ref.model.use_remove_padding, for the value model.")
    attn_implementation: str | None = option(
        None, "As actor_rollout_ref.model.attn_implementation, for the value model.", choices=ATTENTION, nullable=True
    )

    def check(self, key: str) -> None:
        check_attention(self.attn_implementation, f"{key}.attn_implementation")
        if self.use_remove_padding:
            require_packed_sequences(f"{key}.use_remove_padding")


@dataclass
class CriticConfig(ConfigSection):
    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    ppo_mini_batch_size: int | None = option(
        None, "Prompts per critic optimizer step; null: the actor's.", min=1, nullable=True
    )
    ppo_mini_batch_responses: int | None = option(
        None, "As actor.ppo_mini_batch_responses, for the critic; replaces ppo_mini_batch_size.", min=1, nullable=True
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
