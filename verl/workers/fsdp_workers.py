"""Ray workers of the trainer: policy/rollout/reference in one process, and the value critic.

Models are sharded with FSDP2 (one ``fully_shard`` per transformer block); gloo on CPU, NCCL on GPU.
"""

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from verl.config import PPOConfig, RefConfig, RolloutConfig, ValKwargs
from verl.config.workers import resolve_attention
from verl.protocol import DataProto, RolloutSettings
from verl.single_controller import Dispatch, Worker, register
from verl.utils.batch_schema import Key
from verl.utils.checkpoint import load_checkpoint, save_checkpoint
from verl.utils.fsdp_utils import (
    DTYPES,
    build_optimizer,
    full_weights,
    move_optimizer_state,
    moves_optimizer,
    shard_model,
)
from verl.utils.lora import adapters_off, add_adapters, has_adapters, lora_scalings, merged_weights
from verl.utils.memory_plan import check_fits, describe, rollout_holdings
from verl.workers.actor import DataParallelPPOActor
from verl.workers.critic import DataParallelPPOCritic
from verl.workers.rollout.base import BaseRollout, SamplingParams, generate_batch
from verl.workers.rollout.hf_rollout import HFRollout, rollout_copy
from verl.workers.rollout.tensor_parallel import EngineGroup
from verl.workers.rollout.vllm_rollout import VLLMRollout

ROLES = ("actor_rollout", "actor_rollout_ref", "ref")


def load_causal_lm(
    path: str,
    trust_remote_code: bool,
    enable_gradient_checkpointing: bool = False,
    weights: bool = True,
    attn_implementation: str | None = None,
    device: str = "cpu",
):
    """The policy in fp32; with ``weights=False`` its skeleton on the meta device, for a rank that
    receives its shard from rank 0 (``shard_model``). ``attn_implementation`` null: the kernel
    ``resolve_attention`` picks for ``device``."""
    config = AutoConfig.from_pretrained(os.path.expanduser(path), trust_remote_code=trust_remote_code)
    attention = resolve_attention(attn_implementation, device)
    return _load(
        AutoModelForCausalLM, path, config, trust_remote_code, enable_gradient_checkpointing, weights, attention
    )


def load_value_model(
    path: str,
    trust_remote_code: bool,
    enable_gradient_checkpointing: bool = False,
    weights: bool = True,
    attn_implementation: str | None = None,
    device: str = "cpu",
):
    """The backbone with a one-output token-classification head predicting a value per position;
    the rest as ``load_causal_lm``."""
    config = AutoConfig.from_pretrained(os.path.expanduser(path), num_labels=1, trust_remote_code=trust_remote_code)
    config.classifier_dropout = 0.0  # training and scoring passes must see the same values
    attention = resolve_attention(attn_implementation, device)
    model_class = AutoModelForTokenClassification
    return _load(model_class, path, config, trust_remote_code, enable_gradient_checkpointing, weights, attention)


def _load(
    auto_class: Any,
    path: str,
    config: Any,
    trust_remote_code: bool,
    gradient_checkpointing: bool,
    weights: bool,
    attention: str,
):
    if weights:
        model = auto_class.from_pretrained(
            os.path.expanduser(path),
            config=config,
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
            attn_implementation=attention,
        )
    else:
        with torch.device("meta"):
            model = auto_class.from_config(
                config, dtype=torch.float32, trust_remote_code=trust_remote_code, attn_implementation=attention
            )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def average_metrics(metrics: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each metric over its steps and over all data-parallel ranks."""
    keys = sorted(metrics)
    local = torch.tensor([float(np.mean(metrics[k])) for k in keys], dtype=torch.float64)
    dist.all_reduce(local)
    return dict(zip(keys, (local / dist.get_world_size()).tolist(), strict=True))


class ActorRolloutRefWorker(Worker):
    """``role`` is ``actor_rollout`` (policy + rollout), ``actor_rollout_ref`` (plus a frozen
    reference policy in the same process) or ``ref`` (the reference policy alone)."""

    def __init__(self, config: PPOConfig, role: str):
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.config = config
        self.role = role
        self.has_actor = role != "ref"
        self.has_ref = role in ("actor_rollout_ref", "ref")
        self.engine_group: EngineGroup | None = None  # with an engine spanning several ranks

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config.actor_rollout_ref
        if self.has_actor and self.device == "cuda" and cfg.rollout.name == "vllm":
            self._check_memory_plan()
        torch.manual_seed(self.config.trainer.seed + self.rank)
        self.tokenizer = AutoTokenizer.from_pretrained(
            os.path.expanduser(cfg.model.path), trust_remote_code=cfg.model.trust_remote_code
        )
        if self.has_actor:
            model = load_causal_lm(
                cfg.model.path,
                cfg.model.trust_remote_code,
                cfg.model.enable_gradient_checkpointing,
                weights=self.rank == 0,
                attn_implementation=cfg.model.attn_implementation,
                device=self.device,
            )
            if cfg.model.lora_rank:
                model = add_adapters(model, cfg.model)
            model = shard_model(model, cfg.actor.fsdp_config, self.device, self.world_size)
            optimizer, scheduler = build_optimizer(model, cfg.actor.optim)
            self.actor = DataParallelPPOActor(
                cfg.actor, model, optimizer, scheduler, self.device, cfg.model.use_remove_padding
            )
            self.rollout = self._build_rollout()
            self.rollout.sleep()  # its KV cache is not needed until the first sync, while other models load
            self._place_optimizer("cpu")
        if self.has_ref and self.has_actor and cfg.model.lora_rank:
            # The reference is the base model: the actor's own weights with its adapters switched off.
            self.ref = DataParallelPPOActor(
                cfg.ref, self.actor.model, device=self.device, remove_padding=cfg.model.use_remove_padding
            )
        elif self.has_ref:
            ref = load_causal_lm(
                cfg.model.path,
                cfg.model.trust_remote_code,
                weights=self.rank == 0,
                attn_implementation=cfg.model.attn_implementation,
                device=self.device,
            )
            if self.device == "cuda":  # never trained: its parameters in the compute dtype, half of fp32's memory
                for param in ref.parameters():  # buffers (RoPE's inv_freq) keep fp32, as the actor's do
                    param.data = param.data.to(DTYPES[cfg.ref.fsdp_config.mixed_precision.param_dtype])
            ref = shard_model(ref.requires_grad_(False), cfg.ref.fsdp_config, self.device, self.world_size)
            self.ref = DataParallelPPOActor(
                cfg.ref, ref, device=self.device, remove_padding=cfg.model.use_remove_padding
            )

    def _check_memory_plan(self) -> None:
        """Every rank refuses, before loading a weight, a run whose models and engine cannot share a
        GPU at the rollout (parameter counts from the models' skeletons); rank 0 prints the plan."""
        cfg = self.config
        policy = load_causal_lm(
            cfg.actor_rollout_ref.model.path, cfg.actor_rollout_ref.model.trust_remote_code, weights=False
        )
        if cfg.actor_rollout_ref.model.lora_rank:
            policy = add_adapters(policy, cfg.actor_rollout_ref.model)
        value_params = 0
        if cfg.algorithm.adv_estimator == "gae":
            value = load_value_model(cfg.critic_model_path(), cfg.critic.model.trust_remote_code, weights=False)
            value_params = sum(p.numel() for p in value.parameters())
        device_bytes = torch.cuda.get_device_properties(0).total_memory
        held = rollout_holdings(
            cfg,
            policy_params=sum(p.numel() for p in policy.parameters()),
            trainable_params=sum(p.numel() for p in policy.parameters() if p.requires_grad),
            value_params=value_params,
            world_size=self.world_size,
            device_bytes=device_bytes,
        )
        if self.rank == 0:
            print(describe(held, device_bytes), flush=True)
        check_fits(held, device_bytes)

    def _build_rollout(self) -> BaseRollout:
        """The engine named by rollout.name, computing in the actor's dtype unless rollout.dtype says
        otherwise; its weights come from the actor by ``sync_rollout_weights``."""
        cfg = self.config.actor_rollout_ref
        compute_dtype = cfg.actor.fsdp_config.mixed_precision.param_dtype if self.device == "cuda" else "fp32"
        dtype = cfg.rollout.dtype or str(DTYPES[compute_dtype]).removeprefix("torch.")
        if cfg.rollout.name == "vllm":
            tp = cfg.rollout.tensor_model_parallel_size
            self.engine_group = EngineGroup(self.rank, self.world_size, tp) if tp > 1 else None
            return VLLMRollout(
                os.path.expanduser(cfg.model.path),
                cfg.rollout,
                max_model_len=cfg.rollout.max_model_len or self.config.max_sequence_length(),
                dtype=dtype,
                device=self.device,
                seed=self.config.trainer.seed + self.rank // tp,  # one seed per engine: its shards sample alike
                trust_remote_code=cfg.model.trust_remote_code,
                pad_id=self.tokenizer.pad_token_id,
                in_process_group=True,
            )
        model = load_causal_lm(cfg.model.path, cfg.model.trust_remote_code)
        return HFRollout(rollout_copy(model, self.device, getattr(torch, dtype)), self.tokenizer)

    def _release_cached_memory(self) -> None:
        """Hands the blocks PyTorch's allocator keeps cached back to the device, for the engine or the
        next pass (a gathered weight or an update's activations would otherwise stay reserved)."""
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _place_optimizer(self, device: str) -> None:
        """With optimizer_offload on GPU runs the optimizer state waits on CPU between updates."""
        if self.actor.optimizer is not None and moves_optimizer(
            self.config.actor_rollout_ref.actor.fsdp_config, self.device
        ):
            move_optimizer_state(self.actor.optimizer, device)

    @register(Dispatch.ONE_TO_ALL)
    def sync_rollout_weights(self) -> None:
        """Copies the actor's current weights into the rollout engine, one gathered tensor at a time
        (collective: every rank gathers every tensor in the same order)."""
        weights = full_weights(self.actor.model)
        if has_adapters(self.actor.model):
            weights = merged_weights(weights, lora_scalings(self.actor.model))
        self.rollout.update_weights(weights)  # wakes a sleeping engine in stages around the load
        self._release_cached_memory()

    def _sampling_params(self, settings: RolloutSettings) -> SamplingParams:
        """The config's training or validation sampling, with the limits a rollout loop set for this
        call (e.g. tokens per turn, stop strings, n=1)."""
        cfg = self.config.actor_rollout_ref.rollout
        sampling: RolloutConfig | ValKwargs = cfg.val_kwargs if settings.validate else cfg
        return SamplingParams(
            max_new_tokens=settings.max_new_tokens or self.config.data.max_response_length,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            n=settings.n or sampling.n,
            stop=list(cfg.stop if settings.stop is None else settings.stop),
            greedy=not sampling.do_sample,
        )

    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        if self.rollout.needs_weights():
            # Asleep without its weights since the last rollout, with no update since (validation, a
            # critic warm-up step): the same weights again. Every rank is here, so the sync's
            # collectives line up.
            self.sync_rollout_weights()
        self.rollout.wake_up()
        params = self._sampling_params(RolloutSettings.of(prompts))
        if self.engine_group is None:
            return generate_batch(self.rollout, prompts, params)
        return self.engine_group.generate(self.rollout, prompts, params)

    @register(Dispatch.ONE_TO_ALL)
    def release_rollout(self) -> None:
        """The rollout is over for this step: the engine's memory goes back to the other passes."""
        self.rollout.sleep()

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        cfg = self.config.actor_rollout_ref
        log_probs, entropys = self.actor.compute_log_prob(
            data,
            cfg.rollout.log_prob_micro_batch_size_per_gpu,
            cfg.rollout.temperature,
            with_entropy=True,
            max_token_len=self._log_prob_token_budget(cfg.rollout),
        )
        assert entropys is not None  # asked for with_entropy
        return DataProto.from_dict(tensors={Key.OLD_LOG_PROBS: log_probs, Key.ENTROPYS: entropys})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        cfg = self.config.actor_rollout_ref
        with adapters_off(self.ref.model):
            log_probs, _ = self.ref.compute_log_prob(
                data,
                cfg.ref.log_prob_micro_batch_size_per_gpu,
                cfg.rollout.temperature,
                max_token_len=self._log_prob_token_budget(cfg.ref),
            )
        return DataProto.from_dict(tensors={Key.REF_LOG_PROB: log_probs})

    def _log_prob_token_budget(self, cfg: RolloutConfig | RefConfig) -> int | None:
        """Tokens per log-prob micro-batch when they are packed by token count, else None."""
        actor = self.config.actor_rollout_ref.actor
        dynamic = actor.use_dynamic_bsz if cfg.log_prob_use_dynamic_bsz is None else cfg.log_prob_use_dynamic_bsz
        return (cfg.log_prob_max_token_len_per_gpu or actor.ppo_max_token_len_per_gpu) if dynamic else None

    @register(Dispatch.DP_COMPUTE_PROTO)
    def update_actor(self, data: DataProto) -> DataProto:
        """The PPO update; with ``data.meta_info["report_first_pass"]`` it also returns the log-probs
        and entropies of its first forward pass (the old log-probs of an on-policy update, which
        leaves old_log_probs out of ``data``)."""
        cfg = self.config.actor_rollout_ref
        mini_batch_size = self.config.mini_batch_responses()[0] // self.world_size
        report_first_pass = bool(data.meta_info.get("report_first_pass"))
        self._place_optimizer("cuda")
        metrics, computed = self.actor.update_policy(
            data, mini_batch_size, cfg.rollout.temperature, report_first_pass=report_first_pass
        )
        self._place_optimizer("cpu")
        self._release_cached_memory()
        out = computed if computed is not None else DataProto()
        out.meta_info["metrics"] = average_metrics(metrics)
        return out

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str, save_hf: bool = True) -> None:
        save_checkpoint(
            path,
            self.actor.model,
            self.actor.optimizer,
            self.actor.lr_scheduler,
            tokenizer=self.tokenizer,
            save_hf=save_hf,
        )

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        load_checkpoint(path, self.actor.model, self.actor.optimizer, self.actor.lr_scheduler)
        self._place_optimizer("cpu")
        self.sync_rollout_weights()


class CriticWorker(Worker):
    """A value head on the language-model backbone (``AutoModelForTokenClassification``, 1 label)."""

    def __init__(self, config: PPOConfig):
        super().__init__()
        self.config = config

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config.critic
        torch.manual_seed(self.config.trainer.seed + self.rank)
        path = self.config.critic_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
        model = load_value_model(
            path,
            cfg.model.trust_remote_code,
            cfg.model.enable_gradient_checkpointing,
            weights=self.rank == 0,
            attn_implementation=cfg.model.attn_implementation,
            device=self.device,
        )
        model = shard_model(model, cfg.fsdp_config, self.device, self.world_size)
        optimizer, scheduler = build_optimizer(model, cfg.optim)
        self.critic = DataParallelPPOCritic(cfg, model, optimizer, scheduler, self.device, cfg.model.use_remove_padding)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        return DataProto.from_dict(tensors={Key.VALUES: self.critic.compute_values(data)})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def update_critic(self, data: DataProto) -> DataProto:
        cfg = self.config
        mini_batch_size = cfg.mini_batch_responses(critic=True)[0] // self.world_size
        if moves_optimizer(cfg.critic.fsdp_config, self.device):
            move_optimizer_state(self.critic.optimizer, "cuda")
        metrics = self.critic.update_critic(data, mini_batch_size)
        if moves_optimizer(cfg.critic.fsdp_config, self.device):
            move_optimizer_state(self.critic.optimizer, "cpu")
        return DataProto(meta_info={"metrics": average_metrics(metrics)})

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str, save_hf: bool = False) -> None:
        save_checkpoint(
            path,
            self.critic.model,
            self.critic.optimizer,
            self.critic.lr_scheduler,
            tokenizer=self.tokenizer,
            save_hf=save_hf,
        )

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        load_checkpoint(path, self.critic.model, self.critic.optimizer, self.critic.lr_scheduler)
        if moves_optimizer(self.config.critic.fsdp_config, self.device):
            move_optimizer_state(self.critic.optimizer, "cpu")
